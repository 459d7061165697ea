"""Shared helpers for the test-suite."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
#: the real data beside the project (``../shared/data``); override with ``MSTL_DATA_ROOT``
DATA_ROOT = Path(os.environ.get("MSTL_DATA_ROOT", REPO_ROOT.parent / "shared" / "data"))
FIXTURES_ROOT = Path(os.environ.get("MSTL_FIXTURES_ROOT", REPO_ROOT.parent / "shared" / "fixtures"))


def require_real_data(testcase) -> Path:
    """Return the data root, failing (not skipping) in CI when it is missing."""
    if not DATA_ROOT.is_dir():
        if os.environ.get("CI"):
            testcase.fail(f"real data folder {DATA_ROOT} is missing in CI")
        testcase.skipTest(f"real data folder {DATA_ROOT} not found")
    return DATA_ROOT


def require_label_python(testcase) -> str:
    """The MONAI Label environment's interpreter (``.venv-label/bin/python``, ``$MSTL_LABEL_PYTHON``, or in a git
    worktree the main checkout's), failing in CI and skipping elsewhere when it is missing or incomplete."""
    py = os.environ.get("MSTL_LABEL_PYTHON", str(REPO_ROOT / ".venv-label" / "bin" / "python"))
    if not os.path.isfile(py):
        alt = REPO_ROOT.parent / "main" / ".venv-label" / "bin" / "python"  # a git worktree beside the main checkout
        py = str(alt) if alt.is_file() and "MSTL_LABEL_PYTHON" not in os.environ else py
    if not os.path.isfile(py):
        msg = f"MONAI Label environment {py} is missing: run `bash scripts/setup_label_env.sh`"
        if os.environ.get("CI"):
            testcase.fail(msg)
        testcase.skipTest(msg)
    probe = subprocess.run([py, "-c", "import monailabel, nibabel, yaml"], capture_output=True, text=True)
    if probe.returncode != 0:  # e.g. while scripts/setup_label_env.sh is still installing
        msg = f"MONAI Label environment {py} is incomplete: {probe.stderr.strip().splitlines()[-1:]}"
        if os.environ.get("CI"):
            testcase.fail(msg)
        testcase.skipTest(msg)
    return py
