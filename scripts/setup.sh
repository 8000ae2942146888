#!/usr/bin/env bash
# Creates .venv and installs scaling-lab with its test tools. Safe to re-run.
# torch: a torch that python3 already imports (e.g. a CUDA build in conda or the system) is reused, through a
# venv that sees python3's site-packages; otherwise a GPU machine gets PyPI's default (CUDA) build and a CPU-only
# machine the CPU build, which is a fraction of the download.
set -euo pipefail
cd "$(dirname "$0")/.."
if python3 -c "import torch" 2>/dev/null; then
  python3 -m venv --system-site-packages .venv
else
  python3 -m venv .venv
fi
py=.venv/bin/python
if ! "$py" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1; then
    "$py" -m pip install -q "torch>=2.4"
  else
    "$py" -m pip install -q --retries 1 --timeout 15 \
      --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
  fi
fi
"$py" -m pip install -q -e ".[dev]"
echo "scaling-lab installed in .venv ($("$py" -c 'import torch; print("torch", torch.__version__)'))"
