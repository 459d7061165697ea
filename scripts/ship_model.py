#!/usr/bin/env python
# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Ship a trained checkpoint with the bundle, as the MONAI model zoo does.

Writes ``bundle/models/<name>.pt`` (the network's state dict in float16: half the size, and the float32 network it
is loaded into computes as before up to float16 rounding of the weights), its settings file ``<name>.pt.json`` (the
checkpoint's own, plus a ``provenance`` block: where it came from, what it was trained on, its measured metrics), and
the entry of ``bundle/large_files.yml`` (path, size, sha256). Every file is written atomically, the list last.

    .venv/bin/python scripts/ship_model.py --ckpt runs/.../finetune/models/model.pt --name model \
        --trained_on "COVID19-CT train split (official)" --metrics results/cpu_scale/<chain>/metrics.json

``tests/bundle/test_shipped_models.py`` checks every listed file's size and hash and that its settings build a network
that takes the weights (strict).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mstl_monai.utils.io import atomic_write  # noqa: E402
from mstl_monai.networks.checkpoint import read_network_state  # noqa: E402
from mstl_monai.networks.sidecar import info_path, read_checkpoint_info  # noqa: E402

LIMIT_MB = 60.0


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def half_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Floating tensors to float16 (contiguous clones); integer buffers (``num_batches_tracked``) as they are."""
    out = {}
    for k, v in state.items():
        v = v.detach().cpu()
        if v.is_floating_point():
            if v.abs().max() > torch.finfo(torch.float16).max:
                raise ValueError(f"tensor {k} has values beyond float16's range: cannot ship it as float16.")
            v = v.to(torch.float16)
        out[k] = v.contiguous().clone()
    return out


def source_name(ckpt: Path) -> str:
    """The checkpoint's path relative to the repository, or from its ``runs/`` folder when trained in another checkout."""
    rel = Path(os.path.relpath(ckpt.resolve(), ROOT))
    if rel.parts and rel.parts[0] == ".." and "runs" in ckpt.resolve().parts:
        parts = ckpt.resolve().parts
        rel = Path(*parts[parts.index("runs"):])
    return rel.as_posix()


def update_large_files(bundle: Path, rel: str, size: int, digest: str) -> Path:
    path = bundle / "large_files.yml"
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    entries = [e for e in (data or {}).get("large_files", []) if e.get("path") != rel]
    entries.append({"path": rel, "size": size, "hash_val": digest, "hash_type": "sha256"})
    entries.sort(key=lambda e: e["path"])
    header = (
        "# Weights shipped with the bundle (kept in git; scripts/ship_model.py writes them and this list).\n"
        "# tests/bundle/test_shipped_models.py checks each file's size and sha256 and that its settings file fits it.\n"
    )
    text = header + yaml.safe_dump({"large_files": entries}, sort_keys=False)
    with atomic_write(path) as f:
        f.write(text)
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--ckpt", required=True, help="the checkpoint (with its <ckpt>.json settings file)")
    ap.add_argument("--name", required=True, help="file name under bundle/models/ without .pt (model = the classifier)")
    ap.add_argument("--trained_on", required=True, help="what it was trained on, in words")
    ap.add_argument("--metrics", default=None, help="a metrics.json of its evaluation to quote in the settings file")
    ap.add_argument("--note", default="", help="known limits, in words")
    ap.add_argument("--bundle", default=str(ROOT / "bundle"))
    args = ap.parse_args(argv)

    ckpt = Path(args.ckpt)
    try:
        info = read_checkpoint_info(ckpt)
        if info is None:
            raise ValueError(f"{info_path(ckpt)} is missing: a shipped model needs its settings file.")
        state, _ = read_network_state(ckpt)
        state = half_state(state)
    except (FileNotFoundError, ValueError) as e:
        print(f"ship_model: {e}", file=sys.stderr)
        return 2
    bundle = Path(args.bundle)
    target = bundle / "models" / f"{args.name}.pt"
    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(state, buf)
    with atomic_write(target, "wb") as f:
        f.write(buf.getvalue())
    digest, size = sha256(target), target.stat().st_size
    metrics = None
    if args.metrics:
        metrics = json.loads(Path(args.metrics).read_text())
    info = dict(info)
    info["provenance"] = {
        "source_checkpoint": source_name(ckpt),
        "weights_dtype": "float16",
        "sha256": digest,
        "trained_on": args.trained_on,
        "test_metrics": metrics,
        "note": args.note,
    }
    with atomic_write(info_path(target)) as f:
        f.write(json.dumps(info, indent=2) + "\n")
    rel = os.path.relpath(target, bundle)
    update_large_files(bundle, rel, size, digest)
    total = sum(p.stat().st_size for p in (bundle / "models").glob("*.pt")) / 2**20
    print(f"shipped {target} ({size / 2**20:.1f} MB, sha256 {digest[:12]}...); bundle/models/*.pt: {total:.1f} MB")
    if total > LIMIT_MB:
        print(f"ship_model: the shipped weights are {total:.1f} MB together, over the {LIMIT_MB:.0f} MB limit", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
