#!/usr/bin/env bash
# Create ./.venv and install mstl-monai with its test tools. Idempotent; used by the README and .ci/run.
#   TORCH_SPEC   which torch to install when none is importable (default: torch==2.13.0, a CPU build;
#                on a GPU machine use e.g. TORCH_SPEC=torch)
#   PYTHON       interpreter for the venv (default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python -c "import torch" >/dev/null 2>&1; then
  pip install -q "${TORCH_SPEC:-torch==2.13.0}"
fi
pip install -q -e ".[dev]"
python -c "import torch, monai, ignite, mstl_monai; print(f'mstl-monai {mstl_monai.__version__}: torch {torch.__version__}, monai {monai.__version__}, ignite {ignite.__version__}')"
