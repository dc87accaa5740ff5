#!/usr/bin/env bash
# The prepared GPU check: one command for a session whose task is lent a GPU machine.
#
# What it runs (each part's output under $OUT, default /tmp/gpu_check):
#   1. the CUDA tests (tests/test_fastpath_gpu.py: OVERLAP halves on two streams,
#      the pool's release events, and with 2+ GPUs two NCCL ranks vs reference/);
#   2. fastpath on CUDA, differentially checked against reference/ (--check),
#      for schedules that fit the GPUs there: one rank per GPU, so on one GPU the
#      one-rank DualPipeV (its OVERLAP pairs), ZB-V and 1F1B; on 2+ GPUs also
#      DualPipe and ZB-H1 on 2 ranks; float64 and float32, MLP and transformer;
#   3. the fastpath suite on gloo (CPU), which a quiet many-core machine runs
#      without the noise of a 2-core CI box;
#   4. conformance (benchmarks/conformance_gloo.py): schedules' communication on
#      real NCCL ranks against `check --comm-model nccl` with eager init
#      (init_process_group(device_id=...)) and `nccl-pairs` without (lazy
#      init), 128 MiB messages (above what NCCL buffers); one rank per GPU, so
#      rank counts above the GPU count are skipped and the log says so (on one
#      GPU every schedule needs two ranks on it: all skipped, the part passes
#      saying "SKIPPED"). BACKEND=gloo runs it on gloo against `gloo` instead.
# It needs torch with CUDA, numpy, pytest and hypothesis (the device image has
# them); z3-solver is optional (without it the checker decides with the graph
# engine, as `--engine graph`). Run from the repository root:
#   bash benchmarks/gpu_check.sh
# Exit status: 0 when every part passed, else the number of failed parts.
# BACKEND=gloo runs part 2 on CPU instead (a dry run of this script, no GPU needed).
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-/tmp/gpu_check}"
BACKEND="${BACKEND:-nccl}"
mkdir -p "$OUT"
py=python3
failed=0
part() {  # part NAME COMMAND...: run, log to $OUT/NAME.log, count a failure
    local name=$1; shift
    echo "== $name: $*"
    if "$@" >"$OUT/$name.log" 2>&1; then echo "   ok"; else echo "   FAILED (rc $?)"; failed=$((failed + 1)); fi
    tail -n 4 "$OUT/$name.log" | sed 's/^/   | /'
}
$py - <<'EOF' | tee "$OUT/env.txt"
import torch
n = torch.cuda.device_count()
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", n,
      [torch.cuda.get_device_name(i) for i in range(n)])
try:
    import z3
    print("z3", z3.get_version_string())
except ImportError:
    print("z3 not installed: the checker uses the graph engine")
EOF
ngpu=$($py -c "import torch; print(torch.cuda.device_count())")
if [ "$BACKEND" = gloo ]; then ngpu=2
elif [ "$ngpu" -lt 1 ]; then echo "no CUDA device: nothing to check here"; exit 1; fi

part gpu_tests $py -m pytest -q -p no:cacheprovider -rs tests/test_fastpath_gpu.py

sched="$OUT/schedules"; mkdir -p "$sched"
runs=("dualpipev 1 4" "zbv 1 4" "1f1b 1 4")
if [ "$ngpu" -ge 2 ]; then runs+=("dualpipe 2 8" "zb-h1 2 4" "dualpipev 2 8"); fi
for r in "${runs[@]}"; do
    set -- $r
    f="$sched/$1_$2x$3.json"
    $py -m verifier generate "$1" --ranks "$2" --microbatches "$3" -o "$f" || { failed=$((failed + 1)); continue; }
    for dtype in float64 float32; do
        for model in mlp transformer; do
            part "fastpath_$1_$2x$3_${dtype}_$model" $py -m fastpath run "$f" --nproc "$2" \
                --backend "$BACKEND" --check --dtype "$dtype" --model "$model" --watchdog-seconds 120 \
                --trace "$sched/trace_$1_$2x$3_${dtype}_$model.json"
        done
    done
done

if [ "$BACKEND" = gloo ]; then
    part conformance_gloo $py benchmarks/conformance_gloo.py --backend gloo --count 60 --ranks 2,3
else
    part conformance_nccl_eager_init $py benchmarks/conformance_gloo.py --backend nccl --eager-init \
        --count 150 --ranks 2,3,4
    part conformance_nccl_lazy_init $py benchmarks/conformance_gloo.py --backend nccl \
        --count 150 --ranks 2,3,4
fi

part gloo_suite $py -m pytest -q -p no:cacheprovider tests/test_fastpath.py tests/test_fastpath_multiprocess.py

echo "parts failed: $failed (logs in $OUT)"
exit "$failed"
