# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""How much of a heatmap falls inside a box (e.g. the lung box, a lobe box)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from monai.config import NdarrayOrTensor

from mstl_monai.utils.type_conversion import to_numpy

__all__ = ["as_2d", "box_bounds", "box_area_fraction", "heatmap_mass_in_box"]


def as_2d(arr: NdarrayOrTensor, name: str = "heatmap") -> np.ndarray:
    """Return a float64 ``(H, W)`` array from ``(H, W)``, ``(1, H, W)`` or ``(1, 1, H, W)`` input."""
    a = to_numpy(arr, name).astype(np.float64)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2D map (H, W) (or with leading singleton dims), got {tuple(a.shape)}.")
    return a


def box_bounds(box: Sequence[float], shape: Sequence[int]) -> tuple[int, int, int, int]:
    """Pixel bounds ``(row0, row1, col0, col1)`` (half-open, clipped to ``shape``) of a box ``(x, y, w, h)``.

    ``x`` is the column and ``y`` the row of the top-left corner, ``w``/``h`` its width/height in pixels
    (the lobe-region tuples' convention); fractional edges are rounded to the nearest pixel edge (halves up).

    Raises:
        ValueError: for a box that is not 4 numbers or has a non-positive width/height.
    """
    if len(box) != 4:
        raise ValueError(f"box must be (x, y, w, h), got {box!r}.")
    x, y, w, h = (float(v) for v in box)
    if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
        raise ValueError(f"box (x, y, w, h) needs finite values and a positive width and height, got {tuple(box)}.")
    rows, cols = int(shape[0]), int(shape[1])
    r0, r1 = (int(np.clip(np.floor(v + 0.5), 0, rows)) for v in (y, y + h))
    c0, c1 = (int(np.clip(np.floor(v + 0.5), 0, cols)) for v in (x, x + w))
    return r0, max(r0, r1), c0, max(c0, c1)


def box_area_fraction(box: Sequence[float], shape: Sequence[int]) -> float:
    """Share of an image of ``shape`` ``(H, W)`` covered by ``box`` ``(x, y, w, h)`` (clipped to the image).

    This is what :func:`heatmap_mass_in_box` gives for a uniform map: the chance level to compare with.
    """
    if len(shape) < 2 or int(shape[-2]) <= 0 or int(shape[-1]) <= 0:
        raise ValueError(f"shape must end with a positive (H, W), got {tuple(shape)}.")
    hw = (int(shape[-2]), int(shape[-1]))
    r0, r1, c0, c1 = box_bounds(box, hw)
    return (r1 - r0) * (c1 - c0) / float(hw[0] * hw[1])


def heatmap_mass_in_box(heatmap: NdarrayOrTensor, box: Sequence[float]) -> float:
    """Share of a non-negative heatmap's total mass inside ``box`` ``(x, y, w, h)`` (x = column, y = row).

    .. code-block:: python

        inside = heatmap_mass_in_box(grad_cam(net, img)[0, 0], lung_box)
        chance = box_area_fraction(lung_box, img.shape[-2:])

    Raises:
        ValueError: for a heatmap that is not 2D, holds negative or non-finite values, or sums to 0.
    """
    hm = as_2d(heatmap)
    if not np.all(np.isfinite(hm)):
        raise ValueError("heatmap holds non-finite values (nan or inf).")
    if hm.min() < 0:
        raise ValueError(f"heatmap must be non-negative, got the value {hm.min()}.")
    total = hm.sum()
    if total <= 0:
        raise ValueError("heatmap sums to 0; the share of its mass in a box is undefined.")
    r0, r1, c0, c1 = box_bounds(box, hm.shape)
    return float(hm[r0:r1, c0:c1].sum() / total)
