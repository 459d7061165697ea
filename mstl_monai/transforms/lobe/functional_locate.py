# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Which dark parts of a slice are lung: the lung locator's core, shared by the per-image and the batched locator.

A slice resampled to the locator's size is split into dark parts enclosed by the body (:func:`find_parts`, numpy and
scipy on the CPU); every part is described by integer statistics (area, pixels at the air level, bounding box) and
the body by its integer moments; :func:`select_parts` decides from these numbers alone which parts are lung. The
batched locator (:mod:`.functional_batched`) computes the same integers with tensor ops on its device and calls the same
:func:`select_parts`, so both find the same lung box. What is rejected, and why:

- dark areas outside the body (between the body and the CT table, lines of text): a lung part must lie between
  pixels of the body (the largest bright part, its thin structures opened away) along its row and its column;
- gas pockets in the abdomen (stomach, bowel): their core is air (at the level of the air outside the body),
  while lung tissue is denser; a part with many pixels at the air level is gas, unless it is large or one of a
  mirrored pair of sizeable parts (both lungs dark: emphysema, a dark window);
- parts away from the lungs: the largest lung-like part, its mirror partner across the body's axis (the paired
  left/right lung) and big parts are the lungs; other parts count only inside (or next to) their extent or against
  the body wall (the thin lung tips at the bases), so a bubble of bowel gas within the abdomen in front of the lung
  bases does not stretch the box;
- fat and soft tissue just below the threshold (locally equalised images): a lung part is as dark as the lungs;
- specks: parts smaller than ``min_ratio`` of the largest lung part, and slices whose largest lung part is tiny.

:func:`select_series` adds the neighbouring slices of a series: a part counts when it continues the lung of the
slice next to it (towards the slice with the most lung). :func:`locate_parts` runs the per-image locator on a
resampled slice (find, select, the lung box; once more without the opening of the walls when no lung is found).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType
from typing import NamedTuple

import numpy as np
import torch
from scipy import ndimage as ndi

from .functional import LUNG, boundary_map, jit_kernels, lung_box_from_boundary
from .functional_quantize import binary_open_np, intensity_bins, threshold_bin, threshold_level

__all__ = [
    "Parts",
    "part_levels",
    "find_parts",
    "select_parts",
    "parts_box",
    "box_or_none",
    "select_series",
    "part_labels",
    "parts_lung_box",
    "locate_parts",
]

#: 8-connectivity
_S8 = np.ones((3, 3), dtype=bool)
#: a pixel is at the air level when it is at most this share of the body-air contrast above the outside air
GAS_LEVEL = 0.05
#: a part with at least this share of its pixels at the air level is gas-like
GAS_SHARE = 0.35
#: ... unless it covers at least this share of the body (a dark lung)
LARGE_SHARE = 0.15
#: ... or it is one of a mirrored pair of gas-like parts, each at least this share of the body, sizes within 1 : 1/ratio
PAIR_SHARE, PAIR_RATIO = 0.02, 0.3
#: a part below :data:`BIG_SHARE` of the body is as dark as the lungs: its mean level at most this share of the way
#: from the outside air to the threshold above the largest candidate part's (fat and soft tissue just below the
#: threshold, e.g. in locally equalised images, are not lung)
DARK_DELTA = 0.25
#: the air-level test is used only where the outside air is uniform: its 90th percentile at most this share of the
#: body-air contrast above its median (locally equalised images, e.g. CLAHE, stretch the lungs down to the air level)
AIR_SPREAD = 0.15
#: the body is the largest bright part when it holds at least this share of the bright pixels (after the opening)
#: and touches at most two sides of the image; else (a body in pieces, e.g. a soft-tissue window where only vessels
#: and bone are bright, or a picture cut inside the body, where the rest of the chest wall lies in other parts) all
#: bright parts are
BODY_SHARE = 0.85
#: the largest lung-like part must cover at least this share of the body, else the slice has no lung
MIN_MAIN = 0.004
#: parts at least this share of the largest lung part and of the body are lungs wherever they lie
BIG_RATIO, BIG_SHARE = 0.5, 0.02
#: a part lies against the body wall when it comes within this share of the body's longer extent of the body's
#: outline along its row or column (the thin lung tips at the bases; gas pockets lie within the abdomen)
WALL = 0.09
#: margin of the lungs' extent (and half of it around a mirrored part), as a share of the body's length
MARGIN = 0.1


