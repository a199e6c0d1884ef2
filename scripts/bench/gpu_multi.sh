#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Several GPUs of one host, every measurement in one device run, through the matrix runner
# (scripts/engine/matrix.py, the same code as `make`), GPT-2 124M-shaped (defconfigs/gpt2-h200-2gpu,
# bf16, compiled) for STEPS optimizer steps of 64 x 1024 tokens:
#   g1      the run on 1 GPU (4 micro-steps of 16 sequences)
#   g2      the same global batch on 2 GPUs through torchrun (2 micro-steps of 16 per GPU)
#   g4      on 4 GPUs (1 micro-step of 16 per GPU), when the host has 4
#   jobs2   JOBS=2: two single-GPU runs at once (AdamW, AdamWPrune dense), one GPU each
#   solo    the AdamWPrune run of jobs2 alone (the AdamW one alone is g1)
#   kill    g2 again; rank 1 is SIGKILLed after step KILL_AT; then `continue` resumes it
# then scripts/bench/multi_gpu_report.py writes $OUT/multi-gpu.json and multi-gpu.md (scaling,
# loss curves, GPU samples, slowdowns, the failure's timing and the resumed final loss).
#
#   OUT=/tmp/out scripts/bench/gpu_multi.sh            2+ GPUs (~8 min on 2 H200s)
#   SMOKE=1 OUT=/tmp/out scripts/bench/gpu_multi.sh    CPU, tiny GPT-2: checks the plumbing (no DDP)
#
# Needs torch, numpy, kconfiglib (and nvidia-ml-py for the GPU samples); not make or a venv.
set -u
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-multi-out}
W=${WORK:-/tmp/gpu_multi}
STEPS=${STEPS:-300}
KILL_AT=${KILL_AT:-150}
export PYTHONUNBUFFERED=1
# NVLink multicast stays off on shared hosts (the device tool's KINDS.md); the runner passes
# the environment on to torchrun unchanged
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
export TORCH_SYMM_MEM_DISABLE_MULTICAST=${TORCH_SYMM_MEM_DISABLE_MULTICAST:-1}
export NVSHMEM_DISABLE_NVLS=${NVSHMEM_DISABLE_NVLS:-1}
cd "$(dirname "$0")/../.."
# no venv install on the GPU machine: this tree on the path of every python below
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
rm -rf "$W"
mkdir -p "$W" "$OUT"
LOG="$OUT/log.txt"
exec > >(tee "$LOG") 2>&1

if [ "${SMOKE:-0}" = 1 ]; then
	DEF=gpt2; NG=2; STEPS=${SMOKE_STEPS:-12}; KILL_AT=6
	COMMON="GPT2_MAX_STEPS=$STEPS GPT2_CHECKPOINT_INTERVAL=4 LOG_INTERVAL=2 \
MATRIX_PRUNING_MAGNITUDE=n MATRIX_PRUNING_STATE=n"
	G1="GPT2_GRAD_ACCUM=1"; G2="$G1"; G4="$G1"
else
	DEF=gpt2-h200-2gpu
	NG=$($PY -c "import torch; print(torch.cuda.device_count())")
	COMMON="GPT2_MAX_STEPS=$STEPS GPT2_CHECKPOINT_INTERVAL=100 GPT2_EVAL_INTERVAL=100000 \
LOG_INTERVAL=10 GPT2_WARMUP_STEPS=30"
	G1="GPUS=1 GPT2_GRAD_ACCUM=4"; G2="GPUS=2 GPT2_GRAD_ACCUM=2"; G4="GPUS=4 GPT2_GRAD_ACCUM=1"
fi
nvidia-smi -L 2>/dev/null
env | grep -E "^(NCCL|TORCH_SYMM|NVSHMEM)" | sort
echo "GPUs: $NG, steps: $STEPS, kill rank 1 after step $KILL_AT"

configure() {	# configure <name> <symbol=value...>: defconfig + overrides -> $W/<name>.config
	local name=$1
	shift
	KCONFIG_CONFIG="$W/$name.config" $PY -m scripts.engine.kconfig defconfig $DEF >/dev/null &&
		KCONFIG_CONFIG="$W/$name.config" $PY -m scripts.engine.kconfig set $COMMON "$@" >/dev/null
}

phase() {	# phase <name> <matrix.py command> [args]: run the matrix into $W/<name>
	local name=$1 cmd=$2
	shift 2
	echo "=== $name: matrix $cmd $* ($(date +%T))"
	local t0
	t0=$(date +%s.%N)
	KNLP_RESULTS="$W/$name" timeout "${PHASE_TIMEOUT:-240}" $PY -m scripts.engine.matrix "$cmd" \
		--config "$W/${CONFIG:-$name}.config" "$@"
	local rc=$?
	echo "$name $cmd $rc $t0 $(date +%s.%N)" >> "$W/phases.txt"
	echo "=== $name: exit $rc"
}

configure g1 $G1 && phase g1 run
configure g2 $G2 && phase g2 run
if [ "$NG" -ge 4 ] && [ "${SMOKE:-0}" != 1 ]; then configure g4 $G4 && phase g4 run; fi
configure jobs2 $G1 MATRIX_OPTIMIZER_ADAMWPRUNE=y && phase jobs2 run --jobs 2
configure solo $G1 MATRIX_OPTIMIZER_ADAMW=n MATRIX_OPTIMIZER_ADAMWPRUNE=y && phase solo run

# the kill: start g2's run, wait for step KILL_AT in its metrics, SIGKILL the rank-1 process
configure kill $G2
(
	for _ in $(seq 1 600); do
		metrics=$(ls "$W"/kill/runs/*/metrics.jsonl 2>/dev/null | head -n 1)
		if [ -n "$metrics" ] && $PY - "$metrics" "$KILL_AT" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if any(r.get("kind") == "train" and r["step"] >= int(sys.argv[2]) for r in rows) else 1)
EOF
		then
			for pid in $(pgrep -f "gpt2/train.py"); do
				rank=$(tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | sed -n 's/^RANK=//p')
				if [ "$rank" = 1 ] || { [ "${SMOKE:-0}" = 1 ] && [ -z "$rank" ]; }; then
					echo "killing pid $pid (rank ${rank:-single}) at $(date +%s.%N)" | tee "$W/killed.txt"
					kill -9 "$pid"
				fi
			done
			exit 0
		fi
		sleep 0.5
	done
) &
killer=$!
phase kill run
wait $killer
cp "$W"/kill/runs/*/status.json "$W/kill/status-after-kill.json" 2>/dev/null
CONFIG=kill phase kill continue

$PY -m scripts.bench.multi_gpu_report "$W" "$OUT" --kill-at "$KILL_AT"
