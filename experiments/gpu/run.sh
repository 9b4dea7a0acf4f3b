#!/usr/bin/env bash
# Every GPU check the open issues ask for, in one run of at most 8 minutes, records under $OUT:
# training images/s (TCM-S-VBR fp32 and bf16 + channels-last, the claims study's small model),
# coding on CUDA, files decoded across CPU and CUDA with the symbols check
# (experiments/gpu/checks.py), and a short bf16 training run through src/train.py.
#
#   bash experiments/gpu/run.sh             # on the device machine, wheels in .whl (README)
#   bash experiments/gpu/run.sh --dry-run   # the same steps on the CPU, small (a test runs it)
set -euo pipefail
cd "$(dirname "$0")/../.."
dry=0
[[ "${1:-}" == "--dry-run" ]] && dry=1
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
py=${PYTHON:-python3}
if [[ $dry == 0 ]]; then
    # the device image has PyTorch and Lightning; hydra, CompressAI & co. travel as wheels
    $py -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl .whl/*.tar.gz
    # this package, its C decoder built there (nothing is fetched)
    $py -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site .
    export PYTHONPATH=/tmp/site
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/nvidia_smi.csv"
fi
device=cuda
trainer=gpu_bf16
args=()
if [[ $dry == 1 ]]; then
    device=cpu
    trainer=cpu
    args=(--tiny)
fi
start=$(date +%s)
$py experiments/gpu/checks.py --device "$device" --out "$OUT" "${args[@]}" 2>&1 | tee "$OUT/checks.log"
steps=$([[ $dry == 1 ]] && echo 2 || echo 200)
$py src/train.py experiment=quickstart "trainer=$trainer" "++trainer.max_steps=$steps" \
    ++trainer.max_epochs=-1 logger=csv "hydra.run.dir=$OUT/bf16_run" 2>&1 | tail -n 40 > "$OUT/bf16_run.log"
echo "gpu checks: $(( $(date +%s) - start )) s, records in $OUT"