class Parts(NamedTuple):
    """The dark parts enclosed by the body in a resampled slice (:func:`find_parts`).

    Attributes:
        labels: (H, W) int32, part ``i`` (0-based) is ``labels == i + 1``, 0 elsewhere.
        bright: (H, W) bool, the body class (pixels above the threshold).
        area: (n,) pixels per part.
        n_air: (n,) pixels per part at the air level.
        sum_q: (n,) sum of the levels of each part's pixels.
        n_wall: (n,) pixels per part against the body wall (:data:`WALL`).
        bbox: (n, 4) ``x0, y0, x1, y1`` (end exclusive).
        seeded: (n,) bool, the part survives the opening with ``open_size`` (all True without one).
        body: (6,) the body's integer moments ``n, sum x, sum y, sum x^2, sum y^2, sum xy``.
        levels: (2,) the outside air's median level and the threshold level.
    """

    labels: np.ndarray
    bright: np.ndarray
    area: np.ndarray
    n_air: np.ndarray
    sum_q: np.ndarray
    n_wall: np.ndarray
    bbox: np.ndarray
    seeded: np.ndarray
    body: np.ndarray
    levels: np.ndarray


def _level(hist: np.ndarray, share: float) -> int | None:
    """The lowest level holding at least ``share`` of the histogram's pixels, ``None`` for an empty histogram."""
    c = np.cumsum(hist)
    return None if c[-1] == 0 else int(np.searchsorted(c, -(-int(c[-1]) * int(share * 100) // 100)))


def part_levels(hist_air: np.ndarray, hist_body: np.ndarray, hist_all: np.ndarray) -> tuple[int, int]:
    """``(air, gas)``: the outside air's median level (the darkest occupied level when no pixel is outside the body)
    and the highest level counted as air (:data:`GAS_LEVEL` of the contrast to the body's median; -1, none, when the
    outside air is not uniform, :data:`AIR_SPREAD`), from the histograms of the outside air, the body and the slice."""
    air, air90 = _level(hist_air, 0.5), _level(hist_air, 0.9)
    if air is None:
        air = air90 = int(np.flatnonzero(hist_all)[0]) if hist_all.any() else 0
    body = _level(hist_body, 0.5)
    span = 0 if body is None else max(body - air, 0)
    if air90 - air > AIR_SPREAD * span:
        return air, -1
    return air, air + int(span * GAS_LEVEL)


def _first_last(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row of a C-contiguous bool (H, W) mask: the first and the last column holding a pixel (int16) and whether
    the row holds one at all. ``argmax`` of a contiguous bool row stops at the first True (the fast path)."""
    h, w = mask.shape
    first = mask.argmax(1)
    any_ = mask[np.arange(h), first]
    last = w - 1 - np.ascontiguousarray(mask[:, ::-1]).argmax(1)
    return first.astype(np.int16), last.astype(np.int16), any_


def _spans(start: np.ndarray, length: np.ndarray, axis_len: int, along_rows: bool) -> np.ndarray:
    """The (H, W) bool mask of the per-line ranges ``[start, start + length)`` (``length`` <= 0: empty), along the
    rows (``start`` per row) or the columns. One subtraction and one unsigned comparison: ``i - start`` wraps
    around to a large number below the start."""
    i = np.arange(axis_len, dtype=np.int16)
    if along_rows:
        offset, bound = i[None] - start[:, None], length[:, None]
    else:
        offset, bound = i[:, None] - start[None], length[None]
    return offset.view(np.uint16) < np.maximum(bound, 0).astype(np.uint16)


def body_moments(filled: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The integer moments ``n, sum x, sum y, sum x^2, sum y^2, sum xy`` (int64) of a bool mask whose first pixel
    sits at ``origin`` (x, y) of the image."""
    h, w = filled.shape
    x = np.arange(origin[0], origin[0] + w, dtype=np.int64)
    y = np.arange(origin[1], origin[1] + h, dtype=np.int64)
    f = filled.view(np.uint8).astype(np.float32)
    # per row the pixel count and the sum of x: float32 sums below 2**24 are exact (images up to 4096 pixels wide)
    rows_rx = (f @ np.stack([np.ones(w, np.float32), x.astype(np.float32)], 1)).astype(np.int64)
    cols = (np.ones(h, np.float32) @ f).astype(np.int64)
    rows, rx = rows_rx[:, 0], rows_rx[:, 1]
    return np.array([cols.sum(), cols @ x, rows @ y, cols @ (x * x), rows @ (y * y), rx @ y])


def _threshold(
    gray: np.ndarray, threshold: float | None, method: str, kernels: ModuleType | None
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray, np.ndarray]:
    """``(q, hist, k, bright, hist_body)``: the 256 levels of a slice (int32), their histogram, the threshold level,
    the bright pixels (the body class) and their histogram; Otsu's on the levels, or a fixed ``threshold``."""
    if threshold is None:
        if kernels is not None and gray.dtype == np.float32:  # (float64 levels: numpy's products, below)
            q, hist = kernels.bins_hist(np.ascontiguousarray(gray))
            k = kernels.otsu_bin(hist) if method == "otsu" else threshold_bin(hist, method)
        else:
            q = intensity_bins(gray, threshold)
            hist = np.bincount(q.ravel(), minlength=256)
            k = threshold_bin(hist, method)
        bright = q > k
        hist_body = hist.copy()
        hist_body[: k + 1] = 0  # the bright pixels are exactly the levels above k
        return q, hist, k, bright, hist_body
    q = intensity_bins(gray, threshold)
    hist = np.bincount(q.ravel(), minlength=256)
    k = threshold_level(float(gray.min()), float(gray.max()), threshold)
    bright = gray > np.float32(threshold)
    return q, hist, k, bright, np.bincount(q[bright], minlength=256)


def _seeded(labels: np.ndarray, n: int, open_size: int) -> np.ndarray:
    """Which of the ``n`` parts survive an opening with an ``open_size`` square (all of them for 1)."""
    if open_size <= 1 or n == 0:
        return np.ones(n, dtype=bool)
    return np.bincount(labels[binary_open_np(labels > 0, open_size)], minlength=n + 1)[1:] > 0


def find_parts(
    gray: np.ndarray,
    threshold: float | None = None,
    method: str = "otsu",
    open_walls: int = 3,
    open_size: int = 1,
    jit: bool | None = None,
) -> Parts | None:
    """The dark parts enclosed by the body of a resampled (H, W) float32 slice, or ``None`` (no body).

    Bright pixels (above Otsu's threshold, or ``threshold``) are the body class; they are opened with an
    ``open_walls`` square (thin bright structures such as the CT table go) and their largest 8-connected part is
    the body (all of them when it holds less than :data:`BODY_SHARE` or touches more than two sides). Dark pixels
    between body pixels along their row and their column are the candidate parts (8-connected). ``open_size`` > 1:
    a part must also survive an opening with that square (thin slits only).

    ``jit``: run the numba-compiled version (:mod:`.functional_jit`; ``None``: when numba is installed,
    ``True``: ``RuntimeError`` without it) or the numpy one (``False``). Both give identical parts.
    """
    kernels = None if jit is False else jit_kernels()
    if jit and kernels is None:
        raise RuntimeError("find_parts(jit=True) needs numba, which cannot be imported.")
    q, hist, k, bright, hist_body = _threshold(gray, threshold, method, kernels)
    if kernels is not None:
        n, labels, stats, body_m, air, gas = kernels.parts_kernel(
            q, bright.view(np.uint8), hist, hist_body, open_walls, WALL, BODY_SHARE, GAS_LEVEL, AIR_SPREAD
        )
        if n < 0:
            return None
        area, n_air, sum_q, n_wall = stats[:, :4].T
        levels = np.array([air, k], dtype=np.int64)
        seeded = _seeded(labels, n, open_size)
        return Parts(labels, bright, area, n_air, sum_q, n_wall, stats[:, 4:], seeded, body_m, levels)
    opened = binary_open_np(bright, open_walls)
    walls, n_walls = ndi.label(opened, _S8)
    if n_walls == 0:
        return None
    body = opened  # one part: the body whichever rule applies
    if n_walls > 1:
        sizes = np.bincount(walls.ravel())
        sizes[0] = 0
        body = walls == int(np.argmax(sizes))
        sides = int(body[0].any()) + int(body[-1].any()) + int(body[:, 0].any()) + int(body[:, -1].any())
        if sizes.max() < BODY_SHARE * sizes.sum() or sides > 2:
            body = opened  # all the bright parts
    # everything below lies inside the body's bounding box: work on that window (x0, y0) .. (x1, y1)
    rows_any, cols_any = body.any(1), body.any(0)
    y0, x0 = int(rows_any.argmax()), int(cols_any.argmax())
    y1, x1 = len(rows_any) - int(rows_any[::-1].argmax()), len(cols_any) - int(cols_any[::-1].argmax())
    win = np.s_[y0:y1, x0:x1]
    # inside: between the body's first and last pixel along the row and along the column; against the wall: within
    # ``reach`` of one of them (the body's outline, along rows and columns), i.e. not deeper inside than that
    wb = np.ascontiguousarray(body[win])
    x_first, x_last, rows = _first_last(wb)
    y_first, y_last, cols = _first_last(np.ascontiguousarray(wb.T))
    reach = int(WALL * max(int(rows.sum()), int(cols.sum())))
    x_len, y_len = np.where(rows, x_last - x_first + 1, 0), np.where(cols, y_last - y_first + 1, 0)
    inside = _spans(x_first, x_len, x1 - x0, True) & _spans(y_first, y_len, y1 - y0, False)
    deep = _spans(x_first + (reach + 1), x_len - (2 * reach + 2), x1 - x0, True)
    deep &= _spans(y_first + (reach + 1), y_len - (2 * reach + 2), y1 - y0, False)
    dark = inside > bright[win]  # inside and not bright
    win_labels, n = ndi.label(dark, _S8)
    labels = np.zeros(q.shape, dtype=win_labels.dtype)
    labels[win] = win_labels
    # the dark pixels (flat indices into the window, found once): their part (0-based), level and whether against
    # the wall
    at = np.flatnonzero(dark)
    part = win_labels.ravel().take(at) - 1
    q_dark = np.ascontiguousarray(q[win]).ravel().take(at)
    air, gas = part_levels(hist - hist_body - np.bincount(q_dark, minlength=256), hist_body, hist)
    area = np.bincount(part, minlength=n)
    n_air = np.bincount(part[q_dark <= gas], minlength=n)
    sum_q = np.bincount(part, q_dark, minlength=n).round().astype(np.int64)
    n_wall = np.bincount(part[~deep.ravel().take(at)], minlength=n)
    bbox = np.array(
        [(sx.start, sy.start, sx.stop, sy.stop) for sy, sx in ndi.find_objects(win_labels)], dtype=np.int64
    ).reshape(n, 4) + np.array([x0, y0, x0, y0])
    seeded = _seeded(labels, n, open_size)
    levels = np.array([air, k], dtype=np.int64)
    # the body's moments: of all it encloses (the body lies inside its own extent)
    return Parts(labels, bright, area, n_air, sum_q, n_wall, bbox, seeded, body_moments(inside, (x0, y0)), levels)


def _overlaps(
    box: Sequence[float], x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray, margin: float
) -> np.ndarray:
    """Which of the boxes given by their columns ``x0, y0, x1, y1`` come within ``margin`` of ``box``."""
    return (box[0] - margin < x1) & (x0 - margin < box[2]) & (box[1] - margin < y1) & (y0 - margin < box[3])


def select_parts(
    area: np.ndarray,
    n_air: np.ndarray,
    sum_q: np.ndarray,
    n_wall: np.ndarray,
    bbox: np.ndarray,
    seeded: np.ndarray,
    body: np.ndarray,
    levels: np.ndarray,
    min_ratio: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Which parts are lung, from the statistics of :class:`Parts` (see the module docstring).

    Args:
        area: (n,) pixels per part.
        n_air: (n,) pixels per part at the air level.
        sum_q: (n,) sum of the levels of each part's pixels.
        n_wall: (n,) pixels per part against the body wall.
        bbox: (n, 4) bounding boxes ``x0, y0, x1, y1``.
        seeded: (n,) parts allowed at all (survived the thin-slit opening).
        body: (6,) the body's integer moments (:func:`body_moments`).
        levels: (2,) the outside air's median level and the threshold level.
        min_ratio: parts smaller than this share of the largest lung part are dropped.

    Returns:
        ``(keep, lung_like)``: bool (n,) arrays, the lung parts and the parts that may be lung (not gas-like, not
        thin slits, as dark as the lungs).
    """
    area, n_air, sum_q, bbox = (np.asarray(v, dtype=np.int64) for v in (area, n_air, sum_q, bbox))
    n = len(area)
    keep = np.zeros(n, dtype=bool)
    nb = float(body[0])
    if n == 0 or nb <= 0:
        return keep, keep.copy()
    # the body's centre and second moments (Python floats: the same IEEE arithmetic as numpy's float64, less overhead)
    s1, s2, s3, s4, s5 = (int(v) for v in body[1:6])
    mx, my = s1 / nb, s2 / nb
    cxx, cyy = s3 / nb - mx * mx, s4 / nb - my * my
    cxy = s5 / nb - mx * my
    d = cxx - cyy
    major_var = 0.5 * (cxx + cyy) + math.sqrt(0.25 * d**2 + cxy * cxy)
    margin = MARGIN * math.sqrt(12.0 * max(major_var, 0.0))  # the body's length: a uniform bar of this variance
    x0, y0, x1, y1 = bbox.T
    wide = cxx >= cyy

    def mirrored(i: int) -> tuple[float, float, float, float]:
        """Part ``i``'s box mirrored across the body's short axis (the left/right lungs swap)."""
        b = [int(v) for v in bbox[i]]
        if wide:
            return 2.0 * mx - b[2], float(b[1]), 2.0 * mx - b[0], float(b[3])
        return float(b[0]), 2.0 * my - b[3], float(b[2]), 2.0 * my - b[1]

    gas = n_air >= GAS_SHARE * area
    sizeable = area >= PAIR_SHARE * nb
    dark_lung = area >= LARGE_SHARE * nb
    for i in np.flatnonzero(gas & sizeable & ~dark_lung).tolist():
        a = int(area[i])
        partner = _overlaps(mirrored(i), x0, y0, x1, y1, 0.5 * margin) & sizeable & gas
        partner &= (area >= PAIR_RATIO * a) & (PAIR_RATIO * area <= a)  # similar sizes
        partner[i] = False
        dark_lung[i] = partner.any()
    air, k = int(levels[0]), int(levels[1])
    position = (sum_q / np.maximum(area, 1) - air) / max(k - air, 1)  # mean level: 0 the air, 1 the threshold
    candidates = np.asarray(seeded, dtype=bool) & (~gas | dark_lung)
    if not candidates.any():
        return keep, candidates
    reference = float(position[int(np.argmax(np.where(candidates, area, -1)))])
    lung_like = candidates & ((position <= reference + DARK_DELTA) | (area >= BIG_SHARE * nb))
    if not lung_like.any():
        return keep, lung_like
    main = int(np.argmax(np.where(lung_like, area, -1)))
    a_main = int(area[main])
    if a_main < MIN_MAIN * nb:
        return keep, lung_like
    keep[main] = True
    not_small = lung_like & (area >= min_ratio * a_main)
    keep |= lung_like & (area >= BIG_RATIO * a_main) & (area >= BIG_SHARE * nb)
    keep |= not_small & _overlaps(mirrored(main), x0, y0, x1, y1, 0.5 * margin)
    extent = (int(x0[keep].min()), int(y0[keep].min()), int(x1[keep].max()), int(y1[keep].max()))
    keep |= not_small & (_overlaps(extent, x0, y0, x1, y1, margin) | (np.asarray(n_wall) > 0))
    return keep, lung_like


def parts_box(
    bbox: np.ndarray, keep: np.ndarray, height: int, width: int, min_fraction: float = 0.1
) -> tuple[int, int, int, int] | None:
    """The lung box ``(x, y, w, h)``: the extent of the kept parts, or ``None`` when none is kept or the box's longer
    side (relative to the image's) is below ``min_fraction`` or its shorter below half of that."""
    if not np.any(keep):
        return None
    b = np.asarray(bbox)[np.asarray(keep)]
    x0, y0, x1, y1 = int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())
    return box_or_none((x0, y0, x1 - x0, y1 - y0), height, width, min_fraction)


def box_or_none(
    box: tuple[int, int, int, int], height: int, width: int, min_fraction: float
) -> tuple[int, int, int, int] | None:
    """``box`` when it is large enough for :func:`parts_box`'s rule, else ``None``."""
    fw, fh = box[2] / width, box[3] / height
    if max(fw, fh) < min_fraction or min(fw, fh) < 0.5 * min_fraction:
        return None
    return box


def select_series(
    labels: Sequence[np.ndarray | None], lung_like: Sequence[np.ndarray], keep: Sequence[np.ndarray], reach: int = 2
) -> list[np.ndarray]:
    """Per-slice lung parts of a series, each slice checked against its neighbour.

    The slice with the most lung (by the per-slice decision ``keep``) keeps its parts; from there outwards, slice
    by slice, a slice keeps its lung-like parts that touch the lung of the slice before it (within ``reach``
    pixels; after a slice without lung, of the last slice with lung): the lung continues from slice to slice, gas
    below the diaphragm and dark areas away from the lungs do not. All slices must share one grid.

    Args:
        labels: per slice the part labels of :class:`Parts` (``None``: no body).
        lung_like: per slice a bool array, the parts that may be lung (not gas-like, not thin slits).
        keep: per slice the per-slice decision of :func:`select_parts`.
        reach: how far (pixels) a part may lie from the neighbour's lung.

    Returns:
        per slice the bool array of the parts kept.
    """
    n = len(labels)
    out = [np.asarray(k, dtype=bool).copy() for k in keep]
    if n == 0:
        return out
    lung_area = [
        0 if lab is None or not k.any() else int(np.isin(lab, np.flatnonzero(k) + 1).sum()) for lab, k in zip(labels, out)
    ]
    core = int(np.argmax(lung_area))
    for step in (-1, 1):
        ref = None if labels[core] is None else np.isin(labels[core], np.flatnonzero(out[core]) + 1)
        for i in range(core + step, n if step > 0 else -1, step):
            lab = labels[i]
            if lab is None or ref is None or not ref.any():
                continue
            near = ndi.binary_dilation(ref, _S8, iterations=reach)
            touching = np.zeros(len(out[i]), dtype=bool)
            touching[np.unique(lab[near & (lab > 0)]) - 1] = True
            out[i] = touching & np.asarray(lung_like[i], dtype=bool)
            if out[i].any():  # the next slice continues this one's lung, else still the last lung found
                ref = np.isin(lab, np.flatnonzero(out[i]) + 1)
    return out


def part_labels(parts: Parts | None, keep: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
    """The (1, H', W') uint8 ``AIR``/``BODY``/``LUNG`` labels of a resampled slice, the ``keep`` parts as lung."""
    if parts is None:
        return torch.zeros((1, *shape), dtype=torch.uint8)
    labels = parts.bright.astype(np.uint8)  # BODY where bright
    labels[np.concatenate([[False], keep])[parts.labels]] = LUNG
    return torch.from_numpy(labels)[None]


def parts_lung_box(
    parts: Parts | None, keep: np.ndarray, shape: tuple[int, int], trim: float = 0.0, min_box_fraction: float = 0.1
) -> tuple[int, int, int, int] | None:
    """The lung box (x, y, w, h) of the ``keep`` parts in the resampled slice, or ``None`` (no lung): their extent,
    or with a ``trim`` the extent of the lung's boundary pixels (:func:`~.functional.lung_box_from_boundary`)."""
    if parts is None or not keep.any():
        return None
    if trim == 0.0:
        return parts_box(parts.bbox, keep, shape[0], shape[1], min_box_fraction)
    labels = part_labels(parts, keep, shape)
    box = lung_box_from_boundary(boundary_map(labels)[0], labels[0], trim=trim, min_fraction=0.0, min_pixels=1)
    return None if box is None else box_or_none(box, shape[0], shape[1], min_box_fraction)


def locate_parts(
    gray: np.ndarray,
    threshold: float | None = None,
    method: str = "otsu",
    open_walls: int = 3,
    open_size: int = 1,
    min_ratio: float = 0.05,
    trim: float = 0.0,
    min_box_fraction: float = 0.1,
) -> tuple[Parts | None, np.ndarray, np.ndarray, tuple[int, int, int, int] | None]:
    """The per-image locator on a resampled (H', W') float32 slice: ``(parts, keep, lung_like, box)``, the dark parts
    (:func:`find_parts`), which are lung and may be lung (:func:`select_parts`) and the lung box
    (:func:`parts_lung_box`, ``None``: no lung). First with the bright walls opened by ``open_walls`` (the CT table
    encloses nothing), once more without that opening when it finds no lung."""
    parts, keep, like, box = None, np.zeros(0, dtype=bool), np.zeros(0, dtype=bool), None
    for walls in dict.fromkeys((open_walls, 1)):
        found = find_parts(gray, threshold, method, walls, open_size)
        if found is None:
            continue
        parts = found
        keep, like = select_parts(*found[2:], min_ratio=min_ratio)
        box = parts_lung_box(parts, keep, gray.shape, trim, min_box_fraction)
        if box is not None:
            break
    return parts, keep, like, box
