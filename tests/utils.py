"""Shared helpers for the test-suite."""

from __future__ import annotations

import os
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
