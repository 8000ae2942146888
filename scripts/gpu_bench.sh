#!/usr/bin/env bash
# Every GPU measurement issue 5 asks for, in parts that each fit a 10-minute GPU session call. Run from the repo
# root on a CUDA machine with the project installed; results (logs, JSON lines, the sweep's fit) go to OUT.
#   bash scripts/gpu_bench.sh OUT test yardstick-small    # then, in further calls:
#   bash scripts/gpu_bench.sh OUT yardstick-large packing sweep
# Parts: test (the GPU tests), yardstick-small / yardstick-large (Lightning vs bare loop vs nanoGPT's table at the
# issue's shapes, CUDA graphs on), packing (aggregate tokens/s of 1, 2, 4 runs of the smallest size on one GPU),
# plan (h100_quick's plan=true estimate on this GPU, to hold against the sweep part's measured wall time),
# sweep (sweep=h100_quick end to end, timed, fit included).
set -euo pipefail
out=${1:?usage: bash scripts/gpu_bench.sh OUT PART...}; shift
mkdir -p "$out"
export SCALING_LAB_CACHE=${SCALING_LAB_CACHE:-$out/cache}
yardstick=(--device cuda --vocab 50304 --block 1024 --batch 64 --warmup 10 --steps 30 --compile-mode reduce-overhead
           --json)
command -v nvidia-smi > /dev/null || { echo "gpu_bench.sh: needs a CUDA machine (no nvidia-smi)" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt"
for part in "$@"; do
  case $part in
    test) python -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$out/test.log" ;;
    yardstick-small) python scripts/bench_throughput.py "${yardstick[@]}" --sizes gpt-7m,gpt-16m,gpt-30m \
                       2>&1 | tee "$out/yardstick-small.log" ;;
    yardstick-large) python scripts/bench_throughput.py "${yardstick[@]}" --sizes gpt-51m,gpt-124m,gpt-253m \
                       2>&1 | tee "$out/yardstick-large.log" ;;
    packing) python scripts/bench_packing.py --ks 1,2,4 --size small-1 --tokens 5e7 --results "$out/packing" -- \
               model.block_size=1024 train.batch_size=64 2>&1 | tee "$out/packing.log" ;;
    plan) python -m scaling_lab.cli sweep sweep=h100_quick results_dir="$out/h100_quick" plan=true \
            2>&1 | tee "$out/plan.log" ;;
    sweep) start=$(date +%s)
           python -m scaling_lab.cli sweep sweep=h100_quick results_dir="$out/h100_quick" logger=none progress=false \
             2>&1 | tee "$out/sweep.log"
           echo "h100_quick wall time: $(( $(date +%s) - start )) s" | tee -a "$out/sweep.log" ;;
    *) echo "gpu_bench.sh: unknown part '$part' (test, yardstick-small, yardstick-large, packing, plan, sweep)" >&2; exit 2 ;;
  esac
done
