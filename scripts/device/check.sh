#!/usr/bin/env bash
# The GPU checks of issue 13 section 2, on the device machine (see prepare.sh): the batched lobe Generator on the GPU
# gives the per-image transform's boxes (tests, cuda parametrised), and where it should run (benchmark, one run).
# Output: $OUT/tests.log, $OUT/generator_device_cuda.txt.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD MSTL_DATA_ROOT=$PWD/.devdata PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, monai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'monai', monai.__version__)" | tee -a "$OUT/gpu.txt"
# the tests with a cuda case (DEVICES = cpu + cuda where present) that read no more data than .devdata holds
timeout 300 python3 -m pytest -q -rs -p no:cacheprovider tests/transforms/test_batch_lobe_generator.py \
    tests/transforms/test_boundary_map.py tests/transforms/test_lobe_generator.py tests/visualize/test_grad_cam.py \
    tests/visualize/test_attention_heatmap.py -k "same_boxes or devices_agree or random_labels or follows_input_device" \
    2>&1 | tee "$OUT/tests.log"
timeout 200 python3 scripts/benchmark_generator_device.py --device "${DEVICE:-cuda}" --data-root "$MSTL_DATA_ROOT" 2>&1 \
    | tee "$OUT/generator_device_${DEVICE:-cuda}.txt"
