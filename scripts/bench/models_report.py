"""The report of scripts/bench/gpu_models.sh: models.json and models.md from the files of one
device run, every number in them read from those files.

    python -m scripts.bench.models_report RUNS OUT

RUNS is what gpu_models.sh leaves: steps.txt ("<step> <exit code> <seconds>" a line), the
run folders resnet18/ and resnet50/ of lib/trainer.py (summary.json, status.json,
config.json, metrics.jsonl) and bench.json, scripts/bench/trainer.py's report. A run that
failed leaves some of these out: its row says FAILED with the reason its status gives, and
without bench.json the GPT-2 row and the trainer section are left out. OUT gets models.json
(the numbers) and models.md (the tables), which is also printed.
"""
from __future__ import annotations

import argparse
import json
import os
import time

MODELS = ("resnet18", "resnet50")
CONFIG_KEYS = ("dataset", "width", "batch_size", "optimizer", "lr", "precision", "compile",
               "max_steps", "device")


def load(path: str):
    """A JSON file, or a JSON-lines file (.jsonl) as a list; None where it is missing or
    malformed (a run killed mid-write)."""
    try:
        with open(path) as f:
            if path.endswith(".json"):
                return json.load(f)
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError):
        return None


def read_steps(path: str) -> dict:
    """steps.txt: per step its exit code and wall seconds."""
    with open(path) as f:
        rows = [line.split() for line in f if line.strip()]
    return {name: {"exit": int(rc), "seconds": int(s)} for name, rc, s in rows}


def model_entry(run_dir: str) -> dict:
    """One model's run: status, environment, summary, config, and the train/eval curves and
    the first 50 GPU monitor samples from its metrics."""
    s, st, rows = (load(os.path.join(run_dir, f))
                   for f in ("summary.json", "status.json", "metrics.jsonl"))
    st, rows = st or {}, rows or []
    cfg = load(os.path.join(run_dir, "config.json")) or {}
    return {"status": st.get("status"), "reason": st.get("reason"),
            "environment": st.get("environment"), "summary": s,
            "config": {k: cfg.get(k) for k in CONFIG_KEYS},
            "train": [[r["step"], r["loss"], r["throughput"]] for r in rows
                      if r["kind"] == "train"],
            "eval": [[r["step"], r["loss"], r.get("accuracy")] for r in rows
                     if r["kind"] == "eval"],
            "gpu_samples": [[r.get("gpu_util"), r.get("gpu_mem_mb"), r.get("gpu_power_w")]
                            for r in rows if r["kind"] == "system"][:50]}


def collect(runs: str) -> dict:
    """The whole run as one document (models.json): device, date and versions from the
    trainer benchmark where it ran, else from the first model run that recorded them."""
    doc = {"steps": read_steps(os.path.join(runs, "steps.txt")),
           "models": {m: model_entry(os.path.join(runs, m)) for m in MODELS},
           "bench": load(os.path.join(runs, "bench.json"))}
    b = doc["bench"] or {}
    env = next((v["environment"] for v in doc["models"].values() if v.get("environment")),
               None) or {}
    doc["device"] = b.get("gpu") or env.get("gpu") or "cpu"
    doc["date"] = time.strftime("%Y-%m-%d")
    doc["versions"] = {k: b.get(k) or env.get(k) for k in ("torch", "triton", "cuda")}
    doc["versions"].update(git_commit=env.get("git_commit"), git_dirty=env.get("git_dirty"))
    return doc


