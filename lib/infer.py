"""Use a trained or interrupted run: its eval metric, its sparsity, its forward speed on this
machine (the loaded model, and a dense copy or the block-sparse kernel path where they
differ from it), and for a language model text generated from a prompt.

  python lenet5/infer.py --run lenet5_adamw_magnitude_s0.5     (a run id or a unique prefix)
  python gpt2/infer.py --run gpt2_ --prompt "def main(" --tokens 64
  python gpt2/infer.py --run gpt2_ --prompt "import " --temperature 0.8 --top-k 50 --seed 3
  python -m lib.infer --run <id>     (any model: the run's config names it; `make infer`)

The eval is the trainer's final eval (lib/tasks.py over lib/data.py's eval loader, the run's
precision): on the run's device and precision it gives the summary's metric. See
docs/inference.md.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import time

import torch
from torch import nn

import kernels
from lib import checkpoint, data
from lib.runconfig import ConfigError
from lib.runload import InferSpec, LoadedRun, find_run, infer_spec, load_run, read_config


def autocast(cfg, device: torch.device):
    """The trainer's amp_context: autocast in the run's precision."""
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# -----------------------------------------------------------------------------
# evaluation: the trainer's final eval, on one process

@torch.no_grad()
def evaluate(model: nn.Module, task, eval_ds, cfg, device) -> tuple[dict, dict]:
    """(metrics, sums) of `task` over the eval split, as lib/trainer.py's evaluate()."""
    model.eval()
    sums: dict = {}
    with autocast(cfg, device):
        for batch in data.eval_loader(eval_ds, cfg, 0, 1):
            batch = [t.to(device, non_blocking=True) for t in batch]
            for k, v in task.eval_sums(model, batch).items():
                sums[k] = sums.get(k, 0.0) + v
    return task.finish(sums), sums


# -----------------------------------------------------------------------------
# forward speed

def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def forward_rate(model: nn.Module, x: torch.Tensor, units: int, cfg, device,
                 seconds: float = 1.0) -> float:
    """Measured units (samples or tokens) per second of model(x) in eval mode: two warm-up
    calls, then calls until `seconds` have passed (at least three)."""
    model.eval()
    with autocast(cfg, device):
        for _ in range(2):
            model(x)
        _sync(device)
        n, t0 = 0, time.perf_counter()
        while n < 3 or time.perf_counter() - t0 < seconds:
            model(x)
            n += 1
            _sync(device)
        dt = time.perf_counter() - t0
    return units * n / dt


def dense_copy(model: nn.Module) -> nn.Module:
    """A copy of model whose kernels.Linear layers are plain nn.Linear again (torch's dense
    matmul; the zeros of pruned weights are multiplied like any other number)."""
    m = copy.deepcopy(model)
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, kernels.Linear):
                lin = nn.Linear.__new__(nn.Linear)
                nn.Module.__init__(lin)
                lin.in_features, lin.out_features = child.in_features, child.out_features
                lin.weight, lin.bias = child.weight, child.bias
                lin.train(child.training)
                setattr(parent, name, lin)
    return m


@contextlib.contextmanager
def kernel_backend(name: str):
    old = kernels.get_backend()
    kernels.set_backend(name)
    try:
        yield
    finally:
        kernels.set_backend(old)


def sparse_backend(device) -> str | None:
    """The kernels/ backend whose block-sparse linear skips zero blocks on this device."""
    if device.type == "cpu":
        return "cpu"
    try:
        with kernel_backend("triton"):
            return "triton"
    except (RuntimeError, ImportError, ValueError):
        return None


def uses_sparse_kernel(model: nn.Module) -> bool:
    return kernels.get_backend() != "torch" and any(
        isinstance(m, kernels.Linear) and m.block_active for m in model.modules())


