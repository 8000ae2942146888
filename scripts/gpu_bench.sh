#!/usr/bin/env bash
# Every GPU measurement issue 5 asks for, in parts that each fit a 10-minute GPU session call. Run from the repo
# root on a CUDA machine after `bash scripts/gpu_setup.sh install`, one call per line:
#   bash scripts/gpu_bench.sh OUT test yardstick-small packing
#   bash scripts/gpu_bench.sh OUT yardstick-large
#   bash scripts/gpu_bench.sh OUT sweep
# Parts: test (the GPU tests), yardstick-small / yardstick-large (Lightning vs bare loop vs nanoGPT's table at the
# issue's shapes, CUDA graphs on; each also writes its Markdown table), packing (aggregate steady tokens/s of 1, 4,
# then 2 runs of the smallest size on one GPU: a call cut short still has the target's k=4), plan (h100_quick's
# plan=true estimate on this GPU, to hold against the sweep part's measured wall time), sweep (sweep=h100_quick
# end to end from a cold token cache, timed, fit included; past SWEEP_LIMIT_S seconds (default 450) it is stopped and
# what finished is fitted, so that the call still reports within its 10 minutes).
# OUT receives only small flat files (a device call returns at most 8): gpu.txt, PART.log, yardstick-*.md and
# h100_quick-report.md; all five parts in one call would make 9 (and take far longer than 10 minutes). Token caches,
# run directories and checkpoints go to WORK (default /tmp/scaling-lab-gpu-bench); on a machine still warm from an
# earlier call, a stopped sweep resumes there.
set -euo pipefail
out=${1:?usage: bash scripts/gpu_bench.sh OUT PART...}; shift
work=${WORK:-/tmp/scaling-lab-gpu-bench}
py=${PYTHON:-python3}  # the GPU machine's python3 is the interpreter that holds its CUDA torch
mkdir -p "$out" "$work"
# the checkout on the path: scripts/*.py and the packed launcher's children import it even where gpu_setup.sh
# could not pip-install it
export SCALING_LAB_CACHE=${SCALING_LAB_CACHE:-$work/cache} PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
yardstick=(--device cuda --vocab 50304 --block 1024 --batch 64 --warmup 10 --steps 30 --compile-mode reduce-overhead
           --json)
for part in "$@"; do
  case $part in
    test | yardstick-small | yardstick-large | packing | plan | sweep) ;;
    *) echo "gpu_bench.sh: unknown part '$part' (test, yardstick-small, yardstick-large, packing, plan, sweep)" >&2
       exit 2 ;;
  esac
done
command -v nvidia-smi > /dev/null || { echo "gpu_bench.sh: needs a CUDA machine (no nvidia-smi)" >&2; exit 2; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt"

# Each part returns non-zero on failure; the parts after it still run (a call is too dear to stop at the first).
yardstick_part() {  # NAME SIZES: the table covers the sizes measured before any failure
  local rc=0
  "$py" scripts/bench_throughput.py "${yardstick[@]}" --sizes "$2" 2>&1 | tee "$out/$1.log" || rc=$?
  "$py" scripts/throughput_table.py "$out/$1.log" | tee "$out/$1.md" || rc=1
  return "$rc"
}

sweep_part() {
  local results=$work/h100_quick start rc=0
  start=$(date +%s)
  # SIGTERM at the limit: the packed launcher passes it on, each run checkpoints and stops within seconds. The
  # SIGKILL after that also kills the runs still going (they die with the launcher): time for five runs to finish a
  # step or validation pass and save, still within the call's 10 minutes (limit + 60 + the fit's 60)
  timeout --kill-after=60 "${SWEEP_LIMIT_S:-450}" "$py" -m scaling_lab.cli sweep sweep=h100_quick \
    results_dir="$results" logger=none progress=false || rc=$?
  echo "h100_quick wall time: $(( $(date +%s) - start )) s (exit code $rc; 124 = stopped at SWEEP_LIMIT_S)"
  "$py" -m scaling_lab.cli status results_dir="$results" || true
  if [ "$rc" -ne 0 ]; then  # stopped or failed: fit whatever completed, so that the call still brings a report
    timeout 60 "$py" -m scaling_lab.cli fit input="$results" || echo "fit of the partial sweep failed"
  fi
  if [ -f "$results/fit/report.md" ]; then cp "$results/fit/report.md" "$out/h100_quick-report.md"; fi
  return "$rc"
}

failed=()
for part in "$@"; do
  echo "=== gpu_bench.sh $part ($(date -u +%H:%M:%S))"
  case $part in
    test) "$py" -m pytest -q -m gpu tests/test_gpu.py 2>&1 | tee "$out/test.log" ;;
    yardstick-small) yardstick_part yardstick-small gpt-7m,gpt-16m,gpt-30m ;;
    yardstick-large) yardstick_part yardstick-large gpt-51m,gpt-124m,gpt-253m ;;
    packing) rm -rf "$work/packing"  # fresh runs: completed ones would be skipped, not measured
             "$py" scripts/bench_packing.py --ks 1,4,2 --size small-1 --tokens 5e7 --results "$work/packing" -- \
               model.block_size=1024 train.batch_size=64 2>&1 | tee "$out/packing.log" ;;
    plan) "$py" -m scaling_lab.cli sweep sweep=h100_quick results_dir="$work/h100_quick" plan=true 2>&1 \
            | tee "$out/plan.log" ;;
    sweep) sweep_part 2>&1 | tee "$out/sweep.log" ;;
  esac || failed+=("$part")
done
[ ${#failed[@]} -eq 0 ] || { echo "gpu_bench.sh: failed: ${failed[*]}" >&2; exit 1; }
