#!/usr/bin/env bash
# Installs the Python peers for scripts/bench/compare.py (PyTorch, JAX, TensorFlow) into
# ../bench-env, outside the repository, and builds the candle and burn peers
# (scripts/bench/rust-peers, a crate of its own outside kiln's workspace). PyTorch's
# wheel is large (about 4 GB with its CUDA libraries); building burn takes a few minutes.
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m venv ../bench-env
../bench-env/bin/pip install --quiet torch jax optax tensorflow-cpu
cargo build --release --manifest-path scripts/bench/rust-peers/Cargo.toml
echo "peers installed: python3 scripts/bench/compare.py --python ../bench-env/bin/python"
