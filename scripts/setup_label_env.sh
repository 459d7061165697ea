#!/usr/bin/env bash
# Create ./.venv-label: mstl-monai plus MONAI Label, kept apart from ./.venv because MONAI Label pins
# numpy<2 and needs pydicom<3 and a torchvision that imports (see the README, "MONAI Label").
# Idempotent; used by the README and .ci/run.
#   LABEL_TORCH_SPEC  torch + torchvision to install when none imports
#                     (default: torch==2.14.1 torchvision==0.29.1, which import together)
#   PYTHON            interpreter for the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv-label/bin/python ] || "$PY" -m venv .venv-label
# shellcheck disable=SC1091
. .venv-label/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch, torchvision" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  pip install -q ${LABEL_TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}
fi
pip install -q -e ".[dev,label]"
python -c "import torch, torchvision, monai, monailabel, numpy, mstl_monai; print(f'label env: mstl-monai {mstl_monai.__version__}, monailabel {monailabel.__version__}, torch {torch.__version__}, torchvision {torchvision.__version__}, numpy {numpy.__version__}')"
