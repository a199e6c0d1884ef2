"""The one training loop behind every <model>/train.py.

A model folder hands over a ModelSpec (how to build its model and data, which task it is)
and its config class; this file does the rest: CLI/JSON config, DDP from the environment,
AMP, torch.compile, gradient accumulation, warm-up + cosine LR, pruning hooks, evaluation,
atomic checkpoints with exact resume, TIME budget, NaN/inf detection, throughput and peak
memory, GPU/CPU monitoring, trackio, and the run's files:

  <out_dir>/config.json     resolved config         <out_dir>/status.json   running/done/failed
  <out_dir>/metrics.jsonl   train/eval/system rows  <out_dir>/summary.json  final metrics
  <out_dir>/train.log       the log                 <models_dir>/ckpt_*.pt  checkpoints

Time: the first step(s) of each process (torch.compile, CUDA graph capture, allocator
warm-up) count as warm-up and evaluations as eval; the TIME budget counts training time
only. All three go to the checkpoint and summary.json (warmup_s, evaluation_s, train_s;
not eval_*: those are the evaluation's metrics).

status.json is rewritten at every log step while the run trains (step, total_steps, loss,
rate, unit, elapsed_s, eta_s, last_eval): `make status` reads it.

Test hooks (KNLP_CRASH_AT, KNLP_SLOW_STEP, KNLP_BATCH_SUMS): lib/testhooks.py.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import signal
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

import kernels
from lib import (checkpoint, cli, data, dryrun, fsio, gpu_data, monitor, optim, preempt,
                 pruning, runrecord, testhooks, tracking)
from lib.build import build_training, kernel_switches
from lib.paths import REPO, RESULTS, RUNS
from lib.runconfig import ConfigError, RunConfig
from lib.tasks import Classification


@dataclass
class ModelSpec:
    name: str
    config_class: type                              # <model>/config.py's Config
    build_model: Callable                           # cfg -> nn.Module
    build_datasets: Callable                        # cfg -> (train Dataset, eval Dataset)
    example_batch: Callable                         # (cfg, n) -> synthetic batch, for dry-run
    task: object = None                             # lib.tasks.Classification() by default
    example_scale: Callable = None                  # cfg -> activations of a real sample over an
                                                    # example_batch sample (dry-run; default 1)
    device_source: Callable = None                  # (cfg, train Dataset) -> lib.gpu_data.Source,
                                                    # for data_on_gpu (image models that can)
    device_batches: Callable = None                 # (cfg, train Dataset, device) -> batches the
                                                    # model makes on the device itself (an object
                                                    # with DeviceBatches' loader()), or None

    def __post_init__(self):
        self.task = self.task or Classification()


class TrainingFailed(RuntimeError):
    """Stops the run with status failed; the last good checkpoint stays."""


# -----------------------------------------------------------------------------
# set-up helpers

def ddp_env():
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def resolve_paths(cfg: RunConfig) -> RunConfig:
    if not cfg.data_dir or cfg.data_dir == "data":
        cfg.data_dir = os.path.join(REPO, "data")
    if not cfg.out_dir:
        cfg.out_dir = os.path.join(RUNS, cfg.run_id())
    if not cfg.models_dir:
        cfg.models_dir = os.path.join(cfg.out_dir, "checkpoints")
    if cfg.trackio and not cfg.trackio_dir:
        cfg.trackio_dir = os.path.join(RESULTS, "trackio")
    if cfg.trackio and not cfg.trackio_project:
        cfg.trackio_project = cfg.model
    return cfg


def compile_options(cfg: RunConfig) -> dict:
    """torch.compile's keyword arguments for cfg.compile_mode ("default": none)."""
    return {} if cfg.compile_mode == "default" else {"mode": cfg.compile_mode}


def uses_cudagraphs(cfg: RunConfig) -> bool:
    """Whether the compiled model replays CUDA graphs (inductor's cudagraph trees): their
    outputs live in a pool that the next replay overwrites."""
    return (cfg.compile and cfg.device == "cuda"
            and cfg.compile_mode in ("reduce-overhead", "max-autotune"))


def make_grads(model) -> None:
    """Zero .grad for every trainable parameter that has none: under CUDA graphs the
    backward's gradients are then added into these tensors, which no replay overwrites."""
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def amp_context(cfg: RunConfig):
    if cfg.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    return torch.autocast(device_type=cfg.device, dtype=dtype)


