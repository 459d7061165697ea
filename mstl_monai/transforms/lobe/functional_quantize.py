# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Functional core of the lung quantiser: air / body / lung labels of a slice from one threshold (tensor ops on the
slice's device), Otsu and multi-Otsu thresholds, the binary opening, and the filter of the lung class's parts; and
their numpy twins on 256 integer levels, which the lung locator (:mod:`.functional_locate`) works with."""

from __future__ import annotations

import numpy as np
import torch
from monai.utils import optional_import

from .functional import AIR, LUNG, cpu_single_thread, window3

measure, _ = optional_import("skimage.measure")

__all__ = [
    "otsu_threshold",
    "multiotsu_low_threshold",
    "inside_along",
    "THRESHOLD_METHODS",
    "quantize_lung",
    "binary_open",
    "filter_lung_components",
    "intensity_bins",
    "threshold_level",
    "threshold_bin",
    "window3_np",
    "binary_open_np",
]


def otsu_threshold(img: torch.Tensor, bins: int = 256, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """Otsu's threshold of the values of ``img`` in ``[lo, hi]`` (a 0-dim tensor on ``img``'s device)."""
    x = img.reshape(-1).float()
    hist = torch.histc(x, bins=bins, min=lo, max=hi)
    centres = torch.linspace(lo, hi, bins + 1, device=x.device)
    centres = (centres[:-1] + centres[1:]) * 0.5
    w0 = torch.cumsum(hist, 0)
    total = w0[-1]
    m0 = torch.cumsum(hist * centres, 0)
    w1 = total - w0
    mu0 = m0 / w0.clamp_min(1)
    mu1 = (m0[-1] - m0) / w1.clamp_min(1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    between = torch.where((w0 > 0) & (w1 > 0), between, torch.zeros_like(between))
    k = int(torch.argmax(between))
    return (centres[k] + (hi - lo) / bins * 0.5).to(img.dtype if img.is_floating_point() else torch.float32)


def multiotsu_low_threshold(img: torch.Tensor, bins: int = 64, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    """The lower of the two thresholds of a 3-class Otsu (multi-Otsu) on the values of ``img`` in ``[lo, hi]``.

    Separates the darkest class (air, lung) from the rest more reliably than a 2-class Otsu when the slice is
    shown in a soft-tissue window (fat and muscle form their own classes).
    """
    x = img.reshape(-1).float()
    hist = torch.histc(x, bins=bins, min=lo, max=hi).double()
    width = (hi - lo) / bins
    centres = lo + width * (torch.arange(bins, device=x.device, dtype=torch.float64) + 0.5)
    p, s = torch.cumsum(hist, 0), torch.cumsum(hist * centres, 0)
    tot_p, tot_s = p[-1], s[-1]
    w0, s0 = p[:, None], s[:, None]  # class 0: bins [0, i]
    w1, s1 = p[None, :] - p[:, None], s[None, :] - s[:, None]  # class 1: (i, j]
    w2, s2 = tot_p - p[None, :], tot_s - s[None, :]  # class 2: (j, end)
    valid = (w0 > 0) & (w1 > 0) & (w2 > 0)
    var = s0**2 / w0.clamp_min(1e-12) + s1**2 / w1.clamp_min(1e-12) + s2**2 / w2.clamp_min(1e-12)
    var = torch.where(valid, var, torch.full_like(var, -1.0))
    i = int(torch.argmax(var)) // bins
    return torch.tensor(lo + width * (i + 1), dtype=torch.float32, device=x.device)


def inside_along(bright: torch.Tensor, dim: int) -> torch.Tensor:
    """True between the first and the last bright pixel of each line along ``dim`` (inclusive).

    With ``c`` the running count of bright pixels: a bright pixel lies at or before ``j`` when ``c[j] > 0`` and
    at or after ``j`` when ``c[j] - b[j]`` is less than the line's total.
    """
    b = bright.to(torch.int32)
    c = torch.cumsum(b, dim, dtype=torch.int32)
    total = c.narrow(dim, c.shape[dim] - 1, 1)
    return (c > 0) & ((c - b) < total)


#: automatic thresholds of :func:`quantize_lung`
THRESHOLD_METHODS = {"otsu": otsu_threshold, "multiotsu": multiotsu_low_threshold}


def quantize_lung(
    img: torch.Tensor,
    threshold: float | torch.Tensor | None = None,
    single_thread: bool = True,
    method: str = "otsu",
    open_walls: int = 1,
) -> torch.Tensor:
    """Quantise a CT slice (..., H, W) into ``AIR`` (0), ``BODY`` (1) and ``LUNG`` (2) labels (uint8).

    Pixels brighter than ``threshold`` are body (tissue, bone, vessels; also a bright background). Dark
    pixels are lung when they lie between bright pixels both along their row and along their column (i.e.
    enclosed by the body), otherwise outside air. Everything is tensor ops on ``img``'s device.

    Args:
        img: intensities, (..., H, W); every 2D image is quantised on its own.
        threshold: the dark/bright threshold in ``img``'s units; ``None`` takes Otsu's threshold of each image
            (intensities expected in [0, 1]).
        single_thread: on CPU, run on one intra-op thread (see :func:`cpu_single_thread`).
        method: automatic threshold when ``threshold`` is ``None``: ``"otsu"`` (2 classes) or ``"multiotsu"``
            (the lower threshold of 3 classes).
        open_walls: when > 1, the bright pixels that enclose the lung are first opened with a square of this
            side, so that thin bright structures (the CT table, lines, text) do not enclose dark areas.

    Returns:
        a uint8 label tensor of the same shape.
    """
    if img.ndim < 2:
        raise ValueError(f"quantize_lung needs a (..., H, W) image, got shape {tuple(img.shape)}.")
    if method not in THRESHOLD_METHODS:
        raise ValueError(f"method must be one of {tuple(THRESHOLD_METHODS)}, got {method!r}.")
    with cpu_single_thread(single_thread and img.device.type == "cpu"):
        return _quantize(img, threshold, method, open_walls)


def _square_filter(x: torch.Tensor, op, size: int) -> torch.Tensor:
    """``op`` (torch.maximum / torch.minimum) over a clipped ``size`` x ``size`` square of a (N, H, W) tensor."""
    out = x.clone()
    tmp = torch.empty_like(x)
    for _ in range(size // 2):  # a (2r+1) square is r separable 3-wide passes along each axis
        window3(out, tmp, op, -1)
        window3(tmp, out, op, -2)
    return out


def binary_open(mask: torch.Tensor, size: int) -> torch.Tensor:
    """Morphological opening of a (N, H, W) bool mask with an odd ``size`` x ``size`` square.

    Out-of-image pixels are ignored (like the boundary map), so the image border does not erode the mask.
    """
    if size < 1 or size % 2 == 0:
        raise ValueError(f"binary_open needs an odd size >= 1, got {size}.")
    if size == 1:
        return mask.clone()
    m = mask.to(torch.uint8)
    return _square_filter(_square_filter(m, torch.minimum, size), torch.maximum, size).bool()


def _quantize(
    img: torch.Tensor, threshold: float | torch.Tensor | None, method: str, open_walls: int = 1
) -> torch.Tensor:
    shape = img.shape
    x = img.reshape(-1, shape[-2], shape[-1])
    if threshold is None:
        fn = THRESHOLD_METHODS[method]
        t = torch.stack([fn(xi.clamp(0, 1)) for xi in x]).reshape(-1, 1, 1).to(x.device)
        bright = x > t
    else:
        bright = x > torch.as_tensor(threshold, device=x.device, dtype=x.dtype if x.is_floating_point() else None)
    walls = bright if open_walls <= 1 else binary_open(bright, open_walls)
    inside = inside_along(walls, -1) & inside_along(walls, -2)
    labels = bright.to(torch.uint8)  # BODY where bright
    labels.masked_fill_(inside & ~bright, LUNG)
    return labels.reshape(shape)


def filter_lung_components(labels: torch.Tensor, open_size: int = 3, min_ratio: float = 0.05) -> torch.Tensor:
    """Keep the connected parts of the ``LUNG`` class of a (1, H, W) label image that look like lung.

    A part (8-connected) is kept when it survives a morphological opening with an ``open_size`` square (it is
    not only thin dark slits, such as gaps in the CT table or lines of text; the opening is by reconstruction,
    so the thin tips of a kept lung stay) and its area is at least ``min_ratio`` of the largest such part's
    (drops stray dark specks, bowel gas and the stomach bubble, which would otherwise stretch the lung box).
    Dropped pixels become ``AIR``. The labelling runs on the CPU (scikit-image) on the small located image.
    """
    lung = labels == LUNG
    if not bool(lung.any()):
        return labels
    seeds = lung if open_size <= 1 else binary_open(lung.reshape(-1, *lung.shape[-2:]), open_size).reshape(lung.shape)
    lung_np = lung.reshape(lung.shape[-2:]).cpu().numpy()
    lab = measure.label(lung_np, connectivity=2)
    n = int(lab.max())
    area = np.bincount(lab.ravel(), minlength=n + 1)
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[lab[seeds.reshape(lung.shape[-2:]).cpu().numpy()]] = True
    seeded[0] = False
    if not seeded.any():
        keep = seeded
    else:
        keep = seeded & (area >= min_ratio * area[seeded].max())
    drop = torch.from_numpy(lung_np & ~keep[lab]).to(labels.device).reshape(labels.shape)
    return labels.masked_fill(drop, AIR)


# ---------------------------------------------------------------------------------------------------------------
# numpy twins on 256 integer levels (the lung locator's)
# ---------------------------------------------------------------------------------------------------------------
def intensity_bins(gray: np.ndarray, threshold: float | None) -> np.ndarray:
    """Intensities as 256 integer levels (int32): ``floor(256 x)`` of ``x`` clipped to [0, 1]; with a fixed
    ``threshold`` (e.g. Hounsfield units) the image's own range is mapped to [0, 1] first."""
    g = gray
    if threshold is not None:
        lo, hi = float(g.min()), float(g.max())
        scale = np.float32(1.0 / (hi - lo)) if hi > lo else np.float32(0.0)
        g = (g - np.float32(lo)) * scale
    q = (g * np.float32(256.0)).astype(np.int32)  # truncation: the same as clipping to [0, 1] first
    return np.clip(q, 0, 255, out=q)


