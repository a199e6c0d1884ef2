#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The GPU runs behind results/gpu/models-<date>-<gpu>.md: a few hundred steps each of
# ResNet-18 (compiled) and ResNet-50 (eager, 32x32) on the shipped digits and GPT-2 124M
# (bf16, compiled, through scripts/bench/trainer.py, which also times the trainer against
# a bare training step), with loss, throughput and peak memory; then models.json/models.md
# (scripts/bench/models_report.py).
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

$PY -m scripts.bench.models_report "$RUNS" "$OUT" 2>&1 | tee -a "$LOG"
cp "$RUNS"/bench.json "$OUT"/ 2>/dev/null || true
