"""Pruning: which weights are prunable, the Pruner the trainer drives, and measured sparsity.

Methods (docs/pruning.md): none, magnitude (Zhu & Gupta 2017), movement (Sanh et al. 2020)
and state (AdamWPrune: scores from Adam's own exp_avg/exp_avg_sq, no float buffer of its
own). All share the gradual schedule of lib/pruning_schedule.py and one mask per prunable
weight (a bool tensor, 1 byte per weight). Masks only grow: a pruned weight stays pruned.

The trainer's order per step: backward, unscale, before_step (mask grads, accumulate
movement scores), grad clip, optimizer.step(), after_step (update masks when the schedule
says so, then zero the pruned weights), and finalize() once at the end. Once the masks are
final the optimizer's state is zeroed at the pruned weights and the weight masking stops
(Pruner._check_final); the gradient masking goes on (one multi-tensor launch).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from lib import pruning_schedule as schedule
from lib import pruning_scores as scores
from lib.runconfig import PRUNING_METHODS, RunConfig

PRUNABLE_MODULES = (nn.Linear, nn.Conv2d, nn.Embedding)
# optimizers whose update of a weight with zero gradient and zero state is exactly zero
KEEPS_ZEROS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def prunable_parameters(model: nn.Module, cfg) -> list[tuple[str, nn.Parameter]]:
    """Weights of Linear, Conv2d and Embedding modules, each once (tied weights by identity).

    Embeddings are left out unless cfg.prune_embeddings; the output head -- the last
    nn.Linear in model.modules() order, or the parameters a model names in its attribute
    `prune_exclude` -- unless cfg.prune_head. A weight tied to an excluded one is excluded.
    """
    exclude = getattr(model, "prune_exclude", None)
    if exclude is not None:
        named = dict(model.named_parameters(remove_duplicate=False))
        unknown = [n for n in exclude if n not in named]
        if unknown:
            raise ValueError(f"{type(model).__name__}.prune_exclude names {unknown}, which are not "
                             f"parameters of the model; use names from model.named_parameters()")
        head = {id(named[n]) for n in exclude}
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = {id(linears[-1].weight)} if linears else set()
    skip = set() if cfg.prune_head else set(head)
    found = []
    for mname, m in model.named_modules():
        if isinstance(m, PRUNABLE_MODULES) and m.weight.requires_grad:
            if isinstance(m, nn.Embedding) and not cfg.prune_embeddings:
                skip.add(id(m.weight))
            found.append((f"{mname}.weight" if mname else "weight", m.weight))
    out, seen = [], set()
    for name, p in found:
        if id(p) not in skip and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


@torch.no_grad()
def measure_sparsity(model: nn.Module, cfg) -> dict:
    """Fraction of exact zeros in the prunable weights, counted from the weights themselves."""
    params = prunable_parameters(model, cfg)
    zeros = torch.stack([(p == 0).sum() for _, p in params]).tolist() if params else []
    layers = {n: z / p.numel() for (n, p), z in zip(params, zeros)}
    total = sum(p.numel() for _, p in params)
    return {"sparsity": sum(zeros) / total if total else 0.0, "layers": layers,
            "zeros": sum(zeros), "total": total}


# -----------------------------------------------------------------------------
# choosing what to prune

def _lowest(s: torch.Tensor, k: int) -> torch.Tensor:
    """Bool mask of exactly the k lowest entries of 1-D s; among equal scores the lower index."""
    n = s.numel()
    if k <= 0 or k >= n:
        return torch.full_like(s, k > 0, dtype=torch.bool)
    if s.is_cuda:  # topk: 1.9 ms for 85M floats on an H100, where kthvalue takes 508 ms
        kth = (torch.topk(s, k, largest=False, sorted=False).values.max() if k <= n // 2 else
               torch.topk(s, n - k + 1, sorted=False).values.min())
    else:
        kth = _kth_smallest_cpu(s, k)
    out = s < kth
    ties = (s == kth).nonzero().squeeze(1)
    # count_nonzero, not out.sum(): a bool sum of 85M on one CPU thread took 2-5 s
    out[ties[: k - int(torch.count_nonzero(out))]] = True
    return out


_SAMPLE = 1 << 20   # _kth_smallest_cpu samples this many scores from tensors 4x larger
_MARGIN_SD = 8      # and brackets the k-th value this many standard deviations either side


def _kth_smallest_cpu(s: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th smallest value (1-based) of 1-D s on the CPU, exactly kthvalue's. kthvalue
    itself takes 243 ms for 11M floats (where topk takes 459 ms), but 5-14 s for GPT-2's 85M
    state scores, most of a gpt2 dry-run. Above _SAMPLE values, a fixed-seed sample brackets
    the k-th value (_MARGIN_SD standard deviations of its rank either side), one pass counts
    the values below the bracket and gathers those in it (under 1% of them), and kthvalue runs
    on those; if the bracket misses, which only an unlucky sample can make it do, the full
    kthvalue. (The lone CPU thread of a dry-run: 85M scores 5-14 s -> 1.7 s with the tie
    count below.)"""
    n = s.numel()
    if n <= 4 * _SAMPLE:
        return torch.kthvalue(s, k).values
    g = torch.Generator().manual_seed(0)
    sample = s[torch.randint(n, (_SAMPLE,), generator=g)].sort().values
    at, margin = k / n * _SAMPLE, _MARGIN_SD * math.sqrt(_SAMPLE) + 1
    lo = sample[max(0, int(at - margin))]
    hi = sample[min(_SAMPLE - 1, int(at + margin))]
    below = int(torch.count_nonzero(s < lo))
    band = s[(s >= lo) & (s <= hi)]
    if below < k <= below + band.numel():
        return torch.kthvalue(band, k - below).values
    return torch.kthvalue(s, k).values


