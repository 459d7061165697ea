# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""A synthetic axial lung-CT slice phantom, for demos and tests where no data is given.

Never a substitute for the real data in the real-data tests: it is the embedded default for demos and for tests of
the plumbing (bundle runs, transforms on known label maps).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["PHANTOM_LABELS", "make_lung_phantom", "write_phantom_dataset"]

#: label values of the phantom's label map
PHANTOM_LABELS = {"air": 0, "body": 1, "lung": 2}


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = (dx * c + dy * s) / rx
    v = (-dx * s + dy * c) / ry
    return u * u + v * v <= 1.0


def make_lung_phantom(size: int = 256, seed: int = 0, ggo: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Draw one phantom slice: body, two lungs split into lobes by fissures, optional ground-glass blobs.

    Orientation follows the radiological convention of the real slices: rows run anterior to posterior, image
    left is the patient's right (the right lung, with three lobes, is on the image's left).

    Args:
        size: height and width in pixels.
        seed: seed of the random shape jitter, blobs and noise.
        ggo: add 1-4 ground-glass opacities (brighter hazy blobs) inside the lungs, as in COVID-19 slices.

    Returns:
        ``(image, labels)``: ``image`` float32 ``(size, size)`` in [0, 1] with 8-bit-like intensities (air ~0,
        soft tissue ~0.55-0.65, lung ~0.1, bone ~0.9), ``labels`` uint8 ``(size, size)`` with
        :data:`PHANTOM_LABELS` (air 0, body 1, lung 2).
    """
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}.")
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    j = lambda a: 1.0 + rng.uniform(-a, a)  # noqa: E731
    c = size / 2.0
    body = _ellipse(yy, xx, c * j(0.03), c * j(0.03), 0.36 * size * j(0.05), 0.46 * size * j(0.05))
    lung_r = _ellipse(yy, xx, c * j(0.03), 0.31 * size * j(0.03), 0.26 * size * j(0.06), 0.13 * size * j(0.06), 0.1)
    lung_l = _ellipse(yy, xx, c * j(0.03), 0.69 * size * j(0.03), 0.25 * size * j(0.06), 0.12 * size * j(0.06), -0.1)
    lungs = (lung_r | lung_l) & body
    spine = _ellipse(yy, xx, 0.8 * size, c, 0.05 * size, 0.05 * size) & body
    image = np.zeros((size, size), np.float32)
    image[body] = 0.6
    image[spine] = 0.9
    image[lungs] = 0.1
    # fissures: oblique lines through both lungs, horizontal (minor) fissure in the right lung only
    fissure = np.zeros_like(lungs)
    w = max(1.0, size / 256.0)
    fissure |= np.abs((yy - c) - 0.9 * (xx - 0.31 * size)) < w
    fissure |= np.abs((yy - c) + 0.9 * (xx - 0.69 * size)) < w
    fissure |= (np.abs(yy - 0.45 * size) < w) & (xx < 0.31 * size)
    image[fissure & lungs] = 0.25
    if ggo:
        for _ in range(int(rng.integers(1, 5))):
            ys, xs = np.nonzero(lungs)
            k = int(rng.integers(len(ys)))
            r = size * rng.uniform(0.03, 0.07)
            blob = np.exp(-(((yy - ys[k]) ** 2 + (xx - xs[k]) ** 2) / (2 * r * r)))
            image += (0.3 * blob * lungs).astype(np.float32)
    image += rng.normal(0.0, 0.02, image.shape).astype(np.float32) * body
    image = np.clip(image, 0.0, 1.0)
    labels = np.zeros((size, size), np.uint8)
    labels[body] = PHANTOM_LABELS["body"]
    labels[lungs] = PHANTOM_LABELS["lung"]
    return image, labels


def write_phantom_dataset(out_dir: str | os.PathLike, n_per_class: int = 6, size: int = 128, seed: int = 0) -> Path:
    """Write phantom slices as 8-bit PNGs in the COVID19-CT layout, readable by ``covid_ct_datalist``.

    COVID phantoms carry ground-glass blobs, NonCOVID ones do not. Each class's images are split half / quarter /
    quarter (at least one each) into train / val / test and listed in ``Data-split/{cls}/{split}CT_{cls}.txt``.

    Args:
        out_dir: the data set folder to create (``CT_COVID/``, ``CT_NonCOVID/``, ``Data-split/``).
        n_per_class: images per class (at least 3).
        size: image size in pixels.
        seed: base seed.

    Returns:
        the folder.
    """
    from PIL import Image

    if n_per_class < 3:
        raise ValueError(f"n_per_class must be at least 3 (one image per split), got {n_per_class}.")
    out = Path(out_dir)
    n_val = max(1, n_per_class // 4)
    n_test = max(1, n_per_class // 4)
    n_train = n_per_class - n_val - n_test
    for ci, cls in enumerate(("NonCOVID", "COVID")):
        img_dir = out / f"CT_{cls}"
        split_dir = out / "Data-split" / cls
        img_dir.mkdir(parents=True, exist_ok=True)
        split_dir.mkdir(parents=True, exist_ok=True)
        names = []
        for i in range(n_per_class):
            img, _ = make_lung_phantom(size, seed=seed * 100003 + ci * 1009 + i, ggo=cls == "COVID")
            name = f"phantom_{cls}_{i:03d}.png"
            Image.fromarray((img * 255).round().astype(np.uint8), mode="L").save(img_dir / name)
            names.append(name)
        splits = {"train": names[:n_train], "val": names[n_train : n_train + n_val], "test": names[n_train + n_val :]}
        for split, lst in splits.items():
            (split_dir / f"{split}CT_{cls}.txt").write_text("".join(f"{n}\n" for n in lst))
    return out
