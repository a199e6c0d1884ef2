"""Memory that each pruning method keeps, per prunable weight, next to the optimizer's state.

    python -m scripts.bench.pruning_memory             # prints, writes docs/pruning-memory.md
    python -m scripts.bench.pruning_memory --no-write  # prints only

Model: torchvision ResNet-18 with 10 classes (11.2M parameters). One training step on a
random batch creates the optimizer state; then the pruner's tensors (everything its
state_dict holds: masks, scores, W0) and the optimizer's state tensors are summed.
Byte counts do not depend on the device, so this runs on the CPU in a few seconds.
"""
import argparse
import datetime
import os

import torch

from lib import optim, pruning
from lib.runconfig import RunConfig

OUT = os.path.join(REPO, "docs", "pruning-memory.md")
CASES = [  # (label, settings)
    ("none", dict(optimizer="adamw", pruning_method="none")),
    ("magnitude", dict(optimizer="sgd", pruning_method="magnitude")),
    ("magnitude", dict(optimizer="adamw", pruning_method="magnitude")),
    ("movement (grad)", dict(optimizer="adamw", pruning_method="movement")),
    ("movement (delta)", dict(optimizer="adamw", pruning_method="movement",
                              movement_variant="delta")),
    ("state", dict(optimizer="adamwprune", pruning_method="state")),
    ("state", dict(optimizer="adamwprune", adamwprune_base="adamwadv", pruning_method="state")),
]


def tensor_bytes(tensors) -> tuple[int, int]:
    """(all bytes, bytes in floating-point tensors)."""
    tensors = list(tensors)
    return (sum(t.nbytes for t in tensors),
            sum(t.nbytes for t in tensors if t.is_floating_point()))


def measure(settings: dict) -> dict:
    import torchvision
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    cfg = RunConfig(target_sparsity=0.0 if settings["pruning_method"] == "none" else 0.7,
                    **settings)
    opt = optim.build_optimizer(model, cfg)
    pruner = pruning.build_pruner(model, opt, cfg, total_steps=100)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])
    torch.nn.functional.cross_entropy(model(x), y).backward()
    pruner.before_step(1)
    opt.step()
    pruner.after_step(1)
    sd = pruner.state_dict()
    p_all, p_float = tensor_bytes(t for key in ("masks", "scores", "w0") for t in sd[key].values())
    o_all, _ = tensor_bytes(t for st in opt.state.values() for t in st.values()
                            if torch.is_tensor(t))
    n_prunable = sum(p.numel() for _, p in pruning.prunable_parameters(model, cfg))
    n_params = sum(p.numel() for p in model.parameters())
    return dict(prunable=n_prunable, params=n_params, pruner=p_all, pruner_float=p_float,
                optimizer=o_all)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    stamp = f"cpu | {datetime.date.today()} | torch {torch.__version__}"
    rows = ["| method | optimizer | prunable weights | pruner bytes | pruner B/weight "
            "| of which float B/weight | optimizer state bytes | optimizer B/param "
            "| device | date | versions |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|---|---|"]
    for label, settings in CASES:
        m = measure(settings)
        name = settings["optimizer"]
        if name == "adamwprune":
            name = f"adamwprune ({settings.get('adamwprune_base', 'adamw')})"
        n = m["prunable"]
        per_weight = f"{m['pruner'] / n:.2f}" if m["pruner"] else "0"
        rows.append(f"| {label} | {name} | {n:,} | {m['pruner']:,} | {per_weight} "
                    f"| {m['pruner_float'] / n:.2f} | {m['optimizer']:,} "
                    f"| {m['optimizer'] / m['params']:.2f} | {stamp} |")
    table = "\n".join(rows)
    print(table)
    if not args.no_write:
        text = ("# Pruning memory per weight (ResNet-18, 10 classes)\n\n"
                "Written by `scripts/bench/pruning_memory.py`; rerun it rather than editing.\n"
                "Pruner bytes are the tensors the pruner keeps (its state_dict: masks, scores,\n"
                "W0); prunable weights are the Linear/Conv2d weights without the output head.\n"
                "The state method (AdamWPrune) keeps only the bool mask: 1 byte per weight and\n"
                "no float buffer; its scores come from the optimizer's own exp_avg/exp_avg_sq.\n"
                "Optimizer state is counted over all parameters (AdamW: 8 bytes per\n"
                "parameter for exp_avg and exp_avg_sq; AMSGrad adds max_exp_avg_sq).\n"
                "See docs/pruning.md.\n\n" + table + "\n")
        with open(OUT + ".tmp", "w") as f:
            f.write(text)
        os.replace(OUT + ".tmp", OUT)
        print(f"wrote {os.path.relpath(OUT)}")


if __name__ == "__main__":
    main()
