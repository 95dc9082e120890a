#!/usr/bin/env bash
# One short check of the GPU path (about 5 minutes on one GPU): tools/speed.py with the
# paper preset and --device cuda, in float32 and then with --bf16. Each trains DGC and the CE
# baseline for a few epochs of Fashion-MNIST (or, where its files are not found, of generated
# 28x28 images of ten classes with the paper's imbalance), predicts the test set (DGC exactly and
# with its default setting) and prints training and prediction images/s and peak memory.
#
#   bash tools/gpu_check.sh        # EPOCHS=2 BF16=1 OUT=runs/gpu-check PYTHON=.venv/bin/python
#
# Needs the repository with its .venv, or `pip install -e .`, and a CUDA build of torch.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
EPOCHS=${EPOCHS:-2}
BF16=${BF16:-1}
OUT=${OUT:-runs/gpu-check}

"$PYTHON" - <<'EOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"gpu_check.sh: torch {torch.__version__} sees no CUDA device; run this on a machine "
             "with a GPU and a CUDA build of torch")
print(f"gpu_check.sh: {torch.cuda.get_device_name()}, torch {torch.__version__}")
EOF
mkdir -p "$OUT"

data=()
for dir in "${DGC_DATA:-/nonexistent}/fashion" data/fashion /usr/share/datasets/fashion-mnist; do
    found=1
    for file in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz \
                t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
        [ -f "$dir/$file" ] || found=0
    done
    if [ "$found" = 1 ]; then
        data=(--exp fashion --data-dir "$dir")
        echo "gpu_check.sh: Fashion-MNIST from $dir"
        break
    fi
done
if [ ${#data[@]} = 0 ]; then
    echo "gpu_check.sh: Fashion-MNIST not found; generated 28x28 data in $OUT/generated.npz"
    "$PYTHON" -c '
import sys
import numpy as np
rng = np.random.default_rng(0)
templates = rng.integers(0, 256, (10, 28, 28))
def images(counts):
    y = np.repeat(np.arange(10), counts)
    noise = rng.integers(0, 103, (len(y), 28, 28))
    return (0.6 * templates[y] + noise).astype(np.uint8), y
x_train, y_train = images([4000, 2000, 1000, 750, 500, 350, 200, 100, 60, 40])
x_test, y_test = images([1000] * 10)
np.savez(sys.argv[1], x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
' "$OUT/generated.npz"
    data=(--data "$OUT/generated.npz")
fi

"$PYTHON" tools/speed.py "${data[@]}" --preset paper --device cuda --epochs "$EPOCHS" \
    --out "$OUT/speed.json"
if [ "$BF16" = 1 ]; then
    "$PYTHON" tools/speed.py "${data[@]}" --preset paper --device cuda --epochs "$EPOCHS" \
        --bf16 --out "$OUT/speed-bf16.json"
fi
