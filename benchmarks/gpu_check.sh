#!/usr/bin/env bash
# One prepared GPU check, about 9-12 minutes on one H100: the CUDA tests (T = 1 rate-BP == BPTT
# in float64 and in bf16, CPU/CUDA parity, rate pass == spike average under bf16/fp16 autocast,
# CUDA memory release; the compiled spike pass over CUDA-graph replays: tests/test_compile.py,
# ~1-2 minutes of compilation), the ESD step of
# ResNet-18 at batch 128, T = 6 eager vs the compiled spike pass (RunConfig.compile) in fp32,
# TF32 and bf16 (benchmarks/compile_step.py, ~2-4 minutes: it compiles), and `esd bench` for
# ResNet-18/19 at batch 128 (CIFAR size) and
# PreAct-ResNet-34 at batch 32 (224 px, 1000 classes), T in {1, 2, 4, 6, 8}, bptt/ratebp/esd,
# fp32, bf16 and fp16 (autocast + gradient scaler), channels-last on and off; then the dry run of
# the paper grid on the GPU (every point of `reproduce --profile paper` for 2 steps on synthetic
# files, ImageNet through torchrun, the chapters; about a minute, in a scratch folder).
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]      # default OUT_DIR: results/bench/gpu
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh /tmp/dry   # tiny CPU rehearsal of the same calls
#   GPU_CHECK_MNIST=1 bash benchmarks/gpu_check.sh          # + the MNIST grid (~7 more minutes)
#   GPU_CHECK_ONLY_COMPILE=1 bash benchmarks/gpu_check.sh   # host, compile tests and timing only
#
# With GPU_CHECK_MNIST=1 it also re-runs the MNIST evidence grid (`--profile mnist`, chapter 11:
# 25 runs, 4 at a time) on the GPU as a fresh check of the committed CPU verdicts, writing
# OUT_DIR/mnist_comparison.md. A GPU machine without the internet needs MNIST carried to it:
# data/mnist/mnist_uint8.npz (55 MB, made by the first MNIST run here; `esd info` says where).
#
# Writes OUT_DIR/host.txt (GPU, driver, CPU, torch), OUT_DIR/tests.txt (pytest output),
# OUT_DIR/compile_tests.txt and OUT_DIR/compile_step/compile_step-<device>.json (the compiled
# step's timings, rewritten after each variant; a sub-folder, so that the bench records of
# OUT_DIR stay one kind of file) with OUT_DIR/compile_step.txt (its printout), one
# bench record per call (OUT_DIR/<bench_id>.json) and OUT_DIR/paper_dry_run.txt (the dry run's
# summary; its synthetic records stay in a temporary folder, never in results/). Runs most
# important first (channels-last, fp32 then bf16 then fp16), each call under its own time limit,
# and exits non-zero if any call failed. The CPU rehearsal runs fp32 and bf16 (fp16 needs CUDA).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/bench/gpu}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -n "${GPU_CHECK_DRY:-}" ]; then
  # batch 2, not 1: torch 2.14.1's oneDNN corrupts the heap in the bf16 weight gradient of a
  # 1x1 stride-2 convolution with 8 input channels at batch 1, channels-last, 2 threads (the
  # width-0.125 PreAct-ResNet-34's first shortcut; benchmarks/README.md, "Known issues")
  DEV=cpu; B_CIFAR=2; B_IMNET=2; TS=2; STEPS=1; WARMUP=1
  EXTRA=(--width 0.125 --threads "${OMP_NUM_THREADS:-2}")  # a pytest worker's share of the CPUs
  IMNET_SIZE=112; LIMIT=120; TESTS=(tests/test_cuda.py); PRECISIONS=(fp32 bf16)
  # the call's syntax on the smallest part of the grid (tests/test_paper_grid.py runs it all)
  PAPER_DRY=(--device cpu --only gradient_error --no-book); PAPER_LIMIT=120
  COMPILE_STEP=(--device cpu --width 0.125 --batch 2 --image-size 16 --T 2 --warmup 1 --steps 1
                --variants "eager fp32,default fp32,eager bf16")
  # collected, not run: `make test` runs these CPU tests itself
  COMPILE_TESTS=(--collect-only -m "not slow and not gpu" tests/test_compile.py); COMPILE_LIMIT=300
else
  DEV=cuda; B_CIFAR=128; B_IMNET=32; TS=1,2,4,6,8; STEPS=${GPU_CHECK_STEPS:-5}; WARMUP=2; EXTRA=()
  IMNET_SIZE=224; LIMIT=${GPU_CHECK_CALL_LIMIT:-100}; TESTS=(tests/test_cuda.py tests/test_bench.py)
  PRECISIONS=(fp32 bf16 fp16)
  PAPER_DRY=(--device cuda --gpus 1 --jobs 4); PAPER_LIMIT=${GPU_CHECK_PAPER_LIMIT:-150}
  # max-autotune is left out here (its autotuning alone takes minutes); --variants adds it
  COMPILE_STEP=(--device cuda --batch 128 --image-size 32 --T 6 --warmup 3 --steps 10
                --variants "eager fp32,reduce-overhead fp32,default fp32,eager bf16,reduce-overhead bf16,eager tf32,reduce-overhead tf32")
  COMPILE_TESTS=(-m gpu tests/test_compile.py); COMPILE_LIMIT=${GPU_CHECK_COMPILE_LIMIT:-300}
