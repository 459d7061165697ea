# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Draw the lobe Generator on real CT slices and count how often it falls back.

For a sample of slices from COVID19-CT, LUNA16 and the DICOM files it draws, side by side, the slice with its
lung box (white, dashed) and the five lobe boxes (ru, rm, rl, lu, ll), and the boundary map of the quantised
slice (air / body / lung) that located the lung box. It then runs the Generator over every COVID19-CT and
LUNA16 slice and prints the fraction that needed the fallback.

Usage::

    python scripts/lobe_demo.py --data-root ../shared/data --out docs/lobe_demo.png
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from mstl_monai.transforms import LOBE_NAMES, LoadCTSlice, LungLobeGenerator  # noqa: E402
from mstl_monai.transforms.lobe.functional import LUNG, boundary_map  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLOURS = {"ru": "#e41a1c", "rm": "#ff7f00", "rl": "#ffd92f", "lu": "#377eb8", "ll": "#4daf4a"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def covid_ct_files(root: Path) -> list[Path]:
    """All COVID19-CT slices (CT_COVID + CT_NonCOVID)."""
    files = _files(root / "covid-ct" / "CT_COVID") + _files(root / "covid-ct" / "CT_NonCOVID")
    if not files:
        raise FileNotFoundError(f"no COVID19-CT slices under {root / 'covid-ct'}")
    return files


def luna_files(root: Path) -> list[Path]:
    """All LUNA16 slices."""
    files = _files(root / "luna16")
    if not files:
        raise FileNotFoundError(f"no LUNA16 slices under {root / 'luna16'}")
    return files


def draw(ax_img, ax_map, img: torch.Tensor, gen: LungLobeGenerator, title: str) -> bool:
    """Draw one slice with its boxes and its boundary map; return whether the Generator fell back."""
    out = gen(img)
    _, _, info = gen.locate(img)
    gray = img[0].numpy()
    ax_img.imshow(gray, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    lx, ly, lw, lh = out.lung_box.tolist()
    ax_img.add_patch(Rectangle((lx - 0.5, ly - 0.5), lw, lh, fill=False, ec="white", lw=1.2, ls="--"))
    for name, (x, y, w, h) in zip(LOBE_NAMES, out.boxes.tolist()):
        ax_img.add_patch(Rectangle((x - 0.5, y - 0.5), w, h, fill=False, ec=COLOURS[name], lw=1.0))
        ax_img.text(x + 3, y + 3, name, color=COLOURS[name], fontsize=6, va="top", ha="left", weight="bold")
    ax_img.set_title(title + (" FALLBACK" if out.fallback else ""), fontsize=6, color="red" if out.fallback else "k")
    # boundary map of the quantised slice: gray = boundary, red = boundary pixels inside the lung class
    labels, bmap = info["labels"][0].numpy(), boundary_map(info["labels"])[0].numpy()
    rgb = np.zeros((*bmap.shape, 3), np.float32)
    rgb[bmap] = 0.55
    rgb[bmap & (labels == LUNG)] = (1.0, 0.25, 0.25)
    sy, sx = info["scale"]
    cx, cy = info["content_box"][:2]  # the map covers the slice inside its padding
    ax_map.imshow(rgb, interpolation="nearest")
    box = Rectangle(((lx - cx) / sx - 0.5, (ly - cy) / sy - 0.5), lw / sx, lh / sy, fill=False, ec="white", lw=1.0, ls="--")
    ax_map.add_patch(box)
    ax_map.set_title(f"boundary map ({bmap.shape[1]}x{bmap.shape[0]})", fontsize=6)
    for ax in (ax_img, ax_map):
        ax.set_xticks([])
        ax.set_yticks([])
    return out.fallback


def fallback_stats(files: list[Path], gen: LungLobeGenerator, load: LoadCTSlice) -> tuple[int, list[str], float]:
    """Run the Generator on every file; return (number of fallbacks, the names that fell back, seconds)."""
    names: list[str] = []
    t0 = time.perf_counter()
    for f in files:
        if gen(load(f)).fallback:
            names.append(f.name)
    return len(names), names, time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "lobe_demo.png")
    p.add_argument("--n-covid", type=int, default=9, help="COVID19-CT slices in the grid")
    p.add_argument("--n-luna", type=int, default=4, help="LUNA16 slices in the grid")
    p.add_argument("--cols", type=int, default=4, help="slices per grid row (each takes two panels)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", default="otsu", choices=("otsu", "multiotsu"), help="quantiser threshold")
    p.add_argument("--dpi", type=int, default=110)
    p.add_argument("--no-stats", action="store_true", help="skip the fallback count over all slices")
    p.add_argument("--files", type=Path, nargs="*", default=None, help="draw these files instead of a sample")
    args = p.parse_args(argv)

    root = args.data_root
    load, gen = LoadCTSlice(), LungLobeGenerator(spatial_size=224, method=args.method)
    rng = random.Random(args.seed)
    if args.files:
        sample = [(f.parent.name, f) for f in args.files]
    else:
        covid, luna = covid_ct_files(root), luna_files(root)
        dicom = sorted((root / "dicom").rglob("*.dcm"))
        sample = [("covid-ct", f) for f in rng.sample(covid, min(args.n_covid, len(covid)))]
        sample += [("luna16", f) for f in rng.sample(luna, min(args.n_luna, len(luna)))]
        sample += [("dicom", f) for f in dicom]

    cols = args.cols
    rows = -(-len(sample) // cols)
    fig, axes = plt.subplots(rows, 2 * cols, figsize=(2 * cols * 1.55, rows * 1.75), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for i, (src, f) in enumerate(sample):
        r, c = divmod(i, cols)
        ax_img, ax_map = axes[r, 2 * c], axes[r, 2 * c + 1]
        ax_img.axis("on")
        ax_map.axis("on")
        name = f.name if len(f.name) <= 28 else f.name[:12] + "..." + f.name[-13:]
        draw(ax_img, ax_map, load(f).as_tensor(), gen, f"{src}: {name}")
    fig.tight_layout(pad=0.3, w_pad=0.2, h_pad=0.4)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=args.dpi)
    plt.close(fig)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB, {len(sample)} slices)")

    if not args.no_stats and not args.files:
        for label, files in (("COVID19-CT", covid), ("LUNA16", luna)):
            n, names, secs = fallback_stats(files, gen, load)
            print(
                f"{label}: fallback on {n}/{len(files)} slices = {n / len(files):.1%} "
                f"({secs / len(files) * 1e3:.1f} ms per slice incl. loading)"
            )
            for nm in names:
                print(f"  fallback: {nm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
