#!/usr/bin/env bash
# Everything issue 6 asks of a machine with an NVIDIA GPU, as one script (docs/gpu.md, "On a GPU").
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]        # OUT_DIR default: gpu-check-<date>; needs ~10 min on an H100-class GPU
#
# Needs: the repository's .venv (make test) plus CuPy for the driver's CUDA (pip install -e ".[gpu]" or
# ".[gpu13]"), and for the recurrentgemma comparison a CUDA build of torch. Books: $MINIGRIFFIN_BOOKS
# (a folder with train/ and valid/, e.g. the one `minigriffin download` prints).
# Writes one log per step into OUT_DIR; a failing step is reported and the others still run.
set -u
OUT=${1:-gpu-check-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
PY=${PYTHON:-python}
BOOKS=${MINIGRIFFIN_BOOKS:-$($PY -m minigriffin download | sed -n 's/^books in //p')}
status=0
step() {   # step NAME COMMAND...: run, tee into OUT/NAME.log, remember failures
    local name=$1; shift
    echo "=== $name: $*"
    local start=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then echo "    ok ($((SECONDS - start)) s)"; else
        echo "    FAILED ($((SECONDS - start)) s), see $OUT/$name.log"; tail -5 "$OUT/$name.log"; status=1; fi
}
step doctor $PY -m minigriffin doctor
step nvidia-smi nvidia-smi
# 1. the gpu-marked tests (NVRTC compiles every kernel; cupy vs reference, Hypothesis; GPU <-> CPU resume)
step pytest-gpu $PY -m pytest tests -m gpu -ra -q -p no:cacheprovider
# 1b. the kernel-testing harness on CuPy arrays against the built-in cupy backend, timed against a device copy
step check-scan-gpu $PY -m minigriffin check-scan cupy --gpu --seed 0
# 2. the whole suite on this machine (the backend-agreement tests then include cupy through the round trip)
step pytest-all env MINIGRIFFIN_BOOKS="$BOOKS" $PY -m pytest tests -ra -q -p no:cacheprovider \
     --ignore=tests/test_notebooks.py
# 3. scan bandwidth against a device-to-device copy of the same bytes (target >= 80%)
step bench-scan-gpu $PY benchmarks/bench_scan.py --device gpu --shapes 8x2048x512,1x16384x256,64x4096x1024,1x1048576x64
# 4. whole-model training throughput beside recurrentgemma's torch model on the same GPU and config
step bench-model-gpu $PY benchmarks/bench_model.py --device gpu --batch 32 --seq 2048
# 5. a short real training run on the GPU, then resumed on the CPU (device-independent checkpoints)
rm -rf "$OUT/run"
step train-gpu $PY -m minigriffin train --preset griffin-small --data-dir "$BOOKS" --run-dir "$OUT/run" \
     --device gpu --max_steps=200 --batch_size=32 --seq_len=512 --eval_every=100 --no-progress
step resume-cpu $PY -m minigriffin train --resume "$OUT/run" --device cpu --max_steps=202 --no-progress
echo "logs in $OUT"; exit $status
