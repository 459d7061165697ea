# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Write a copy of a slice folder with every slice cropped to its lung box (``LocateLung``, plus a margin).

An experiment tool: does cropping to the lungs (the same framing for figures taken from papers and a scanner's full
field of view) help the finetune? A COVID19-CT folder (``CT_COVID/``, ``CT_NonCOVID/``, ``Data-split/``) keeps its
layout, its split files linked, so ``--dataset_dir <out>`` finetunes on the cropped slices; any other folder is
written as ``<index>_<name>.png`` for ``inference.yaml``. Slices where no lung is found are kept whole (counted).
Slices are written as 8-bit PNG of the lung window. Never write the output into the repository.

.. code-block:: bash

    python scripts/lung_crop_dataset.py ../shared/data/covid-ct /tmp/covid-ct-lungcrop
    python scripts/lung_crop_dataset.py ../shared/data/luna16/images /tmp/luna16-lungcrop
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", "")


def crop_to_lung(img: np.ndarray, box, margin: float) -> np.ndarray:
    """``img`` (H, W) cut to ``box`` (x, y, w, h) grown by ``margin`` of its size on each side, within the image."""
    h, w = img.shape
    x, y, bw, bh = (int(v) for v in box)
    mx, my = int(round(margin * bw)), int(round(margin * bh))
    return img[max(0, y - my) : min(h, y + bh + my), max(0, x - mx) : min(w, x + bw + mx)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    ap.add_argument("source", type=Path, help="a COVID19-CT folder or any folder of slices")
    ap.add_argument("output", type=Path, help="a new folder (outside the repository)")
    ap.add_argument("--margin", type=float, default=0.1, help="box growth per side, share of the box (default 0.1)")
    args = ap.parse_args(argv)
    if not args.source.is_dir():
        ap.error(f"{args.source} is not a folder")
    if args.output.exists() and any(args.output.iterdir()):
        ap.error(f"{args.output} exists and is not empty: give a new folder")
    if not 0.0 <= args.margin <= 1.0:
        ap.error(f"--margin must be in [0, 1], got {args.margin}")

    from mstl_monai.transforms import LoadCTSlice, LocateLung

    load, locate = LoadCTSlice(), LocateLung()
    covid_ct = (args.source / "Data-split").is_dir()
    if covid_ct:
        groups = [(args.source / c, args.output / c) for c in ("CT_COVID", "CT_NonCOVID")]
        args.output.mkdir(parents=True, exist_ok=True)
        for name in ("Data-split", "metadata", "manifest.csv"):
            if (args.source / name).exists():
                os.symlink((args.source / name).resolve(), args.output / name)
    else:
        groups = [(args.source, args.output)]
    n, whole, fractions = 0, 0, []
    for src, dst in groups:
        dst.mkdir(parents=True, exist_ok=True)
        files = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        for i, path in enumerate(files):
            img = load(str(path))
            found = locate(img)
            arr = np.asarray(img[0])
            if found.found:
                arr = crop_to_lung(arr, found.box, args.margin)
                fractions.append(found.box_fraction)
            else:
                whole += 1
            name = f"{path.stem}.png" if covid_ct else f"{i:04d}_{path.stem}.png"
            Image.fromarray((np.clip(arr, 0, 1) * 255).round().astype(np.uint8)).save(dst / name)
            n += 1
    median = f"{np.median(fractions):.3f}" if fractions else "-"
    print(f"{n} slices written to {args.output}; {whole} kept whole (no lung found); lung box median {median} of the slice")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
