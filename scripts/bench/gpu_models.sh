#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The GPU runs behind results/gpu/models-<date>-<gpu>.md: a few hundred steps each of
# ResNet-18 (compiled) and ResNet-50 (eager, 32x32) on the shipped digits and GPT-2 124M
# (bf16, compiled, through scripts/bench/trainer.py, which also times the trainer against
# a bare training step), with loss, throughput and peak memory; then models.json/models.md.
#
#   OUT=/tmp/out scripts/bench/gpu_models.sh            one GPU, under 7 min on an H100
#   SMOKE=1 OUT=/tmp/out scripts/bench/gpu_models.sh    CPU, tiny sizes: checks this script
#
# Plain `python3 <model>/train.py` flags: needs torch, numpy, scikit-learn (digits), psutil
# and nvidia-ml-py (monitor); not kconfiglib or trackio.
set -u
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")/../.."
# no venv install on the GPU machine: this tree on the path of every python below
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-out}
RUNS=${RUNS:-/tmp/gpu_models}
mkdir -p "$OUT"
rm -rf "$RUNS"
mkdir -p "$RUNS"
LOG="$OUT/log.txt"
: > "$LOG"

if [ "${SMOKE:-0}" = 1 ]; then
	DEV="--device cpu --precision fp32"; R18="--width 8 --max-steps 12"; R50="--width 4 --max-steps 8"
	BENCH="--smoke --steps 20 --warm 5 --bare-steps 6 --bare-warm 2"; COMPILE=""; BS=32
else
	DEV="--device cuda --precision bf16"; R18="--width 64 --max-steps 300"; R50="--width 64 --max-steps 200"
	BENCH=""; COMPILE="--compile"; BS=128
fi
COMMON="--dataset digits --batch-size $BS --optimizer sgd --lr 0.1 --log-interval 25 \
--eval-interval 100 --monitor-interval 2"

step() {	# step <name> <timeout s> <command...>: run, log, record the exit code
	local name=$1 limit=$2
	shift 2
	echo "=== $name: $*" | tee -a "$LOG"
	local t0=$SECONDS
	timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
	local rc=${PIPESTATUS[0]}
	echo "=== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$LOG"
	echo "$name $rc $((SECONDS - t0))" >> "$RUNS/steps.txt"
}

{ nvidia-smi 2>&1 || true; $PY -c "import torch, sys; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'cuda', torch.version.cuda, 'gpus', torch.cuda.device_count())"; } \
	2>&1 | tee -a "$LOG"

step resnet18 120 $PY resnet18/train.py $DEV $COMPILE $COMMON $R18 --weight-decay 5e-4 \
	--checkpoint-interval 150 --out-dir "$RUNS/resnet18"
step resnet50 80 $PY resnet50/train.py $DEV $COMMON $R50 --weight-decay 1e-4 \
	--checkpoint-interval 100 --out-dir "$RUNS/resnet50"
step bench_trainer 210 $PY -m scripts.bench.trainer $BENCH --work "$RUNS/bench" \
	--out "$RUNS/bench.json"

$PY - "$RUNS" "$OUT" <<'PYEOF' 2>&1 | tee -a "$LOG"
import json, os, sys, time
runs, out = sys.argv[1], sys.argv[2]
def load(path):
    try:
        with open(path) as f:
            return json.load(f) if path.endswith(".json") else [json.loads(l) for l in f if l.strip()]
    except (OSError, ValueError):
        return None
steps = {l.split()[0]: {"exit": int(l.split()[1]), "seconds": int(l.split()[2])}
         for l in open(os.path.join(runs, "steps.txt"))}
doc = {"steps": steps, "models": {}, "bench": load(os.path.join(runs, "bench.json"))}
for m in ("resnet18", "resnet50"):
    d = os.path.join(runs, m)
    s, st, rows = (load(os.path.join(d, f)) for f in ("summary.json", "status.json", "metrics.jsonl"))
    cfg = load(os.path.join(d, "config.json")) or {}
    doc["models"][m] = {"status": (st or {}).get("status"), "reason": (st or {}).get("reason"),
                        "environment": (st or {}).get("environment"), "summary": s,
                        "config": {k: cfg.get(k) for k in ("dataset", "width", "batch_size", "optimizer",
                                   "lr", "precision", "compile", "max_steps", "device")},
                        "train": [[r["step"], r["loss"], r["throughput"]] for r in rows or [] if r["kind"] == "train"],
                        "eval": [[r["step"], r["loss"], r.get("accuracy")] for r in rows or [] if r["kind"] == "eval"],
                        "gpu_samples": [[r.get("gpu_util"), r.get("gpu_mem_mb"), r.get("gpu_power_w")]
                                        for r in rows or [] if r["kind"] == "system"][:50]}