fi
fail=0
{
  date -u +"%Y-%m-%dT%H:%M:%SZ"
  git rev-parse HEAD 2>/dev/null || echo "git revision: unknown"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 || true
  lscpu | grep -E "^Model name|^CPU\(s\)" || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$OUT/host.txt" 2>&1
cat "$OUT/host.txt"

run() {
  echo "== $*"
  timeout "$LIMIT" "$@"
  local rc=$?
  if [ $rc -ne 0 ]; then echo "FAILED (exit $rc): $*"; fail=1; fi
  return $rc  # callers in a pipeline (| tee) read it from PIPESTATUS: fail=1 is lost there
}

# the compiled spike pass: its exactness tests on $DEV, then the step timed there
if [ -z "${GPU_CHECK_ONLY_COMPILE:-}" ]; then
  run "$PY" -m pytest -q -p no:cacheprovider -m gpu "${TESTS[@]}" 2>&1 | tee "$OUT/tests.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
fi
LIMIT_BEFORE=$LIMIT; LIMIT=$COMPILE_LIMIT
run "$PY" -m pytest -q -p no:cacheprovider "${COMPILE_TESTS[@]}" 2>&1 | tee "$OUT/compile_tests.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
run "$PY" benchmarks/compile_step.py "${COMPILE_STEP[@]}" --out "$OUT/compile_step" 2>&1 \
  | tee "$OUT/compile_step.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || fail=1
LIMIT=$LIMIT_BEFORE
if [ -n "${GPU_CHECK_ONLY_COMPILE:-}" ]; then
  ls -l "$OUT"
  exit $fail
fi

common=(--device "$DEV" --methods bptt,ratebp,esd --T "$TS" --steps "$STEPS" --warmup "$WARMUP"
        --no-peak --quiet-wait 0 --no-progress --out "$OUT" "${EXTRA[@]}")
for layout in --channels-last --no-channels-last; do
  for precision in "${PRECISIONS[@]}"; do
    run "$PY" -m esdlib.bench "${common[@]}" $layout --precision "$precision" \
      --arch spiking_resnet18,spiking_resnet19 --batch "$B_CIFAR" --image-size 32
    run "$PY" -m esdlib.bench "${common[@]}" $layout --precision "$precision" \
      --arch preact_spiking_resnet34 --batch "$B_IMNET" --image-size "$IMNET_SIZE" \
      --num-classes 1000
  done
done
# the paper grid's dry run on this machine's device, in a scratch folder removed afterwards
DRY_DIR=$(mktemp -d "${TMPDIR:-/tmp}/esd-paper-dry-run.XXXXXX")
echo "== paper grid dry run (${PAPER_DRY[*]}) in $DRY_DIR"
PYTHONPATH="book${PYTHONPATH:+:$PYTHONPATH}" timeout "$PAPER_LIMIT" \
  "$PY" -m esdbook reproduce --profile paper --dry-run --quiet \
  --dry-run-dir "$DRY_DIR/run" "${PAPER_DRY[@]}" > "$OUT/paper_dry_run.txt" 2>&1
rc=$?
tail -n 5 "$OUT/paper_dry_run.txt"
if [ $rc -ne 0 ]; then echo "FAILED (exit $rc): paper grid dry run"; fail=1; fi
rm -rf "$DRY_DIR"
if [ -n "${GPU_CHECK_MNIST:-}" ]; then
  # the MNIST evidence grid on this device, compared with the committed CPU records (its own
  # scratch folder; the verdicts, not the digits, are expected to agree across devices)
  MNIST_DIR=$(mktemp -d "${TMPDIR:-/tmp}/esd-mnist.XXXXXX")
  MNIST_ARGS=(--jobs 4); [ -n "${GPU_CHECK_DRY:-}" ] && MNIST_ARGS=(--jobs 1 --only mnist --seeds 0)
  echo "== MNIST grid (${MNIST_ARGS[*]}) in $MNIST_DIR"
  PYTHONPATH="book${PYTHONPATH:+:$PYTHONPATH}" timeout "${GPU_CHECK_MNIST_LIMIT:-480}" \
    "$PY" -m esdbook reproduce --profile mnist --fresh "$MNIST_DIR/run" --quiet \
    "${MNIST_ARGS[@]}" > "$OUT/mnist_fresh.txt" 2>&1
  rc=$?
  tail -n 8 "$OUT/mnist_fresh.txt"
  cp "$MNIST_DIR/run/comparison.md" "$OUT/mnist_comparison.md" 2>/dev/null
  # 1 = a verdict changed (reported, not a failure of the check); other codes are failures
  if [ $rc -ne 0 ] && [ $rc -ne 1 ]; then echo "FAILED (exit $rc): MNIST grid"; fail=1; fi
  rm -rf "$MNIST_DIR"
fi
ls -l "$OUT"
exit $fail