def threshold_level(lo: float, hi: float, threshold: float) -> int:
    """The level of a fixed ``threshold`` on the scale of :func:`intensity_bins` (the image's own range ``lo, hi``)."""
    return int(min(max((threshold - lo) / (hi - lo) * 256.0, 0.0), 255.0)) if hi > lo else 0


#: the bin centres of a 256-level histogram (:func:`threshold_bin`)
_CENTRES_256 = (np.arange(256) + 0.5) / 256


def threshold_bin(hist: np.ndarray, method: str = "otsu") -> int:
    """The level ``k`` (pixels with level > ``k`` are bright) from a 256-level histogram: Otsu's threshold, or for
    ``"multiotsu"`` the lower threshold of a 3-class Otsu on 64 levels."""
    h = np.asarray(hist, dtype=np.float64)
    if method == "multiotsu":
        h = h.reshape(64, 4).sum(1)
    bins = len(h)
    centres = _CENTRES_256 if bins == 256 else (np.arange(bins) + 0.5) / bins
    p, s = np.cumsum(h), np.cumsum(h * centres)
    if method == "multiotsu":
        tot_p, tot_s = p[-1], s[-1]
        w0, s0 = p[:, None], s[:, None]
        w1, s1 = p[None, :] - p[:, None], s[None, :] - s[:, None]
        w2, s2 = tot_p - p[None, :], tot_s - s[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            var = s0**2 / w0 + s1**2 / w1 + s2**2 / w2
        var = np.where((w0 > 0) & (w1 > 0) & (w2 > 0), var, -1.0)
        return int(np.argmax(var) // bins) * 4 + 3
    w1 = p[-1] - p
    mu0 = s / np.maximum(p, 1)
    mu1 = (s[-1] - s) / np.maximum(w1, 1)
    # the between-class variance (times n^2); 0 where a class is empty (p or w1 is 0)
    return int(np.argmax(p * w1 * (mu0 - mu1) ** 2))


def window3_np(x: np.ndarray, op) -> np.ndarray:
    """``op`` (np.minimum / np.maximum) over the 3x3 window of each pixel, clipped at the image border."""
    o = x.copy()
    op(o[:, :-1], x[:, 1:], out=o[:, :-1])
    op(o[:, 1:], x[:, :-1], out=o[:, 1:])
    p = o.copy()
    op(p[:-1], o[1:], out=p[:-1])
    op(p[1:], o[:-1], out=p[1:])
    return p


def binary_open_np(mask: np.ndarray, size: int) -> np.ndarray:
    """Opening of a bool mask with a ``size`` square (odd), out-of-image pixels ignored (as :func:`binary_open`)."""
    if size <= 1:
        return mask
    x = mask.view(np.uint8)
    for _ in range(size // 2):
        x = window3_np(x, np.minimum)
    for _ in range(size // 2):
        x = window3_np(x, np.maximum)
    return x.view(bool)
