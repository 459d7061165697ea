# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Functional core of the lobe Generator: the 3x3 boundary map, the lung quantiser and the lung box."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from monai.utils import optional_import

measure, _ = optional_import("skimage.measure")

__all__ = [
    "boundary_map",
    "sliding_window_boundary_map",
    "cpu_single_thread",
    "content_box",
    "filter_lung_components",
]

#: bytes of label data a CPU chunk works on (cache-sized: fresh large buffers and page faults dominate otherwise)
_CPU_CHUNK_BYTES = 1 << 20


@contextmanager
def cpu_single_thread(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed CPU tensor ops on one intra-op thread, restoring the thread count afterwards.

    The Generator's ops are small and memory-bound: splitting them over OpenMP threads buys nothing and, on a
    machine whose cores are busy (DataLoader workers, other processes), the threads' barriers can cost 10-100x
    the work itself. DataLoader worker processes already run with one thread; this makes the main process
    behave the same. The switch costs about 20 microseconds.
    """
    n = torch.get_num_threads()
    if not enabled or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _window3(src: torch.Tensor, dst: torch.Tensor, op, dim: int) -> None:
    """``dst = op`` over the 3-wide window of ``src`` along ``dim`` (-1 or -2), clipped at the borders.

    Out-of-image neighbours are ignored, which is what scikit-image's grey dilation/erosion do with their
    default ``reflect`` border. Three calls: ``dst[j] = op(src[j], src[j + 1])``, ``dst[-1] = src[-1]``, then
    ``dst[j] = op(dst[j], src[j - 1])`` (elementwise in place).
    """
    n = src.shape[dim]
    if n == 1:
        dst.copy_(src)
        return
    head, tail = src.narrow(dim, 0, n - 1), src.narrow(dim, 1, n - 1)
    op(head, tail, out=dst.narrow(dim, 0, n - 1))
    dst.narrow(dim, n - 1, 1).copy_(src.narrow(dim, n - 1, 1))
    rest = dst.narrow(dim, 1, n - 1)
    op(rest, head, out=rest)


def boundary_map(labels: torch.Tensor, chunk_bytes: int | None = None, single_thread: bool = True) -> torch.Tensor:
    """The paper's 3x3 boundary rule on a label image, for every 2D image in a batch.

    A pixel is a boundary pixel when its 3x3 window (clipped at the image border) holds more than one
    distinct value, i.e. when the window's maximum differs from its minimum. The result equals
    ``skimage.segmentation.find_boundaries(label_2d, connectivity=2, mode="thick")`` for every 2D image.
    The max/min are separable 3-wide passes done with in-place ``torch.maximum``/``torch.minimum`` into three
    work buffers; on CPU the batch is processed in cache-sized chunks. Runs on the tensor's device.

    Args:
        labels: label tensor of shape (..., H, W) (any integer, float or bool dtype).
        chunk_bytes: CPU working-set size per chunk (default 1 MiB); ignored on other devices.
        single_thread: on CPU, run on one intra-op thread (see :func:`cpu_single_thread`).

    Returns:
        a bool tensor of the same shape and device.
    """
    if labels.ndim < 2:
        raise ValueError(f"boundary_map needs a (..., H, W) label tensor, got shape {tuple(labels.shape)}.")
    if labels.dtype == torch.bool:
        labels = labels.to(torch.uint8)
    if labels.is_complex():
        raise TypeError(f"boundary_map needs real-valued labels, got dtype {labels.dtype}.")
    shape = labels.shape
    h, w = shape[-2], shape[-1]
    x = labels.reshape(-1, h, w)
    n = x.shape[0]
    out = torch.empty((n, h, w), dtype=torch.bool, device=labels.device)
    if n == 0 or h == 0 or w == 0:
        return out.reshape(shape)
    if labels.device.type == "cpu":
        per = max(1, (chunk_bytes or _CPU_CHUNK_BYTES) // max(1, h * w * x.element_size()))
    else:
        per = n
    per = min(per, n)
    with cpu_single_thread(single_thread and labels.device.type == "cpu"):
        _boundary_chunks(x, out, per)
    return out.reshape(shape)


def _boundary_chunks(x: torch.Tensor, out: torch.Tensor, per: int) -> None:
    n, h, w = x.shape
    buf = torch.empty((3, per, h, w), dtype=x.dtype, device=x.device)
    for s in range(0, n, per):
        k = min(per, n - s)
        src = x[s : s + k]
        mx, mn, tmp = buf[0, :k], buf[1, :k], buf[2, :k]
        _window3(src, tmp, torch.maximum, -1)
        _window3(tmp, mx, torch.maximum, -2)
        _window3(src, tmp, torch.minimum, -1)
        _window3(tmp, mn, torch.minimum, -2)
        torch.ne(mx, mn, out=out[s : s + k])


def sliding_window_boundary_map(labels) -> torch.Tensor:
    """Literal per-pixel reference of the 3x3 rule (slow; for tests and the benchmark only).

    Args:
        labels: a 2D label array or tensor (H, W).

    Returns:
        a bool tensor (H, W): True where the clipped 3x3 window holds more than one distinct value.
    """
    lab = torch.as_tensor(labels).cpu()
    if lab.ndim != 2:
        raise ValueError(f"sliding_window_boundary_map needs a 2D label image, got shape {tuple(lab.shape)}.")
    rows = lab.tolist()
    h, w = len(rows), len(rows[0]) if rows else 0
    out = [[False] * w for _ in range(h)]
    for i in range(h):
        for j in range(w):
            window = set()
            for r in range(max(i - 1, 0), min(i + 2, h)):
                window.update(rows[r][max(j - 1, 0) : min(j + 2, w)])
            out[i][j] = len(window) > 1
    return torch.tensor(out, dtype=torch.bool).reshape(h, w)


# ---------------------------------------------------------------------------------------------------------------
# the lung quantiser
# ---------------------------------------------------------------------------------------------------------------
#: label values written by :func:`quantize_lung`
AIR, BODY, LUNG = 0, 1, 2


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


def _inside_along(bright: torch.Tensor, dim: int) -> torch.Tensor:
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
        _window3(out, tmp, op, -1)
        _window3(tmp, out, op, -2)
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
    inside = _inside_along(walls, -1) & _inside_along(walls, -2)
    labels = bright.to(torch.uint8)  # BODY where bright
    labels.masked_fill_(inside & ~bright, LUNG)
    return labels.reshape(shape)


def _band(lo: torch.Tensor, hi: torch.Tensor, tol: float) -> int:
    """Number of leading lines (given their min ``lo`` and max ``hi``) that are constant at the first line's value."""
    ok = ((hi - lo) <= tol) & ((lo - lo[0]).abs() <= tol)
    return int(torch.cumprod(ok.to(torch.int32), 0).sum())


def _no_band(x: torch.Tensor, h: int, rtol: float) -> bool:
    """Whether none of the four outer lines of the (C * H, W) image ``x`` is constant within ``rtol`` of its value
    range (then :func:`content_box` has no band to set aside). Float32 comparisons, as torch's; numpy on the CPU (a
    dozen small reductions cost less there)."""
    gmin, gmax = torch.aminmax(x)
    if x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad:
        a = x.numpy()
        planes = a.reshape(-1, h, a.shape[-1])
        cols, rows = a[:, [0, -1]], planes[:, [0, -1]]  # (C * H, 2) and (C, 2, W)
        spread = np.concatenate([cols.max(0) - cols.min(0), rows.max((0, 2)) - rows.min((0, 2))])
        return bool((spread > np.float32(float(gmax - gmin) * rtol)).all())
    planes = x.reshape(-1, h, x.shape[-1])
    cols = torch.stack([x[:, 0], x[:, -1]])
    rows = torch.stack([planes[:, 0].reshape(-1), planes[:, -1].reshape(-1)])
    spread = torch.cat([cols.amax(dim=1) - cols.amin(dim=1), rows.amax(dim=1) - rows.amin(dim=1)])
    return bool((spread > float(gmax - gmin) * rtol).all())


def content_box(img: torch.Tensor, rtol: float = 1e-3) -> tuple[int, int, int, int]:
    """The part (x, y, w, h) of a (..., H, W) image inside its constant border bands.

    A band is the run of rows (top, bottom) or columns (left, right) at the border that all hold one value, the
    value of the outermost line (within ``rtol`` of the image's value range): padding or empty background, e.g.
    the zero bands :class:`~monai.transforms.SpatialPad` adds to make a slice square. They hold no structure, but
    they shift any per-image threshold; locating the lung inside this box makes the result the same with or
    without the padding. A constant image gives the whole image.
    """
    h, w = img.shape[-2:]
    x = img.reshape(-1, w)  # (C * H, W): channels stacked along the rows
    # the common case first: no outer line is constant, so there is no band (one pass over the image, not four)
    if _no_band(x, h, rtol):
        return 0, 0, w, h
    lo, hi = x.amin(dim=0), x.amax(dim=0)  # per column
    rlo, rhi = x.amin(dim=1).reshape(-1, h).amin(dim=0), x.amax(dim=1).reshape(-1, h).amax(dim=0)  # per row
    value_range = float(hi.max() - lo.min())
    if not value_range > 0:
        return 0, 0, w, h
    tol = value_range * rtol
    x0, y0 = _band(lo, hi, tol), _band(rlo, rhi, tol)
    x1, y1 = w - _band(lo.flip(0), hi.flip(0), tol), h - _band(rlo.flip(0), rhi.flip(0), tol)
    if x1 <= x0 or y1 <= y0:  # only constant lines, e.g. stripes: nothing to set aside
        return 0, 0, w, h
    return x0, y0, x1 - x0, y1 - y0


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
# the lung box and the lobe boxes
# ---------------------------------------------------------------------------------------------------------------
def lung_box_from_boundary(
    bmap: torch.Tensor, labels: torch.Tensor, trim: float = 0.01, min_fraction: float = 0.2, min_pixels: int = 16
) -> tuple[int, int, int, int] | None:
    """Bounding box (x, y, w, h) of the lung from the boundary map of a 2D label image, or ``None``.

    The box spans the boundary pixels that are lung pixels (the lung's outline and the edges inside it),
    trimming ``trim`` of them on each side (against stray dark spots). ``None`` (no lung found) when there are
    fewer than ``min_pixels`` such pixels or the box is narrower/shorter than ``min_fraction`` of the image.
    """
    h, w = labels.shape[-2:]
    edge = bmap & (labels == LUNG)
    cols = edge.sum(dim=-2, dtype=torch.int32).reshape(-1)  # per column
    rows = edge.sum(dim=-1, dtype=torch.int32).reshape(-1)  # per row
    total = int(cols.sum())
    if total < min_pixels:
        return None
    cx, cy = torch.cumsum(cols, 0), torch.cumsum(rows, 0)
    lo, hi = torch.tensor([trim * total, (1.0 - trim) * total], device=cx.device).to(cx.dtype).chunk(2)
    q = torch.stack([torch.searchsorted(cx, lo, right=True), torch.searchsorted(cx, hi, right=False)])
    r = torch.stack([torch.searchsorted(cy, lo, right=True), torch.searchsorted(cy, hi, right=False)])
    x0, x1 = (int(v) for v in q.reshape(-1).tolist())
    y0, y1 = (int(v) for v in r.reshape(-1).tolist())
    x1, y1 = min(x1, w - 1), min(y1, h - 1)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    if bw < min_fraction * w or bh < min_fraction * h:
        return None
    return x0, y0, bw, bh