b = doc["bench"] or {}
env = next((v["environment"] for v in doc["models"].values() if v.get("environment")), {}) or {}
doc["device"] = b.get("gpu") or env.get("gpu") or "cpu"
doc["date"] = time.strftime("%Y-%m-%d")
doc["versions"] = {"torch": b.get("torch") or env.get("torch"), "triton": b.get("triton") or env.get("triton"),
                   "cuda": b.get("cuda") or env.get("cuda"), "git_commit": env.get("git_commit"),
                   "git_dirty": env.get("git_dirty")}
with open(os.path.join(out, "models.json"), "w") as f:
    json.dump(doc, f, indent=2)

L = [f"# ResNet-18, ResNet-50 and GPT-2 on {doc['device']}, {doc['date']}", "",
     f"torch {doc['versions']['torch']}, triton {doc['versions']['triton']}, CUDA {doc['versions']['cuda']}; "
     f"git {doc['versions']['git_commit']} (dirty: {doc['versions']['git_dirty']}). Produced by "
     "`scripts/bench/gpu_models.sh` in one device run; every number below is from that run (models.json "
     "beside this file holds them all).", "",
     "| model | data | steps x batch | precision / compile | train loss first -> last | final eval | "
     "throughput (median) | peak GPU memory | wall |", "|---|---|---|---|---|---|---|---|---|"]
for m, v in doc["models"].items():
    s, c, t = v["summary"], v["config"], v["train"]
    if not s:
        L.append(f"| {m} | | | | FAILED: {v['reason']} | | | | |")
        continue
    L.append(f"| {m} (width {c['width']}) | {c['dataset']} 3x32x32 | {s['steps']} x {c['batch_size']} | "
             f"{c['precision']} / {'compiled' if c['compile'] else 'eager'} | {t[0][1]:.3f} -> {t[-1][1]:.3f} | "
             f"accuracy {s['eval_accuracy']:.1f}%, loss {s['eval_loss']:.3f} | {s['throughput']:,.0f} img/s | "
             f"{s['peak_memory_mb']:,.0f} MiB | {s['wall_time_s']:.0f} s |")
if b:
    t, bf, bfe, c = b["trainer"], b["bare_fused"], b["bare_foreach"], b["config"]
    L.append(f"| gpt2 124M shape (vocab {c['vocab_size']}) | stdlib, byte tokens | {t['window_steps'][1]} x "
             f"{c['batch_size']} x {c['block_size']} | {c['precision']} / compiled | {t['losses'][0][1]:.3f} -> "
             f"{t['losses'][-1][1]:.3f} | perplexity {t['val_perplexity']:.2f}, loss {t['val_loss']:.3f} | "
             f"{t['tokens_per_s']:,.0f} tokens/s | {t['peak_memory_mb']:,.0f} MiB | |")
    L += ["", "## The trainer vs a bare training step (GPT-2 124M, bf16, torch.compile)", "",
          f"{c['batch_size']} sequences x {c['block_size']} tokens per optimizer step in {c['grad_accum']} "
          f"micro-steps; timed over steps {t['window_steps'][0]}-{t['window_steps'][1]} (trainer) and "
          f"{bf['steps']} steps after warm-up (bare); MFU against 989.5 TFLOP/s, "
          f"{b['flops_per_token'] / 1e6:.0f} MFLOP per token.", "",
          "| variant | tokens/s | MFU | peak GPU memory | vs bare (fused AdamW) |", "|---|---|---|---|---|"]
    for name, r in (("full trainer (lib/trainer.py, lib/optim.py AdamW)", t),
                    ("bare step, fused AdamW", bf), ("bare step, foreach AdamW", bfe)):
        L.append(f"| {name} | {r['tokens_per_s']:,.0f} | {100 * r['mfu']:.1f}% | {r['peak_memory_mb']:,.0f} MiB | "
                 f"{r['tokens_per_s'] / bf['tokens_per_s']:.3f}x |")
    L += ["", f"- trainer / bare fused: **{b['ratio_trainer_vs_bare_fused']:.3f}x** (target >= 0.95x); "
          f"trainer / bare foreach: {b['ratio_trainer_vs_bare_foreach']:.3f}x; bare foreach / fused: "
          f"{b['ratio_bare_foreach_vs_fused']:.3f}x.",
          f"- checkpoints: {len(t['checkpoint_s_in_window'])} saves in the timed window, "
          f"{', '.join(f'{x:.2f} s' for x in t['checkpoint_s_in_window'])} on the training loop's path = "
          f"{100 * b['checkpoint_share']:.1f}% of it.",
          f"- data path (sampler, seeded windows, collate) alone: {b['dataloader_ms_per_step']:.1f} ms of CPU "
          "per optimizer step, overlapped with the GPU's asynchronous work."]
with open(os.path.join(out, "models.md"), "w") as f:
    f.write("\n".join(L) + "\n")
print("\n".join(L))
PYEOF
cp "$RUNS"/bench.json "$OUT"/ 2>/dev/null || true
