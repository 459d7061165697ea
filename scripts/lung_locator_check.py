# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""How well the lobe Generator's lung locator works on real slices: fallback rates and lung-box accuracy.

1. Fallback rate (no lung found, the crops come from the whole image) on the 425 COVID19-CT train slices, each
   loaded and preprocessed exactly as a bundle does it: the SSTL-M bundle's own ``load_transforms`` (load, resize
   the longest side, pad to a square) and its probe Generator, parsed from ``bundle/configs/sstl_m.yaml`` with
   its defaults (resize 256), at the CPU recipe (``configs/cpu_scale.yaml``: image 128, resize 146, regions 64)
   and at 72 px; plus the slices at full resolution.
2. Lung-box accuracy on ``lung-masks/`` (100 CT slices with radiologists' lung masks): the IoU of the located
   lung box with the bounding box of the mask, and the share of the mask inside the box; median, 10th
   percentile and minimum.

Usage::

    python scripts/lung_locator_check.py [--data-root ../shared/data] [--max-fallback 0.005]

Exits 1 when a fallback rate is above ``--max-fallback``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from monai.bundle import ConfigParser
from monai.transforms import Compose
from PIL import Image

from mstl_monai.data import covid_ct_datalist
from mstl_monai.transforms import LoadCTSlice, LungLobeGenerator

REPO = Path(__file__).resolve().parents[1]

#: the preprocessing settings checked: name -> overrides of bundle/configs/sstl_m.yaml (None: no resize/pad)
SETTINGS: dict[str, dict | None] = {
    "full resolution (no resize, no pad)": None,
    "sstl_m.yaml defaults (resize 256 + pad)": {},
    "sstl_m.yaml CPU recipe (resize 146 + pad)": {"image_size": 128, "resize_size": 146, "region_size": 64},
    "sstl_m.yaml at 72 px (resize 72 + pad)": {"image_size": 64, "resize_size": 72, "region_size": 32},
}


def bundle_preprocessing(overrides: dict, config: Path) -> tuple[Compose, LungLobeGenerator]:
    """The SSTL-M bundle's ``load_transforms`` and its (deterministic) probe Generator, with ``overrides``."""
    parser = ConfigParser()
    parser.read_config(str(config))
    parser.update(overrides)
    load = Compose(parser.get_parsed_content("load_transforms"))
    gen = parser.get_parsed_content("probe#transforms#0").generator
    return load, gen


def box_scores(box, mask: np.ndarray) -> tuple[float, float]:
    """IoU of box (x, y, w, h) with the mask's bounding box, and the share of the mask inside the box."""
    ys, xs = np.nonzero(mask)
    gx0, gy0, gx1, gy1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    x0, y0, w, h = (int(v) for v in box)
    x1, y1 = x0 + w, y0 + h
    inter = max(0, min(x1, gx1) - max(x0, gx0)) * max(0, min(y1, gy1) - max(y0, gy0))
    union = w * h + (gx1 - gx0) * (gy1 - gy0) - inter
    return inter / union, float(mask[y0:y1, x0:x1].sum() / mask.sum())


def lung_mask_scores(root: Path, gen: LungLobeGenerator) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """IoU and coverage of the located lung box on every slice of ``root/lung-masks``."""
    folder = root / "lung-masks"
    rows = [line.split(",")[:2] for line in (folder / "manifest.csv").read_text().splitlines()[1:] if line.strip()]
    if not rows:
        raise FileNotFoundError(f"no slices listed in {folder / 'manifest.csv'}")
    load = LoadCTSlice()
    ious, covers, names = [], [], []
    for img_name, mask_name in rows:
        img = load(folder / img_name).as_tensor()
        mask = np.asarray(Image.open(folder / mask_name).convert("L")) > 127
        box, _, _ = gen.locate(img)
        iou, cover = box_scores(box, mask)
        ious.append(iou)
        covers.append(cover)
        names.append(img_name)
    return np.asarray(ious), np.asarray(covers), names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--config", type=Path, default=REPO / "bundle" / "configs" / "sstl_m.yaml")
    p.add_argument("--max-fallback", type=float, default=0.005, help="largest acceptable fallback rate")
    p.add_argument("--worst", type=int, default=5, help="list this many worst lung-mask slices")
    args = p.parse_args(argv)
    root = args.data_root

    datalist = covid_ct_datalist(root / "covid-ct", "train")
    print(f"Fallback (no lung found) on the {len(datalist)} COVID19-CT train slices:")
    ok = True
    for name, overrides in SETTINGS.items():
        if overrides is None:
            load, gen = Compose([]), LungLobeGenerator()
            images = [LoadCTSlice()(d["image"]) for d in datalist]
        else:
            load, gen = bundle_preprocessing(overrides, args.config)
            images = [load({"image": d["image"]})["image"] for d in datalist]
        fell = [Path(d["image"]).name for d, im in zip(datalist, images) if gen.locate(im.as_tensor())[1]]
        rate = len(fell) / len(datalist)
        ok &= rate <= args.max_fallback
        shape = tuple(images[0].shape[-2:])
        print(f"  {name:44s} {len(fell):3d}/{len(datalist)} = {rate:6.2%}   (first image {shape})")
        for f in fell:
            print(f"      fell back: {f}")

    ious, covers, names = lung_mask_scores(root, LungLobeGenerator())
    print(f"\nLung box vs radiologists' lung masks ({len(ious)} slices of lung-masks/, full resolution):")
    print(f"  IoU with the mask's bounding box: median {np.median(ious):.3f}, 10th percentile "
          f"{np.percentile(ious, 10):.3f}, min {ious.min():.3f}")
    print(f"  share of the mask inside the box: median {np.median(covers):.3f}, 10th percentile "
          f"{np.percentile(covers, 10):.3f}, min {covers.min():.3f}")
    worst = np.argsort(ious)[: args.worst]
    print("  worst: " + ", ".join(f"{names[i]} (IoU {ious[i]:.2f}, cover {covers[i]:.2f})" for i in worst))
    if not ok:
        print(f"\nFAIL: a fallback rate is above {args.max_fallback:.2%}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
