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
   percentile and minimum, for the tuning half, the held-out half and all 100 (see :func:`split_halves`). Also the
   IoU with the bounding box of the mask's main parts (connected parts holding at least 1 % of its pixels): at the
   lung bases a lung tip of 1-4 pixels (at 128 px) far in front of the rest stretches the mask's box.

Usage::

    python scripts/lung_locator_check.py [--data-root ../shared/data] [--max-fallback 0.005] [--json out.json]

Exits 1 when a fallback rate is above ``--max-fallback``. ``--masks-only`` skips part 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from monai.bundle import ConfigParser
from monai.transforms import Compose
from PIL import Image
from scipy import ndimage as ndi

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


#: the split of lung-masks/ into a tuning and a held-out half, fixed once: the 100 slices are consecutive slices of
#: one scan in manifest order, so neighbours are near-duplicates and a per-file split (e.g. by a hash of the name)
#: would put near-identical slices in both halves. The rows go in blocks of ``SPLIT_BLOCK`` consecutive slices;
#: ``numpy.random.default_rng(SPLIT_SEED).permutation(n_blocks)`` orders the blocks and its first half is the
#: tuning half (blocks 2, 3, 4, 6, 7 = slices 20-49 and 60-79), the rest held out (slices 0-19, 50-59, 80-99).
#: The locator's thresholds were tuned on the tuning half only (and on slices without masks: ct-series, luna16).
SPLIT_SEED, SPLIT_BLOCK = 0, 10


