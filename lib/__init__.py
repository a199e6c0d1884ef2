"""Shared training code: config schema, trainer, optimizers, pruning, checkpoints, metrics."""
