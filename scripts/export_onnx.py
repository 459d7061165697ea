# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Export a classifier checkpoint to ONNX (dynamic batch) and check onnxruntime against PyTorch on real slices.

The network and input size come from the checkpoint's ``model.pt.json``; ``<output>.json`` gets its settings
(class names, decision threshold, preprocessing). The check runs the first ``--check-slices`` slices of the
COVID19-CT test split (half COVID, half not; preprocessed as the bundle does) through both, on the CPU, and
prints the largest absolute differences of the logits and probabilities; it exits 1 when the logits differ by
more than ``--tolerance``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/export_onnx.py --ckpt runs/.../models/model.pt --output model.onnx
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "covid-ct"


def test_slice_paths(covid_ct: str | os.PathLike, n: int) -> list[str]:
    """The first ``n`` images of the COVID19-CT test split, half COVID and half non-COVID (split-file order)."""
    from mstl_monai.data import covid_ct_datalist

    rows = covid_ct_datalist(covid_ct, "test")
    covid = [r["image"] for r in rows if r["label"] == 1][: n // 2]
    other = [r["image"] for r in rows if r["label"] == 0][: n - len(covid)]
    return covid + other


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="classifier checkpoint (model.pt with its model.pt.json)")
    ap.add_argument("--output", required=True, help="the .onnx file to write")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="COVID19-CT folder for the check (default: %(default)s)")
    ap.add_argument("--check-slices", type=int, default=32,
                    help="test slices for the check (0: no check; a failed check removes the exported files)")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed |logit difference|")
    ap.add_argument("--opset", type=int, default=17)
    args = ap.parse_args(argv)
    # every argument is checked before anything is written
    if args.check_slices < 0:
        ap.error(f"--check-slices must be >= 0 (0: no check), got {args.check_slices}")
    if not args.tolerance > 0:
        ap.error(f"--tolerance must be a number > 0, got {args.tolerance}")
    if args.opset < 13:
        ap.error(f"--opset must be at least 13 (the operators the classifiers export to), got {args.opset}")
    out = Path(args.output)
    if out.is_dir():
        ap.error(f"--output {out} is a folder: give the .onnx file to write")
    if any(p.exists() and not p.is_dir() for p in out.parents):
        ap.error(f"--output {out}: {next(p for p in out.parents if p.exists() and not p.is_dir())} is a file, not a folder")
    if args.check_slices > 0 and not (Path(args.data) / "Data-split").is_dir():
        ap.error(f"--data {args.data} is not a COVID19-CT folder (no Data-split/): the check needs its test slices")
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(REPO))

    import torch

    from mstl_monai.deploy import OnnxClassifier, export_checkpoint_onnx, load_slices, max_abs_diff
    from mstl_monai.networks.checkpoint import checkpoint_settings, load_network

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    try:
        path = export_checkpoint_onnx(args.ckpt, args.output, opset=args.opset)
    except (FileNotFoundError, ValueError) as e:
        print(f"export_onnx: {e}", file=sys.stderr)
        return 2
    s = checkpoint_settings(args.ckpt)
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB) and {path}.json: {s['backbone']} n_attn={s['n_attn']}, "
          f"input (batch, {s['in_channels']}, {s['image_size']}, {s['image_size']}), opset {args.opset}")
    if args.check_slices <= 0:
        return 0
    net, s = load_network(args.ckpt)
    x = load_slices(test_slice_paths(args.data, args.check_slices), s["image_size"], s["resize_size"], s["normalize"])
    diff = max_abs_diff(net, OnnxClassifier(path), x)
    ok = diff["logits"] <= args.tolerance
    print(f"onnxruntime vs PyTorch (CPU, float32) on {diff['n']} COVID19-CT test slices: max |logit diff| "
          f"{diff['logits']:.2e}, max |probability diff| {diff['probabilities']:.2e}, argmax agrees: {diff['argmax_agree']} "
          f"-> {'OK' if ok else 'FAILED'} (tolerance {args.tolerance:g})")
    if not ok:  # an export that failed its check must not look like a usable model
        for f in (path, Path(f"{path}.json")):
            f.unlink(missing_ok=True)
        print(f"export_onnx: the check failed, so {path} and {path}.json were removed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