def split_halves(n: int, seed: int = SPLIT_SEED, block: int = SPLIT_BLOCK) -> tuple[list[int], list[int]]:
    """Row indices ``(tuning, held_out)`` of ``n`` manifest rows by the fixed block rule of :data:`SPLIT_SEED`."""
    n_blocks = (n + block - 1) // block
    order = np.random.default_rng(seed).permutation(n_blocks)
    tune_blocks = set(order[: n_blocks // 2].tolist())
    tune = [i for i in range(n) if i // block in tune_blocks]
    return tune, [i for i in range(n) if i // block not in tune_blocks]


def summary(ious: np.ndarray, covers: np.ndarray, main_ious: np.ndarray) -> dict[str, float]:
    """Median, 10th percentile and minimum of the IoUs, of the mask shares inside the box and of the IoUs with the
    mask's main parts."""
    out: dict[str, float] = {"n": int(len(ious))}
    for key, v in (("iou", ious), ("cover", covers), ("iou_main_parts", main_ious)):
        out.update({f"{key}_median": float(np.median(v)), f"{key}_p10": float(np.percentile(v, 10)), f"{key}_min": float(v.min())})
    return out


def main_parts(mask: np.ndarray, share: float = 0.01) -> np.ndarray:
    """The connected parts (8-connected) of ``mask`` holding at least ``share`` of its pixels."""
    labels, _ = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.isin(labels, np.flatnonzero(sizes >= share * mask.sum()))


def box_scores(box, mask: np.ndarray) -> tuple[float, float]:
    """IoU of box (x, y, w, h) with the mask's bounding box, and the share of the mask inside the box."""
    ys, xs = np.nonzero(mask)
    gx0, gy0, gx1, gy1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    x0, y0, w, h = (int(v) for v in box)
    x1, y1 = x0 + w, y0 + h
    inter = max(0, min(x1, gx1) - max(x0, gx0)) * max(0, min(y1, gy1) - max(y0, gy0))
    union = w * h + (gx1 - gx0) * (gy1 - gy0) - inter
    return inter / union, float(mask[y0:y1, x0:x1].sum() / mask.sum())


def lung_mask_scores(root: Path, gen: LungLobeGenerator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """IoU, coverage and IoU with the main parts of the located lung box on every slice of ``root/lung-masks``."""
    folder = root / "lung-masks"
    rows = [line.split(",")[:2] for line in (folder / "manifest.csv").read_text().splitlines()[1:] if line.strip()]
    if not rows:
        raise FileNotFoundError(f"no slices listed in {folder / 'manifest.csv'}")
    load = LoadCTSlice()
    ious, covers, main_ious, names = [], [], [], []
    for img_name, mask_name in rows:
        img = load(folder / img_name).as_tensor()
        mask = np.asarray(Image.open(folder / mask_name).convert("L")) > 127
        box, _, _ = gen.locate(img)
        iou, cover = box_scores(box, mask)
        ious.append(iou)
        covers.append(cover)
        main_ious.append(box_scores(box, main_parts(mask))[0])
        names.append(img_name)
    return np.asarray(ious), np.asarray(covers), np.asarray(main_ious), names


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--config", type=Path, default=REPO / "bundle" / "configs" / "sstl_m.yaml")
    p.add_argument("--max-fallback", type=float, default=0.005, help="largest acceptable fallback rate")
    p.add_argument("--worst", type=int, default=5, help="list this many worst lung-mask slices")
    p.add_argument("--masks-only", action="store_true", help="skip the fallback rates (part 1)")
    p.add_argument("--json", type=Path, default=None, help="write the lung-mask scores here (JSON)")
    args = p.parse_args(argv)
    root = args.data_root
    ok, rates = True, {}
    if not args.masks_only:
        ok, rates = fallback_rates(root, args.config, args.max_fallback)

    ious, covers, main_ious, names = lung_mask_scores(root, LungLobeGenerator())
    tune, held = split_halves(len(ious))
    print(f"\nLung box vs radiologists' lung masks ({len(ious)} slices of lung-masks/, full resolution):")
    result: dict = {"split": {"seed": SPLIT_SEED, "block": SPLIT_BLOCK, "tuning": tune, "held_out": held}}
    if rates:
        result["fallback_rates"] = rates
    for part, idx in (("tuning half", tune), ("held-out half", held), ("all", list(range(len(ious))))):
        r = summary(ious[idx], covers[idx], main_ious[idx])
        result[part.replace(" ", "_").replace("-", "_")] = r
        print(f"  {part:14s} ({r['n']:3d} slices)  IoU median {r['iou_median']:.3f}, 10th percentile {r['iou_p10']:.3f}, "
              f"min {r['iou_min']:.3f};  mask share inside the box median {r['cover_median']:.3f}, "
              f"10th percentile {r['cover_p10']:.3f};  IoU with the main parts median "
              f"{r['iou_main_parts_median']:.3f}, 10th percentile {r['iou_main_parts_p10']:.3f}")
    worst = np.argsort(ious)[: args.worst]
    print("  worst: " + ", ".join(f"{names[i]} (IoU {ious[i]:.2f}, cover {covers[i]:.2f})" for i in worst))
    result["per_slice"] = {
        n: {"iou": float(i), "cover": float(c), "iou_main_parts": float(m)}
        for n, i, c, m in zip(names, ious, covers, main_ious)
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.json)  # written whole or not at all
        print(f"  written: {args.json}")
    if not ok:
        print(f"\nFAIL: a fallback rate is above {args.max_fallback:.2%}")
    return 0 if ok else 1


def fallback_rates(root: Path, config: Path, max_fallback: float) -> tuple[bool, dict[str, float]]:
    """Part 1: print the fallback rates on the COVID19-CT train slices: ``(ok, rates)``, ``ok`` ``False`` when a rate
    is above ``max_fallback``."""
    datalist = covid_ct_datalist(root / "covid-ct", "train")
    print(f"Fallback (no lung found) on the {len(datalist)} COVID19-CT train slices:")
    ok, rates = True, {}
    for name, overrides in SETTINGS.items():
        if overrides is None:
            load, gen = Compose([]), LungLobeGenerator()
            images = [LoadCTSlice()(d["image"]) for d in datalist]
        else:
            load, gen = bundle_preprocessing(overrides, config)
            images = [load({"image": d["image"]})["image"] for d in datalist]
        fell = [Path(d["image"]).name for d, im in zip(datalist, images) if gen.locate(im.as_tensor())[1]]
        rate = len(fell) / len(datalist)
        ok &= rate <= max_fallback
        rates[name] = rate
        shape = tuple(images[0].shape[-2:])
        print(f"  {name:44s} {len(fell):3d}/{len(datalist)} = {rate:6.2%}   (first image {shape})")
        for f in fell:
            print(f"      fell back: {f}")
    return ok, rates


if __name__ == "__main__":
    sys.exit(main())