def _lowest_by_size(s: torch.Tensor, sizes: torch.Tensor, n: int) -> torch.Tensor:
    """Lowest-score units (blocks) whose total size is closest to n; equal scores by index."""
    order = torch.sort(s, stable=True).indices
    cum = sizes[order].cumsum(0)
    k = int(torch.searchsorted(cum, n, right=True))  # units that fit in n
    if k < cum.numel() and int(cum[k]) - n < n - (int(cum[k - 1]) if k else 0):
        k += 1
    out = torch.zeros_like(s, dtype=torch.bool)
    out[order[:k]] = True
    return out


def block_scores(score: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean score of each b x b block of the weight viewed as [rows, cols] (conv weights as
    [out, in*kh*kw]); partial edge blocks average over their real entries.
    Returns (block means, block sizes), both [ceil(rows/b), ceil(cols/b)]."""
    s = score.reshape(score.shape[0], -1)
    r, c = s.shape
    nr, nc = -(-r // b), -(-c // b)
    sums = F.pad(s, (0, nc * b - c, 0, nr * b - r)).view(nr, b, nc, b).sum(dim=(1, 3))
    rows = (r - torch.arange(nr, device=s.device) * b).clamp_(max=b)
    cols = (c - torch.arange(nc, device=s.device) * b).clamp_(max=b)
    sizes = rows[:, None] * cols[None, :]
    return sums / sizes, sizes


def expand_blocks(block_mask: torch.Tensor, shape: torch.Size, b: int) -> torch.Tensor:
    """Per-block mask -> per-weight mask of `shape`."""
    r, c = shape[0], math.prod(shape[1:])
    full = block_mask.repeat_interleave(b, 0).repeat_interleave(b, 1)
    return full[:r, :c].reshape(shape)


# -----------------------------------------------------------------------------
# the pruner

class Pruner:
    """Masks, scores and schedule of one run. With method "none" every call is a no-op."""

    def __init__(self, params, optimizer, cfg, total_steps: int):
        self.method = cfg.pruning_method
        self.cfg, self.optimizer = cfg, optimizer
        self.params = dict(params)
        self.target = cfg.target_sparsity if self.method != "none" else 0.0
        self.total_steps = total_steps
        self.t0, self.t1 = schedule.ramp_steps(total_steps, cfg.pruning_warmup,
                                               cfg.pruning_ramp_end)
        self.sparsity = 0.0  # the level the masks were last set to
        self.achieved = 0.0  # the fraction of prunable weights the masks zero (measured)
        self.on_final: list = []          # callables run once when the masks are final
        self._final_done = self.weights_stay_zero = False
        self.masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in self.params.items()}
        self.scores, self.w0 = {}, {}  # movement: S = -sum(g*W) ("grad") or W0 ("delta")
        if self.method == "movement" and cfg.movement_variant == "grad":
            self.scores = {n: torch.zeros_like(p, dtype=torch.float32)
                           for n, p in self.params.items()}
        if self.method == "movement" and cfg.movement_variant == "delta":
            self.w0 = {n: p.detach().clone() for n, p in self.params.items()}

    def target_at(self, step: int, budget_used: float = 0.0) -> float:
        """The scheduled sparsity after `step`; budget_used: training time over the TIME
        budget (0 without one), which moves the schedule ahead of the steps."""
        at = schedule.progress(step, self.total_steps, budget_used)
        return schedule.sparsity_at(at, self.t0, self.t1, self.target, self.cfg.pruning_ramp)

    @torch.no_grad()
    def before_step(self, step: int) -> None:
        if self.method == "none":
            return
        have = [(p.grad, self.masks[n]) for n, p in self.params.items() if p.grad is not None]
        if self.sparsity > 0 and have:       # one multi-tensor launch, not one per weight
            torch._foreach_mul_([g for g, _ in have], [m for _, m in have])
        if self.scores and self.sparsity < self.target:  # until the final masks (t1)
            for n, p in self.params.items():
                if p.grad is not None:
                    scores.accumulate_movement(self.scores[n], p, p.grad)

    @torch.no_grad()
    def after_step(self, step: int, budget_used: float = 0.0) -> None:
        """Update the masks if the schedule says so, then zero the pruned weights. Under a
        TIME budget, budget_used (training time / budget) must be the same on every rank."""
        if self.method == "none":
            return
        at = schedule.progress(step, self.total_steps, budget_used)
        if self.sparsity < self.target and schedule.is_update_step(
                step, self.t0, self.t1, self.cfg.pruning_frequency, at):
            self._update_masks(max(self.target_at(step, budget_used), self.sparsity))
        self._apply_masks()
        self._check_final()

    @torch.no_grad()
    def finalize(self) -> None:
        if self.method != "none" and self.sparsity < self.target:
            self._update_masks(self.target)
        self._apply_masks()
        self._check_final()

    @property
    def final(self) -> bool:
        """Whether the masks are at the target: they never change again."""
        return self.method != "none" and self.sparsity >= self.target

    # --- internals ------------------------------------------------------------
    @torch.no_grad()
    def _apply_masks(self) -> None:
        if self.sparsity > 0 and not self.weights_stay_zero:
            torch._foreach_mul_(list(self.params.values()), list(self.masks.values()))

    @torch.no_grad()
    def _check_final(self) -> None:
        """Once the masks are final: zero the optimizer's per-weight state (momentum, Adam's
        moments) at the pruned weights, where the optimizers of KEEPS_ZEROS then keep a
        pruned weight exactly 0 by themselves (its gradient is masked to 0, so its momentum
        stays 0, and so does its update; decoupled or L2 weight decay of 0 is 0), so the
        per-step weight masking stops; then run the on_final callbacks (lib/build.py: the
        block-sparse layers' layouts). Unpruned weights follow the very same arithmetic."""
        if not self.final or self._final_done:
            return
        self._final_done = True
        if type(self.optimizer) in KEEPS_ZEROS:
            for n, p in self.params.items():
                for t in self.optimizer.state.get(p, {}).values():
                    if torch.is_tensor(t) and t.shape == p.shape:
                        t.mul_(self.masks[n])
            self.weights_stay_zero = True
        for fn in self.on_final:
            fn()

    def _score(self, name: str, p: torch.Tensor) -> torch.Tensor:
        if self.method == "magnitude":
            return scores.magnitude(p)
        if self.method == "movement":
            return self.scores[name] if self.scores else scores.movement_delta(p, self.w0[name])
        group = next(g for g in self.optimizer.param_groups if any(q is p for q in g["params"]))
        st = self.optimizer.state.get(p, {})
        if "exp_avg" in st:  # a weight that never had a gradient has no state: m = v = 0
            m, v, t = st["exp_avg"], st["exp_avg_sq"], float(st["step"])
        else:
            m, v, t = torch.zeros_like(p), torch.zeros_like(p), 1.0
        return scores.state(p, m, v, self.cfg.state_score, step=t, beta1=group["betas"][0],
                            beta2=group["betas"][1], eps=group["eps"])

    @torch.no_grad()
    def _update_masks(self, sparsity: float) -> None:
        names = list(self.params)
        for group in ([[n] for n in names] if self.cfg.pruning_scope == "layer" else [names]):
            self._prune_group(group, sparsity)
        self.sparsity = sparsity
        self._measure()

    @torch.no_grad()
    def _measure(self) -> None:
        """achieved from the masks themselves: block pruning lands on the total of whole
        blocks closest to the level, not on it (one host sync per mask update)."""
        total = sum(m.numel() for m in self.masks.values())
        kept = sum(m.count_nonzero() for m in self.masks.values()) if total else 0
        self.achieved = 1.0 - float(kept) / total if total else 0.0

    def _prune_group(self, names: list[str], sparsity: float) -> None:
        """Prune round(sparsity * N) of the N weights of `names` together (whole blocks when
        pruning_block_size > 0: the total closest to that). Pruned weights score -inf."""
        b = self.cfg.pruning_block_size
        units, sizes = [], []
        for n in names:
            s = self._score(n, self.params[n]).float().masked_fill(~self.masks[n], float("-inf"))
            if b > 0:
                s, size = block_scores(s, b)
                sizes.append(size.flatten())
            units.append(s.flatten())
        flat = torch.cat(units)
        n_prune = round(sparsity * sum(self.params[n].numel() for n in names))
        if b > 0:
            pruned = _lowest_by_size(flat, torch.cat(sizes), n_prune)
        else:
            pruned = _lowest(flat, n_prune)
        for n, pr in zip(names, pruned.split([u.numel() for u in units])):
            keep = ~pr
            shape = self.params[n].shape
            keep = expand_blocks(keep.view(-(-shape[0] // b), -1), shape, b) if b > 0 else keep
            self.masks[n].copy_(keep.view(shape))

    # --- checkpoints ----------------------------------------------------------
    def state_dict(self) -> dict:
        clone = lambda d: {k: v.clone() for k, v in d.items()}  # noqa: E731
        return {"method": self.method, "sparsity": self.sparsity, "masks": clone(self.masks),
                "scores": clone(self.scores), "w0": clone(self.w0)}

    def load_state_dict(self, sd: dict) -> None:
        if sd.get("method") != self.method:
            raise ValueError(f"pruner checkpoint is for pruning_method={sd.get('method')!r}, this "
                             f"run uses {self.method!r}: resume with the same --pruning-method")
        for key in ("masks", "scores", "w0"):
            mine, theirs = getattr(self, key), sd[key]
            if set(mine) != set(theirs):
                raise ValueError(f"pruner checkpoint {key} cover {sorted(theirs)}, this model's "
                                 f"prunable weights are {sorted(mine)}: resume with the same "
                                 "model and --prune-embeddings/--prune-head")
            for k, v in theirs.items():
                mine[k].copy_(v)
        self.sparsity = float(sd["sparsity"])
        self._measure()
        self._check_final()   # the model's weights and the optimizer's state are loaded first


def build_pruner(model: nn.Module, optimizer: torch.optim.Optimizer, cfg,
                 total_steps: int) -> Pruner:
    method = cfg.pruning_method
    if method == "none":
        return Pruner([], optimizer, cfg, total_steps)
    if method not in PRUNING_METHODS:
        raise ValueError(f"pruning_method={method!r} is unknown: choose one of "
                         f"{', '.join(PRUNING_METHODS)} (--pruning-method)")
    if not 0.0 < cfg.target_sparsity < 1.0:
        raise ValueError(f"target_sparsity={cfg.target_sparsity!r}: {method} pruning needs a "
                         "target in (0, 1), e.g. --target-sparsity 0.7")
    RunConfig.check_choices(cfg, ("pruning_scope", "pruning_ramp", "movement_variant",
                                  "state_score"))
    if cfg.pruning_block_size < 0 or cfg.pruning_frequency < 1 or total_steps < 1:
        raise ValueError(f"pruning_block_size={cfg.pruning_block_size} must be >= 0, "
                         f"pruning_frequency={cfg.pruning_frequency} >= 1 and "
                         f"total_steps={total_steps} >= 1")
    if method == "state" and not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        raise ValueError(f"pruning_method=state scores weights from Adam's exp_avg/exp_avg_sq, "
                         f"but the optimizer is {type(optimizer).__name__}, which keeps none: use "
                         "--optimizer adamwprune (CONFIG_MATRIX_OPTIMIZER_ADAMWPRUNE), or "
                         "--pruning-method magnitude/movement with this optimizer")
    params = prunable_parameters(model, cfg)
    if not params:
        raise ValueError(f"{type(model).__name__} has no prunable weights (Linear/Conv2d/"
                         "Embedding, head and embeddings excluded): set --prune-head or "
                         "--prune-embeddings, or use --pruning-method none")
    if method == "state":
        stepped = {id(p) for g in optimizer.param_groups for p in g["params"]}
        missing = [n for n, p in params if id(p) not in stepped]
        if missing:
            raise ValueError(f"pruning_method=state: weights {missing} are not in the optimizer, "
                             "so they have no Adam state; build the optimizer from this model")
    return Pruner(params, optimizer, cfg, total_steps)
