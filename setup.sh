#!/usr/bin/env bash
# Create .venv and install overfitlab into it. `--test` adds what the tests need.
# Idempotent: a second run installs nothing new.
set -euo pipefail
cd "$(dirname "$0")"
extras="ray,labels"
if [ "${1:-}" = "--test" ]; then
  extras="ray,tensorboard,mlflow,timm,labels,test"
fi
python=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$python" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# torch first, pinned: on machines that carry these wheels this installs from disk,
# and a later resolver step then never reaches for a newer multi-GB build.
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[$extras]"
