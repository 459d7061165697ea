"""Helpers to run the bundle's configs in tests (in a subprocess, like a user would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.utils import REPO_ROOT

BUNDLE = REPO_ROOT / "bundle"
CONFIGS = BUNDLE / "configs"

#: overrides that make any training config tiny: a few seconds per epoch on CPU
TINY = {
    "backbone": "resnet18",
    "image_size": 32,
    "resize_size": 36,
    "batch_size": 8,
    "num_workers": 0,
    "learning_rate": 0.01,
    "lr_milestones": [100],
    "amp": True,
}


def fmt(v) -> str:
    return v if isinstance(v, str) else repr(v)


def bundle_cmd(configs: list[str], overrides: dict, launcher: list[str] | None = None) -> list[str]:
    files = json.dumps([str(CONFIGS / c) for c in configs])
    cmd = (launcher or [sys.executable]) + ["-m", "monai.bundle", "run", "--config_file", files]
    cmd += ["--bundle_root", str(BUNDLE), "--meta_file", str(CONFIGS / "metadata.json")]
    for k, v in overrides.items():
        cmd += [f"--{k}", fmt(v)]
    return cmd


def run_bundle(configs: list[str], overrides: dict, timeout: int = 600, check: bool = True, launcher=None):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    proc = subprocess.run(
        bundle_cmd(configs, overrides, launcher), capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"bundle run {configs} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def phantom_dataset(root: Path, n_per_class: int = 6, size: int = 64) -> Path:
    from mstl_monai.data import write_phantom_dataset

    out = Path(root) / "covid-ct"
    write_phantom_dataset(out, n_per_class=n_per_class, size=size, seed=0)
    return out
