#!/usr/bin/env bash
# GPU check of kernels/: the verification grid on large and odd shapes, the GPU-only tests,
# the persistent autotuning, and the benchmark against torch. Run from the repository root on
# a CUDA machine (the device tool runs it with $OUT set; elsewhere reports go to
# results/kernels/gpu-check/):
#
#     bash scripts/bench/gpu_check_kernels.sh            # ~5 minutes on one H100
#
# Stages, each logged; a failing stage does not stop the next (the log says which failed):
#   1. compile in parallel: Triton compiles one kernel at a time per process (~1-2 s each for
#      sm_90), so 4 processes warm the shared compile cache with every benchmark candidate
#      plan (KERNELS_AUTOTUNE=compile) while 4 more run the verification grid in shards;
#   2. the GPU-only tests (tests/kernels/test_kernels_gpu.py, and training under CUDA graphs:
#      tests/lib/test_trainer_cudagraphs_gpu.py, the ResNet-18 GPU data path's resume);
#   3. the benchmark, alone on the GPU: it tunes (timing only, compiles are cached), writes the
#      autotune cache to $OUT/autotune/, and reports to $OUT/bench.json and $OUT/bench.md;
#   4. with GPT2=1, GPT-2 124M trained with the torch reference and with the kernels (200
#      steps each, reduce-overhead, the same autotune cache; ~2 min on the H200):
#      $OUT/gpt2.json, $OUT/gpt2.md, log $OUT/gpt2.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
# no venv install on the GPU machine: this tree on the path of every python below
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-results/kernels/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export KERNELS_CACHE_DIR="$OUT/autotune"
# the persistent and TMA plans join the tuning by default (KERNELS_PERSISTENT / KERNELS_TMA
# set to 0 leave them out; docs/kernels.md); stream-K is experimental, never tuned in
PY=${PYTHON:-python3}
SHARDS=${SHARDS:-4}
BUDGET=${BENCH_BUDGET:-200}      # seconds of benchmark cases (each case ends the budget check)
STAGE1=${STAGE1_TIMEOUT:-240}    # seconds for the parallel compile + verification stage
LOG="$OUT/gpu_check.log"
TMP=$(mktemp -d)
status=0

stage() { echo; echo "=== $* ($(date +%T))"; }
exec > >(tee "$LOG") 2>&1

stage "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name(), torch.cuda.get_device_capability())"

stage "1. precompile benchmark plans ($SHARDS procs) + verification grid ($SHARDS procs)"
pids=()
for i in $(seq 0 $((SHARDS - 1))); do
	KERNELS_AUTOTUNE=compile timeout "$STAGE1" $PY -m scripts.bench.kernel_ops --precompile \
		--shard "$i/$SHARDS" --ops matmul attention sparse >"$TMP/pre-$i.log" 2>&1 &
	pids+=($!)
	KERNELS_AUTOTUNE=0 timeout "$STAGE1" $PY -m kernels.verify --backend triton --grid full \
		--shard "$i/$SHARDS" --json "$TMP/verify-$i.json" >"$TMP/verify-$i.log" 2>&1 &
	pids+=($!)
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
for i in $(seq 0 $((SHARDS - 1))); do
	tail -n 3 "$TMP/pre-$i.log"
	grep -E "^FAIL|checks passed|Error|error" "$TMP/verify-$i.log" | head -n 40
done
$PY - "$TMP" "$OUT/verify.json" <<'EOF'
import glob, json, sys
rows, meta = [], {}
for path in sorted(glob.glob(sys.argv[1] + "/verify-*.json")):
    data = json.load(open(path))
    meta = data["meta"]
    rows += data["results"]
bad = [r for r in rows if not r["ok"]]
json.dump({"meta": meta, "results": rows}, open(sys.argv[2], "w"), indent=1)
print(f"verification: {len(rows) - len(bad)}/{len(rows)} checks passed")
worst = {}
for r in rows:
    if r["err"] is not None:
        key = (r["op"], r["dtype"])
        worst[key] = max(worst.get(key, 0.0), r["err"] / r["tol"])
for (op, dt), w in sorted(worst.items()):
    print(f"  {op:20s} {dt:9s} worst err/tol {w:.3f}")
for r in bad[:30]:
    print("  FAIL", r["case"], r["stage"], r["err"], r["error"])
sys.exit(1 if bad else 0)
EOF
[ $? -eq 0 ] || status=1

stage "2. GPU-only tests"
$PY -m pytest -q -p no:cacheprovider tests/kernels/test_kernels_gpu.py tests/lib/test_trainer_cudagraphs_gpu.py \
	tests/models/test_resnet18.py::test_gpu_path_under_cuda_graphs_resumes_on_the_same_batches || status=1

stage "3. benchmark (time budget ${BUDGET}s)"
$PY -m scripts.bench.kernel_ops --out "$OUT/bench.json" --md "$OUT/bench.md" \
	--time-budget "$BUDGET" --ops matmul attention sparse overhead || status=1

if [ "${GPT2:-0}" = 1 ]; then
	stage "4. GPT-2 124M, torch reference vs kernels"
	$PY -m scripts.bench.gpt2_kernels --out "$OUT/gpt2.json" --md "$OUT/gpt2.md" \
		--compile-mode reduce-overhead --no-noise-run \
		--noise-from results/kernels/gpt2-kernels-2026-11-23-h100.json >"$OUT/gpt2.log" 2>&1 \
		|| status=1
	tail -n 2 "$OUT/gpt2.log"
fi

stage "autotune cache"
$PY -m kernels.autotune --show | head -n 60
stage "done: status $status"
rm -rf "$TMP"
exit $status