def speed(run: LoadedRun, task, batch, seconds: float) -> list[str]:
    """Lines reporting the loaded model's forward rate and, where they differ from it, a
    dense copy's and the block-sparse kernel path's, with an honest verdict."""
    cfg, dev, model = run.cfg, run.device, run.model
    x = batch[0].to(dev)
    units, unit = task.units(batch), task.unit
    b = cfg.pruning_block_size
    rows = []
    sparse_loaded = uses_sparse_kernel(model)
    plain = not cfg.kernel_linear and cfg.kernel_backend == "torch"
    if sparse_loaded:
        what = f"block-sparse kernels.Linear, {kernels.get_backend()} backend, {b}x{b} blocks"
    elif not plain:
        what = f"kernels/ {kernels.get_backend()} backend, dense matmuls"
    else:
        what = "torch, dense matmuls"
    loaded = forward_rate(model, x, units, cfg, dev, seconds)
    rows.append((f"loaded model ({what})", loaded))
    dense = loaded
    if not plain:
        with kernel_backend("torch"):
            dense = forward_rate(dense_copy(model), x, units, cfg, dev, seconds)
        rows.append(("dense copy (torch, dense matmuls)", dense))
    sparse, backend = None, sparse_backend(dev)
    if b > 0 and not sparse_loaded and backend:
        trial = kernels.swap_linear(dense_copy(model), sparse_block_size=b)
        with kernel_backend(backend):
            kernels.sync_block_layouts(trial)
            sparse = forward_rate(trial, x, units, cfg, dev, seconds)
        rows.append((f"block-sparse path ({backend} backend, {b}x{b} blocks; not used by the run)",
                     sparse))
    width = max(len(r[0]) for r in rows)
    lines = [f"speed on {dev.type} (eval, no_grad, {cfg.precision}, batch of "
             f"{x.shape[0]}{'' if units == x.shape[0] else f' = {units} {unit}'}):"]
    lines += [f"  {name:<{width}}  {rate:>12,.0f} {unit}/s" for name, rate in rows]
    if sparse_loaded:
        ratio = loaded / dense
        lines.append(f"  the run's block-sparse path ran: {ratio:.2f}x the dense copy "
                     f"({'faster' if ratio > 1 else 'not faster'})")
    elif sparse is not None:
        ratio = sparse / dense
        lines.append(f"  no sparse kernel in the loaded model (the run trained without "
                     f"kernel_linear); the block-sparse path would run {ratio:.2f}x "
                     f"({'faster' if ratio > 1 else 'not faster'})")
    elif cfg.pruning_method == "none":
        lines.append("  a dense run (pruning_method none): no sparse path to compare")
    else:
        why = ("no block-sparse kernel on this device" if b > 0 else
               "unstructured pruning (pruning_block_size=0): no kernel here skips single zeros")
        lines.append(f"  no sparse kernel used: the pruned weights are dense tensors with "
                     f"zeros, so the forward costs what a dense model's does ({why})")
    return lines


# -----------------------------------------------------------------------------
# text generation (language models: model(idx) -> logits [B, T, V])

@torch.no_grad()
def generate(model: nn.Module, idx: torch.Tensor, n: int, block_size: int, vocab: int,
             temperature: float = 0.0, top_k: int = 0, generator=None) -> torch.Tensor:
    """idx [B, T] extended by n tokens: greedy when temperature <= 0, else sampled from the
    softmax of logits / temperature over the top_k most likely (all when 0). Tokens the
    tokenizer lacks (the padding of the vocabulary) are never picked."""
    model.eval()
    for _ in range(n):
        logits = model(idx[:, -block_size:])[:, -1, :].float()
        logits[:, vocab:] = float("-inf")
        if temperature <= 0:
            nxt = logits.argmax(-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, vocab), dim=-1).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx


def complete(run: LoadedRun, tokenizer, prompt: str, n: int, temperature: float, top_k: int,
             seed: int) -> tuple[str, list]:
    """(generated text after the prompt, generated token ids)."""
    ids = [int(t) for t in tokenizer.encode(prompt.encode())]
    if not ids:
        eot = getattr(tokenizer, "eot", None)
        if eot is None:
            raise ConfigError("--prompt is empty and the byte tokenizer has no end-of-text "
                              "token to start from; give a prompt, e.g. --prompt 'def '")
        ids = [eot]
    g = torch.Generator(device=run.device).manual_seed(seed)
    idx = torch.tensor([ids], dtype=torch.long, device=run.device)
    with autocast(run.cfg, run.device):
        out = generate(run.model, idx, n, run.cfg.block_size, tokenizer.vocab_size, temperature,
                       top_k, g)
    new = out[0, len(ids):].tolist()
    return tokenizer.decode(new), new