def model_rows(doc: dict) -> list[str]:
    """The models table: a row per ResNet run, and GPT-2's from the trainer benchmark."""
    v = doc["versions"]
    lines = [f"# ResNet-18, ResNet-50 and GPT-2 on {doc['device']}, {doc['date']}", "",
             f"torch {v['torch']}, triton {v['triton']}, CUDA {v['cuda']}; git "
             f"{v['git_commit']} (dirty: {v['git_dirty']}). Produced by "
             "`scripts/bench/gpu_models.sh` in one device run; every number below is from "
             "that run (models.json beside this file holds them all).", "",
             "| model | data | steps x batch | precision / compile | train loss first -> last "
             "| final eval | throughput (median) | peak GPU memory | wall |",
             "|---|---|---|---|---|---|---|---|---|"]
    for m, e in doc["models"].items():
        s, c, t = e["summary"], e["config"], e["train"]
        if not s:
            lines.append(f"| {m} | | | | FAILED: {e['reason']} | | | | |")
            continue
        lines.append(
            f"| {m} (width {c['width']}) | {c['dataset']} 3x32x32 | {s['steps']} x "
            f"{c['batch_size']} | {c['precision']} / "
            f"{'compiled' if c['compile'] else 'eager'} | {t[0][1]:.3f} -> {t[-1][1]:.3f} | "
            f"accuracy {s['eval_accuracy']:.1f}%, loss {s['eval_loss']:.3f} | "
            f"{s['throughput']:,.0f} img/s | {s['peak_memory_mb']:,.0f} MiB | "
            f"{s['wall_time_s']:.0f} s |")
    b = doc["bench"]
    if b:
        t, c = b["trainer"], b["config"]
        lines.append(
            f"| gpt2 124M shape (vocab {c['vocab_size']}) | stdlib, byte tokens | "
            f"{t['window_steps'][1]} x {c['batch_size']} x {c['block_size']} | "
            f"{c['precision']} / compiled | {t['losses'][0][1]:.3f} -> {t['losses'][-1][1]:.3f} "
            f"| perplexity {t['val_perplexity']:.2f}, loss {t['val_loss']:.3f} | "
            f"{t['tokens_per_s']:,.0f} tokens/s | {t['peak_memory_mb']:,.0f} MiB | |")
    return lines


def trainer_section(b: dict) -> list[str]:
    """The trainer against the bare training step (scripts/bench/trainer.py's report)."""
    t, bf, bfe, c = b["trainer"], b["bare_fused"], b["bare_foreach"], b["config"]
    lines = ["", "## The trainer vs a bare training step (GPT-2 124M, bf16, torch.compile)", "",
             f"{c['batch_size']} sequences x {c['block_size']} tokens per optimizer step in "
             f"{c['grad_accum']} micro-steps; timed over steps {t['window_steps'][0]}-"
             f"{t['window_steps'][1]} (trainer) and {bf['steps']} steps after warm-up (bare); "
             f"MFU against 989.5 TFLOP/s, {b['flops_per_token'] / 1e6:.0f} MFLOP per token.",
             "", "| variant | tokens/s | MFU | peak GPU memory | vs bare (fused AdamW) |",
             "|---|---|---|---|---|"]
    for name, r in (("full trainer (lib/trainer.py, lib/optim.py AdamW)", t),
                    ("bare step, fused AdamW", bf), ("bare step, foreach AdamW", bfe)):
        lines.append(f"| {name} | {r['tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% | "
                     f"{r['peak_memory_mb']:,.0f} MiB | "
                     f"{r['tokens_per_s'] / bf['tokens_per_s']:.3f}x |")
    saves = t["checkpoint_s_in_window"]
    lines += ["",
              f"- trainer / bare fused: **{b['ratio_trainer_vs_bare_fused']:.3f}x** (target >= "
              f"0.95x); trainer / bare foreach: {b['ratio_trainer_vs_bare_foreach']:.3f}x; bare "
              f"foreach / fused: {b['ratio_bare_foreach_vs_fused']:.3f}x.",
              f"- checkpoints: {len(saves)} saves in the timed window, "
              f"{', '.join(f'{x:.2f} s' for x in saves)} on the training loop's path = "
              f"{100 * b['checkpoint_share']:.1f}% of it.",
              f"- data path (sampler, seeded windows, collate) alone: "
              f"{b['dataloader_ms_per_step']:.1f} ms of CPU per optimizer step, overlapped "
              "with the GPU's asynchronous work."]
    return lines


def markdown(doc: dict) -> str:
    lines = model_rows(doc)
    if doc["bench"]:
        lines += trainer_section(doc["bench"])
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", help="the run folder gpu_models.sh wrote (its RUNS)")
    ap.add_argument("out", help="folder for models.json and models.md (its OUT)")
    args = ap.parse_args(argv)
    doc = collect(args.runs)
    with open(os.path.join(args.out, "models.json"), "w") as f:
        json.dump(doc, f, indent=2)
    md = markdown(doc)
    with open(os.path.join(args.out, "models.md"), "w") as f:
        f.write(md)
    print(md, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
