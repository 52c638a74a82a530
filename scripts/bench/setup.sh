#!/usr/bin/env bash
# Installs the peer frameworks for scripts/bench/compare.py into ../bench-env, outside
# the repository. PyTorch's wheel is large (about 4 GB with its CUDA libraries).
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv ../bench-env
../bench-env/bin/pip install --quiet torch jax optax
echo "peers installed: python3 scripts/bench/compare.py --python ../bench-env/bin/python"
