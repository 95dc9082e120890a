#!/usr/bin/env bash
# Create or refresh the virtual environment: torch 2.13.0 (CPU build) first, then the project,
# and the Debian Fashion-MNIST files when they are missing and apt can install them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
    "$VENV/bin/python" -m pip install -q torch==2.13.0
fi
"$VENV/bin/python" -m pip install -q -e '.[dev]'

FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FASHION" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) \
            >/dev/null 2>&1 || echo "setup: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped" >&2
    else
        echo "setup: dataset-fashion-mnist is not installed and apt is not usable here;" \
             "put the Fashion-MNIST files in ./data/fashion or \$DGC_DATA/fashion" >&2
    fi
fi