# -----------------------------------------------------------------------------
# the command

def parser(infer: InferSpec | None) -> argparse.ArgumentParser:
    name = infer.spec.name if infer else "<model>"
    p = argparse.ArgumentParser(prog=f"python {name}/infer.py" if infer else "python -m lib.infer",
                                description="evaluate a finished or interrupted run, report its "
                                "sparsity and forward speed; language models generate text",
                                allow_abbrev=False)
    p.add_argument("--run", required=True, help="run id, a unique prefix of one, or a run folder")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="auto: the run's device where this machine has it, else cpu")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation")
    p.add_argument("--speed-seconds", type=float, default=1.0, metavar="S",
                   help="time each forward variant this long (0: skip the speed test)")
    g = p.add_argument_group("language models (gpt2)")
    g.add_argument("--prompt", default=None, help="generate text after this prompt "
                   "(default for a language model: 'def ')")
    g.add_argument("--tokens", type=int, default=64, metavar="N", help="tokens to generate")
    g.add_argument("--temperature", type=float, default=0.0,
                   help="0: greedy (the default); > 0: sample")
    g.add_argument("--top-k", type=int, default=0, metavar="K",
                   help="sample from the K most likely tokens (0: all)")
    g.add_argument("--seed", type=int, default=1, help="the sampling generator's seed")
    return p


def report(run: LoadedRun, infer: InferSpec, args) -> None:
    cfg, task, summary = run.cfg, infer.spec.task, run.summary
    status = run.status.get("status", "unknown")
    step, total = run.status.get("step"), run.status.get("total_steps")
    at = f", step {step}/{total}" if step is not None else ""
    where = "model.pt" if run.step is None else f"checkpoint of step {run.step}"
    print(f"run {run.run_id} ({status}{at}): {where} from {run.source}")
    for note in run.notes:
        print(f"note: {note}")
    sp = run.sparsity
    recorded = f" (summary.json: {summary['sparsity']:.4f})" if "sparsity" in summary else ""
    print(f"sparsity: {sp['sparsity']:.4f} of {sp['total']:,} prunable weights "
          f"({sp['zeros']:,} zeros){recorded}")
    eval_ds = None
    if not args.no_eval or args.speed_seconds > 0:
        _, eval_ds = infer.spec.build_datasets(cfg)
    if not args.no_eval:
        metrics, sums = evaluate(run.model, task, eval_ds, cfg, run.device)
        head = task.primary
        rec = summary.get(f"eval_{head}")
        recorded = f" (summary.json: {rec:.6f})" if rec is not None else ""
        others = " ".join(f"{k} {v:.6f}" for k, v in metrics.items() if k != head)
        print(f"eval: {head} {metrics[head]:.6f}{recorded}, {others} over "
              f"{int(sums['count']):,} {task.unit}")
    if args.speed_seconds > 0:
        batch = next(iter(data.eval_loader(eval_ds, cfg, 0, 1)))
        for line in speed(run, task, batch, args.speed_seconds):
            print(line)
    if infer.tokenizer is not None:
        tok = infer.tokenizer(cfg)
        prompt = "def " if args.prompt is None else args.prompt
        text, ids = complete(run, tok, prompt, args.tokens, args.temperature, args.top_k,
                             args.seed)
        how = ("greedy" if args.temperature <= 0 else
               f"temperature {args.temperature:g}, top-k {args.top_k or 'all'}, seed {args.seed}")
        print(f"generated {len(ids)} tokens ({how}):")
        print(prompt + text)
    elif args.prompt is not None:
        raise ConfigError(f"--prompt: {cfg.model} is not a language model; drop --prompt")


def main(infer: InferSpec | None = None, argv=None) -> int:
    """<model>/infer.py's entry point; without `infer`, the run's config names the model."""
    args = parser(infer).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if infer is None:
            infer = infer_spec(read_config(find_run(args.run))["model"])
        run = load_run(args.run, infer, args.device)
        report(run, infer, args)
    except (ConfigError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
