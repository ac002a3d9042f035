#!/usr/bin/env bash
# Speed at LLaVA-1.5-7B's full shape on a GPU: all 32 decoder layers, bf16, SDPA, random weights.
#
#   bash scripts/gpu_speed.sh            # on a machine whose python3 holds torch and transformers
#
# Nothing is installed: the package runs from src/ (a lent device machine can fetch nothing). Its image held
# transformers 5.17 in 2026-11, older than the 5.23 tokenfunnel needs, so carry that wheel (pure Python; its
# huggingface-hub >= 1.31 is met by the image's 1.33): here `python3 -m pip download --no-deps transformers==5.23.0
# -d .whl` (with /.whl/ in .git/info/exclude), there `python3 -m pip install -q --no-index --no-deps --target
# /tmp/site .whl/*.whl && PYTHONPATH=/tmp/site bash scripts/gpu_speed.sh`. With 5.23 and hub 1.33 the script ran on a
# CPU (LAYERS=8 DEVICE=cpu). Three measurements (not yet timed on a GPU):
# 1. scripts/luvc_speed.py: LUVC at keep 0.5 / 0.25 / 0.11 against uncompressed, with the FLOP-ideal and the
#    hardware's ceiling (the unpatched LM fed the same token counts);
# 2. the same for luvc-focus's schedule as it ships (hold 2/3, frozen context) at keep 0.25 / 0.11: the bench
#    below refuses luvc-focus, which needs a tokenizer that llava-7b-shape has not;
# 3. tokenfunnel bench --model llava-7b-shape: every method at the same keeps, one table.
# Results land in runs/gpu-DEVICE-DTYPE-LAYERS/ and, where $OUT is set (the device tool), their files are copied
# there too.
# LAYERS, DEVICE, DTYPE, SAMPLES and REPEATS override the defaults (LAYERS=1 DEVICE=cpu tries the script on a CPU).
set -euo pipefail
layers=${LAYERS:-32}
device=${DEVICE:-cuda}
dtype=${DTYPE:-bfloat16}
out=runs/gpu-$device-$dtype-$layers
samples=${SAMPLES:-4}
repeats=${REPEATS:-10}
mkdir -p "$out"
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
if [ "$device" = cuda ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"; fi
"$python" scripts/luvc_speed.py --model llava-1.5-shape --layers "$layers" --samples "$samples" --repeats "$repeats" \
    --device "$device" --dtype "$dtype" --out "$out/luvc_speed_llava_shape_gpu.json"
"$python" scripts/luvc_speed.py --model llava-1.5-shape --layers "$layers" --samples "$samples" --repeats "$repeats" \
    --device "$device" --dtype "$dtype" --keep 0.25 0.11 --hold 0.6667 --context \
    --out "$out/luvc_focus_speed_llava_shape_gpu.json"
"$python" -m tokenfunnel bench --model llava-7b-shape --layers "$layers" --methods all --keep 0.5,0.25,0.11 \
    --timing-samples "$samples" --repeats "$repeats" --device "$device" --dtype "$dtype" --out "$out/bench"
if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT"
    cp "$out/luvc_speed_llava_shape_gpu.json" "$out/luvc_focus_speed_llava_shape_gpu.json" "$out/bench/results.json" "$out/bench/results.md" "$out/bench/pareto.png" "$OUT/"
    if [ -f "$out/gpu.txt" ]; then cp "$out/gpu.txt" "$OUT/"; fi
fi