def lr_at(cfg: RunConfig, step: int, total: int) -> float:
    """Linear warm-up, then cosine to 10 percent of lr (or constant). Stateless in step,
    so a resumed run needs no scheduler state."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    t = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0))))


def warmup_steps(cfg: RunConfig) -> int:
    """Steps at the start of each process counted as warm-up, not training: the first call
    compiles (torch.compile) or pays lazy initialisation; CUDA graph trees record a graph
    only after warm-up calls, so under them the first 3."""
    return 3 if uses_cudagraphs(cfg) else 1


def new_clock(saved: dict | None = None) -> dict:
    """Seconds spent so far: warmup_s, train_s (what a TIME budget counts), evaluation_s and
    wall_s."""
    clock = {"warmup_s": 0.0, "train_s": 0.0, "evaluation_s": 0.0, "wall_s": 0.0}
    clock.update(saved or {})
    return clock


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -----------------------------------------------------------------------------
# the run

class Run:
    def __init__(self, spec: ModelSpec, cfg: RunConfig):
        self.spec, self.cfg, self.task = spec, cfg, spec.task
        self.rank, self.local_rank, self.world = ddp_env()
        self.master = self.rank == 0
        self.log_file = self.tracker = self.monitor = None
        self.saver = checkpoint.AsyncSaver()
        self.clock, self.budget_used, self.last_eval = new_clock(), 0.0, None
        self._mark = self._proc_start = time.time()
        self._wall0 = 0.0
        self.step_now = 0      # the optimizer step being run (the pruner's callbacks read it)

    def log(self, msg: str) -> None:
        if not self.master:
            return
        line = f"[{self.cfg.model} {time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        if self.log_file:
            self.log_file.write(line + "\n")
            self.log_file.flush()

    def write_status(self, status: str, **extra) -> None:
        if self.master:
            runrecord.write_status(self.cfg.out_dir, status, **extra)

    def tick(self, kind: str) -> None:
        """Charge the time since the last tick to clock[kind] (warmup_s, train_s or
        evaluation_s)."""
        now = time.time()
        self.clock[kind] += now - self._mark
        self.clock["wall_s"] = self._wall0 + now - self._proc_start
        self._mark = now

    def metric(self, row: dict) -> None:
        if self.master:
            fsio.append_jsonl(os.path.join(self.cfg.out_dir, "metrics.jsonl"), row)
            if self.tracker:
                self.tracker.log(row)

    # -------------------------------------------------------------------------
    def setup(self) -> None:
        cfg = self.cfg
        kernel_switches(cfg)          # before any kernel runs and before the status records them
        if self.world > 1:
            backend = "nccl" if cfg.device == "cuda" else "gloo"
            dist.init_process_group(backend=backend)
        if cfg.device == "cuda":
            if not torch.cuda.is_available():
                raise ConfigError("device=cuda but torch sees no GPU; pick the CPU preset "
                                  "(CONFIG_HW_CPU) or run on a GPU machine")
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        else:
            self.device = torch.device("cpu")
        if self.master:
            os.makedirs(cfg.out_dir, exist_ok=True)
            fsio.atomic_write_json(os.path.join(cfg.out_dir, "config.json"), cfg.to_dict())
            self.log_file = open(os.path.join(cfg.out_dir, "train.log"), "a")
        if self.master:
            self.tracker = tracking.open_run(cfg)
            self.monitor = monitor.start(cfg, self.device, self.metric)

    def build(self) -> None:
        cfg, spec = self.cfg, self.spec
        train_ds, eval_ds = spec.build_datasets(cfg)
        self.train_ds = data.SeededDataset(train_ds, cfg.seed)
        self.eval_ds = eval_ds
        self.steps_per_epoch = len(train_ds) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"batch_size={cfg.batch_size} is larger than the training set "
                              f"({len(train_ds)} samples); lower batch_size")
        self.total_steps = cfg.max_steps or cfg.epochs * self.steps_per_epoch
        self.device_batches = None
        if cfg.data_on_gpu:
            if spec.device_source is None:
                raise ConfigError(f"data_on_gpu: {spec.name} has no device data path; turn "
                                  f"--data-on-gpu off")
            self.device_batches = gpu_data.DeviceBatches(spec.device_source(cfg, train_ds),
                                                         self.device,
                                                         channels_last=cfg.device == "cuda")
        elif spec.device_batches is not None:       # resnet50's JPEG decoding on the device
            self.device_batches = spec.device_batches(cfg, train_ds, self.device)
        self.model, self.optimizer, self.pruner = build_training(spec, cfg, self.total_steps,
                                                                 self.device)
        self.raw_model = self.model
        self.block_sparse = None
        if cfg.kernel_linear and cfg.pruning_block_size > 0 and self.pruner.method != "none":
            self.pruner.on_final.append(self.sync_block_sparse)
        if cfg.compile:
            self.model = torch.compile(self.model, **compile_options(cfg))
        # Under CUDA graphs a backward's gradients are graph outputs, overwritten by the next
        # replay: were .grad None, autograd would keep such an output as .grad and the next
        # micro-step's replay would overwrite it (the accumulated gradient, gone). Gradients
        # that exist before the first backward are added into in place instead, and
        # zero_grad keeps them (set_to_none=False).
        self.cudagraphs = uses_cudagraphs(cfg)
        if self.cudagraphs:
            make_grads(self.raw_model)
        if self.world > 1:
            ids = [self.local_rank] if cfg.device == "cuda" else None
            self.model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.scaler = torch.amp.GradScaler(cfg.device, enabled=cfg.precision == "fp16")
        self.grad_clip = optim.effective_grad_clip(cfg)
        nparams = sum(p.numel() for p in self.raw_model.parameters())
        self.log(f"{nparams/1e6:.3f}M params; {len(train_ds)} train / {len(eval_ds)} eval samples; "
                 f"{self.total_steps} steps of {cfg.batch_size} (= {self.world} procs x "
                 f"{cfg.grad_accum} accum x {cfg.batch_size // (self.world * cfg.grad_accum)}); "
                 f"{cfg.optimizer} + {cfg.pruning_method} pruning to {cfg.target_sparsity:g}")
        self.nparams = nparams

    def sync_block_sparse(self) -> None:
        """The pruner's on_final callback: the masks never change again, so the pruned
        layers' tile layouts are computed once and their dW comes from the nonzero blocks
        only (kernels.sync_block_layouts); the run's summary says which layers and from
        which step."""
        dens = kernels.sync_block_layouts(self.raw_model, sampled_dw=True)
        active = {n: round(d, 4) for n, d in dens.items() if d < 1.0}
        self.block_sparse = {"from_step": self.step_now, "layers": active}
        self.log(f"final masks at step {self.step_now}: {len(active)} of {len(dens)} layers "
                 f"take the block-sparse kernels (tile density "
                 f"{min(active.values(), default=1):.2f}-{max(active.values(), default=1):.2f}),"
                 f" dW on their nonzero blocks only")

    # -------------------------------------------------------------------------
    def state(self, step: int, epoch: int, batch_in_epoch: int) -> dict:
        return {"model": self.raw_model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "pruner": self.pruner.state_dict(), "scaler": self.scaler.state_dict(),
                "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "elapsed": self.clock["train_s"], "clock": dict(self.clock),
                "last_eval": self.last_eval, "rng": checkpoint.rng_state(),
                "config": self.cfg.semantic_dict()}

    def save_checkpoint(self, step, epoch, batch_in_epoch) -> None:
        if self.master:
            self.saver.save(self.cfg.models_dir, self.state(step, epoch, batch_in_epoch),
                            step, keep=self.cfg.keep_checkpoints)
        if self.world > 1:
            dist.barrier()

    def resume(self):
        """Return (step, epoch, batch_in_epoch) to start from; restore the clock."""
        ck = checkpoint.load_latest(self.cfg.models_dir)
        if ck is None:
            return 0, 0, 0
        if ck["config"] != self.cfg.semantic_dict():
            raise ConfigError(f"checkpoint {ck['path']} was made with a different config; "
                              f"re-run from scratch with FORCE=1 or point MODELS= elsewhere")
        self.raw_model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.step_now = ck["step"]
        self.pruner.load_state_dict(ck["pruner"])
        self.scaler.load_state_dict(ck["scaler"])
        checkpoint.set_rng_state(ck["rng"])
        step = ck["step"]
        self.clock = new_clock(ck.get("clock") or {"train_s": ck["elapsed"]})
        self._wall0, self.last_eval = self.clock["wall_s"], ck.get("last_eval")
        if self.cfg.time_budget:
            self.budget_used = self.clock["train_s"] / self.cfg.time_budget
        if self.master:  # drop metric rows logged after the checkpoint: they will be redone
            path = os.path.join(self.cfg.out_dir, "metrics.jsonl")
            rows = [r for r in fsio.read_jsonl(path) if r.get("step", 0) <= step]
            fsio.atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))
        self.log(f"resumed from {ck['path']} at step {step}")
        return step, ck["epoch"], ck["batch_in_epoch"]

    # -------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict:
        """Evaluate; the time since the last tick goes to train_s, this call's to
        evaluation_s."""
        self.tick("train_s")
        try:
            return self._evaluate()
        finally:
            self.tick("evaluation_s")

    def mid_eval(self, step: int, **extra) -> None:
        """A mid-run evaluation: a metrics row, a log line and status.json's last_eval."""
        res = self.evaluate(step)
        self.metric({"kind": "eval", "step": step, **extra, **res})
        primary = self.task.primary
        self.last_eval = {"step": step, "metric": primary, "value": res.get(primary),
                          "loss": res.get("loss")}
        self.log(f"eval step {step}: loss {res.get('loss', float('nan')):.4f} "
                 f"{primary} {res.get(primary, float('nan')):.4f}")

    def _evaluate(self) -> dict:
        self.model.eval()
        sums: dict = {}
        with amp_context(self.cfg):
            for batch in data.eval_loader(self.eval_ds, self.cfg, self.rank, self.world):
                batch = [t.to(self.device, non_blocking=True) for t in batch]
                for k, v in self.task.eval_sums(self.raw_model, batch).items():
                    sums[k] = sums.get(k, 0.0) + v
        if self.world > 1:
            keys = sorted(sums)
            t = torch.tensor([sums[k] for k in keys], dtype=torch.float64, device=self.device)
            dist.all_reduce(t)
            sums = dict(zip(keys, t.tolist()))
        self.model.train()
        return self.task.finish(sums)

    def train_step(self, micro_batches) -> float:
        """One optimizer step over grad_accum micro-batches; returns the mean loss."""
        cfg, model = self.cfg, self.model
        total = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro_batches):
            batch = [t.to(self.device, non_blocking=True) for t in batch]
            sync = i == len(micro_batches) - 1 or self.world == 1
            # a fresh context each time: no_sync() is a generator context, entered only once
            ctx = (lambda: contextlib.nullcontext()) if sync else model.no_sync
            if self.cudagraphs:       # this micro-step's outputs replace the last one's
                torch.compiler.cudagraph_mark_step_begin()
            with ctx(), amp_context(cfg):
                loss = self.task.loss(model, batch) / len(micro_batches)
            with ctx():
                self.scaler.scale(loss).backward()
            total += loss.detach()
        return total

    def out_of_time(self, step: int) -> bool:
        """Whether the TIME budget's training time is spent; updates budget_used, the
        pruning schedule's clock. Ranks' clocks differ, and a rank that stopped alone would
        leave the others waiting in an all-reduce (or prune other weights): under DDP rank
        0's clock counts, read at log steps only (the ranks sync there anyway), broadcast."""
        used = self.clock["train_s"]
        if self.world > 1:
            if step % self.cfg.log_interval:
                return False
            t = torch.tensor([used], dtype=torch.float64, device=self.device)
            dist.broadcast(t, src=0)
            used = t.item()
        self.budget_used = used / self.cfg.time_budget
        return used >= self.cfg.time_budget

    def live_status(self, step: int, loss: float, rate: float, step_rate: float) -> None:
        """status.json while training, for `make status` (rank 0; one small atomic write)."""
        train_s = self.clock["train_s"]
        eta = (self.total_steps - step) / step_rate if step_rate > 0 else None
        if self.cfg.time_budget:
            left = max(0.0, self.cfg.time_budget - train_s)
            eta = left if eta is None else min(eta, left)
        self.write_status("running", step=step, total_steps=self.total_steps,
                          loss=loss if math.isfinite(loss) else None, rate=rate,
                          unit=self.task.unit, elapsed_s=train_s, eta_s=eta,
                          last_eval=self.last_eval)

    def loop(self) -> None:
        cfg = self.cfg
        step, epoch, start_batch = self.resume()
        self._mark = self._proc_start = time.time()
        warm_until = step + warmup_steps(cfg)       # this process's warm-up steps
        facts = preempt.slurm_facts()
        self.write_status("running", step=step, total_steps=self.total_steps,
                          elapsed_s=self.clock["train_s"], last_eval=self.last_eval,
                          **({"slurm": facts} if facts else {}))
        timed = lambda: self.clock["train_s"] + self.clock["warmup_s"]  # noqa: E731
        window_t, window_units, window_steps, last_loss = timed(), 0, 0, float("nan")
        stop_reason = "finished"
        while step < self.total_steps:
            loader = (self.device_batches.loader(cfg, epoch, start_batch, self.rank, self.world)
                      if self.device_batches else
                      data.train_loader(self.train_ds, cfg, epoch, start_batch, self.rank, self.world))
            micro, b = [], start_batch
            for batch in loader:
                micro.append(batch)
                if len(micro) < cfg.grad_accum:
                    continue
                step += 1
                b += 1
                self.step_now = step
                testhooks.at_step(self.rank, step, cfg.out_dir, micro)
                lr = lr_at(cfg, step - 1, self.total_steps)
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
                loss = self.train_step(micro)
                window_units += sum(self.task.units(m) for m in micro) * self.world
                window_steps += 1
                micro = []
                self.scaler.unscale_(self.optimizer)
                self.pruner.before_step(step)
                if self.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=not self.cudagraphs)
                if step <= warm_until and cfg.device == "cuda":
                    torch.cuda.synchronize()    # the warm-up's queued kernels are warm-up too
                self.tick("warmup_s" if step <= warm_until else "train_s")
                if cfg.time_budget and self.world == 1:
                    self.budget_used = self.clock["train_s"] / cfg.time_budget
                self.pruner.after_step(step, self.budget_used)

                ckpt_due = step % cfg.checkpoint_interval == 0 and step < self.total_steps
                if step % cfg.log_interval == 0 or step == self.total_steps or ckpt_due:
                    if self.world > 1:
                        dist.all_reduce(loss)
                        loss /= self.world
                    last_loss = loss.item()
                    if not math.isfinite(last_loss):
                        raise TrainingFailed(f"loss is {last_loss} at step {step}; lower lr or "
                                             f"use fp32/bf16; last good checkpoint kept")
                if step % cfg.log_interval == 0 or step == self.total_steps:
                    self.tick("warmup_s" if step <= warm_until else "train_s")
                    dt = max(timed() - window_t, 1e-9)     # evaluations left out
                    rate, step_rate = window_units / dt, window_steps / dt
                    window_t, window_units, window_steps = timed(), 0, 0
                    self.metric({"kind": "train", "step": step, "epoch": epoch, "loss": last_loss,
                                 "lr": lr, "throughput": rate, "unit": self.task.unit,
                                 "time": self.clock["wall_s"], "train_s": self.clock["train_s"],
                                 "sparsity": self.pruner.achieved,
                                 "sparsity_level": self.pruner.sparsity,
                                 "sparsity_target": self.pruner.target_at(step, self.budget_used)})
                    self.log(f"step {step}/{self.total_steps} loss {last_loss:.4f} lr {lr:.2e} "
                             f"{rate:,.0f} {self.task.unit}/s")
                    self.live_status(step, last_loss, rate, step_rate)
                if cfg.eval_interval and step % cfg.eval_interval == 0 and step < self.total_steps:
                    self.mid_eval(step)
                if ckpt_due:
                    self.tick("warmup_s" if step <= warm_until else "train_s")
                    self.save_checkpoint(step, epoch, b)
                if preempt.agreed():      # a scheduler's warning: checkpoint now, requeue
                    if not ckpt_due:
                        self.save_checkpoint(step, epoch, b)
                    self.saver.wait()     # on disk before the status says so
                    self.write_status("preempted", step=step, total_steps=self.total_steps,
                                      reason=preempt.reason())
                    if self.world > 1:    # no rank exits before rank 0's files are written:
                        dist.barrier()    # srun --kill-on-bad-exit ends the step at the first
                    raise preempt.Preempted(preempt.reason())
                if cfg.time_budget and self.out_of_time(step):
                    stop_reason = f"time budget of {cfg.time_budget:g}s reached at step {step}"
                    break
                if step >= self.total_steps:
                    break
            if stop_reason != "finished":
                break
            epoch, start_batch = epoch + 1, 0
            if not cfg.eval_interval and step < self.total_steps:
                self.mid_eval(step, epoch=epoch)
        self.tick("train_s")
        self.finish(step, last_loss, stop_reason)

    def finish(self, step, last_loss, stop_reason) -> None:
        self.pruner.finalize()
        final = self.evaluate(step)
        wall = self.clock["wall_s"]
        sp = pruning.measure_sparsity(self.raw_model, self.cfg)
        self.metric({"kind": "eval", "step": step, "final": True, **final})
        rows = [r for r in fsio.read_jsonl(os.path.join(self.cfg.out_dir, "metrics.jsonl"))
                if r.get("kind") == "train"] if self.master else []
        rates = [r["throughput"] for r in rows[1:]] or [r["throughput"] for r in rows] or [0.0]
        summary = {"run_id": os.path.basename(self.cfg.out_dir), "model": self.cfg.model,
                   "optimizer": self.cfg.optimizer, "pruning_method": self.cfg.pruning_method,
                   "target_sparsity": self.cfg.target_sparsity, "sparsity": sp["sparsity"],
                   "steps": step, "train_loss": last_loss, "wall_time_s": wall,
                   **{k: self.clock[k] for k in ("warmup_s", "train_s", "evaluation_s")},
                   "peak_memory_mb": peak_memory_mb(self.cfg.device),
                   "throughput": sorted(rates)[len(rates) // 2], "unit": self.task.unit,
                   "params": self.nparams, "primary_metric": self.task.primary,
                   "stop_reason": stop_reason, "layer_sparsity": sp["layers"],
                   **{f"eval_{k}": v for k, v in final.items()}}
        if self.block_sparse is not None:   # kernel_linear + block pruning: the rate after
            after = [r["throughput"] for r in rows if r["step"] > self.block_sparse["from_step"]]
            summary["block_sparse"] = {**self.block_sparse, "throughput": sorted(
                after)[len(after) // 2] if after else None}
        self.saver.wait()           # the last checkpoint is on disk before "done"
        if self.master:
            checkpoint.save_model(self.cfg.models_dir, self.raw_model)
            fsio.atomic_write_json(os.path.join(self.cfg.out_dir, "summary.json"), summary)
            self.write_status("done", step=step, total_steps=self.total_steps, reason=stop_reason,
                              loss=last_loss if math.isfinite(last_loss) else None,
                              elapsed_s=self.clock["train_s"], eta_s=0.0,
                              last_eval=self.last_eval)
        head = final.get(self.task.primary)
        self.log(f"done: {self.task.primary} {head:.4f}, sparsity {sp['sparsity']:.4f}, "
                 f"{wall:.1f}s ({stop_reason})")


def _sigterm(signum, frame):
    raise KeyboardInterrupt


def run(spec: ModelSpec, cfg: RunConfig) -> int:
    signal.signal(signal.SIGTERM, _sigterm)    # runner's stop: finish like Ctrl-C
    preempt.reset()
    preempt.install()                          # USR1/USR2: only a flag, the loop checkpoints
    r = Run(spec, cfg)
    try:
        r.setup()
        r.build()
        r.loop()
        return 0
    except (ConfigError, checkpoint.CheckpointError, TrainingFailed, ValueError) as e:
        r.write_status("failed", reason=str(e))
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        r.write_status("interrupted", reason="interrupted by the user (SIGINT/SIGTERM)")
        return 130
    except preempt.Preempted:
        # checkpoint and status are written; a SIGTERM now (srun ending the other ranks,
        # the scheduler's kill) must not turn the exit into `interrupted`
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        return preempt.EXIT_PREEMPTED
    except BaseException as e:
        r.write_status("failed", reason=f"{type(e).__name__}: {e}")
        raise
    finally:
        try:
            r.saver.wait()          # never leave a checkpoint half-written behind an exit
        except checkpoint.CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
        if getattr(r, "tracker", None):
            r.tracker.finish()
        if getattr(r, "monitor", None):
            r.monitor.stop()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def main(spec: ModelSpec, argv=None) -> int:
    """Entry point of every train.py."""
    try:
        mode, payload = cli.parse(spec.config_class, argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if mode == "dry-run":
        return dryrun.main(spec, payload)
    cfg = resolve_paths(payload)
    rc = run(spec, cfg)
    if ddp_env()[2] > 1:
        exit_rank(rc)
    return rc


def exit_rank(rc: int) -> None:
    """End a torchrun rank with os._exit once its run is recorded and its process group is
    destroyed, skipping interpreter finalization. Gloo's worker threads outlive
    destroy_process_group (the group stays referenced from C++) and may still be releasing the
    last collective's tensors when the interpreter finalizes: freeing one needs the GIL, a
    thread asking for it then is ended, and that unwind through C++ aborts the rank
    ("terminate called without an active exception", SIGABRT after a finished run; 3 in 190
    two-rank CPU runs under load, gdb: ProcessGroupGloo::runLoop -> ~AsyncAllreduceWork ->
    THPVariable_dealloc -> take_gil -> pthread_exit)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
