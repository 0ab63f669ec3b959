#!/usr/bin/env bash
# The GPU benchmarks in one call of about 8 minutes (benchmarks/gpu_setup.md). On the GPU machine, from the
# repository root, with .whl/ carried (benchmarks/gpu_carry.sh fills it):   bash benchmarks/gpu_suite.sh
# Here, every step on tiny models on the CPU, one thread (< 3 minutes):     bash benchmarks/gpu_suite.sh --smoke
# Steps, each under its own time cap and none past BUDGET seconds: live end to end + Denoiser + plain pipeline
# (512, 1 step, ControlNet, TAESD-XL, fused LoRA), stills 7 styles x 4 variants at 1024 (re-id stand-in without
# OpenVINO), LoRA training s/step at 1024, the square's resize/paste on the device beside OpenCV and the
# ControlNet reuse fraction on real video, then the compiled live rows (eager beside, reuse row) in the time left.
# JSON and logs in $OUT (default /tmp/gpu_suite): live.json stills.json train.json square.json compiled.json,
# <step>.log, suite.log. Exit 0 when every step that ran exited 0. STEPS="live compiled": only those steps (a rerun);
# BUDGET=seconds; DRY=1: print each step's command instead of running it (tests/test_gpu_suite.py checks them).
set -u
SMOKE=0; [ "${1:-}" = --smoke ] && SMOKE=1
PY=${PYTHON:-python3}; O=${OUT:-/tmp/gpu_suite}; mkdir -p "$O"; L=$O/suite.log; : >"$L"; FAILED=0
STEPS=" ${STEPS:-live stills train square compiled} "
if ((SMOKE)); then BUDGET=${BUDGET:-175}; MIN=5; else BUDGET=${BUDGET:-470}; MIN=30; fi
T0=$(date +%s); END=$((T0 + BUDGET))
run() {  # name cap_s command...: at most cap_s, never past END; output in $O/name.log
  local n=$1 c=$2 t s rc; shift 2; [[ $STEPS == *" $n "* ]] || return 0; [ -n "${DRY:-}" ] && { echo "$n: $*"; return; }
  t=$((END - $(date +%s))); ((t > c)) && t=$c
  ((t < MIN)) && { echo "$n skipped: only ${t}s left" | tee -a "$L"; return; }
  s=$(date +%s); timeout -k 10 "$t" "$@" >"$O/$n.log" 2>&1; rc=$?; ((rc)) && FAILED=1
  echo "$n rc=$rc $(($(date +%s) - s))s (cap ${t}s)" | tee -a "$L"; grep -v '^[WI]0000\|^\[' "$O/$n.log" | tail -n 12
}
if ((SMOKE)); then
  # One thread everywhere (a busy small machine's OpenMP threads wait on each other); the compiled step runs its
  # code path with torch.compile switched off (compiling on the CPU takes minutes here).
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 LIVECAM_ASSETS=${LIVECAM_ASSETS:-$PWD/../shared/assets}
  X="--tiny --device cpu"; LIVE="$X --frames 3 --warmup 1"; STILLS="$X --steps 1 --variants 1"
  TRAIN="$X --steps 2 --warmup 1 --photos 2 --variants livecam baseline"; SQUARE="--tiny --device cpu"
  COMPILED_ENV="env TORCH_COMPILE_DISABLE=1"
elif [ -z "${DRY:-}" ]; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "no .whl/*.whl: run benchmarks/gpu_carry.sh, carry .whl" | tee -a "$L"
    exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl >"$O/pip.log" 2>&1 || { tail "$O/pip.log"; exit 1; }
  # mediapipe's vision module imports matplotlib.pyplot (drawing helpers, unused): an empty stub satisfies it.
  "$PY" -c 'import matplotlib' 2>/dev/null || { mkdir -p /tmp/site/matplotlib
    touch /tmp/site/matplotlib/__init__.py /tmp/site/matplotlib/pyplot.py; }
  export PYTHONPATH=/tmp/site LIVECAM_ASSETS=$PWD/.whl/assets
fi
if ((!SMOKE)); then
  LIVE=""; STILLS=""; TRAIN="--sizes 1024 --steps 6 --warmup 2 --variants livecam baseline"; COMPILED_ENV=""
  SQUARE="--device cuda"
fi
export PYTHONUNBUFFERED=1
[ -n "${DRY:-}" ] || {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
  echo "cores $(nproc --all), smoke $SMOKE, budget ${BUDGET}s"
  "$PY" -c 'import torch as o,diffusers as d,transformers as t,mediapipe as m
print(o.__version__,d.__version__,t.__version__,m.__version__)'
} 2>&1 | tee -a "$L"
P="$PY -m benchmarks"
run live 170 $P.diffusion_e2e $LIVE --out "$O/live.json"
run stills 150 $P.stills_gpu $STILLS --out "$O/stills.json"
run train 120 $P.training_gpu $TRAIN --out "$O/train.json"
run square 45 $P.diffusion_square $SQUARE --out "$O/square.json"
if command -v cc >/dev/null || command -v gcc >/dev/null; then  # Triton (and inductor on a CPU) build C code
  run compiled 420 $COMPILED_ENV $P.diffusion_e2e $LIVE --runs live_on_compiled paced_on_compiled denoiser_compiled \
    live_on_compiled_reuse live_on baseline --rounds 1 --out "$O/compiled.json"
else echo "compiled skipped: no C compiler for Triton" | tee -a "$L"; fi
echo "total $(($(date +%s) - T0))s" | tee -a "$L"
exit $FAILED
