# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Functional core of the lobe transforms: the 3x3 boundary map, the content box, the lung box, the lobe boxes and the
crops of the lobe Generator (the array transforms in :mod:`.array` wrap these)."""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "AIR",
    "BODY",
    "LUNG",
    "LOBE_NAMES",
    "DEFAULT_LOBE_BOXES",
    "LobeRegions",
    "boundary_map",
    "sliding_window_boundary_map",
    "cpu_single_thread",
    "window3",
    "content_box",
    "lung_box_from_boundary",
    "check_slice",
    "check_lobe_table",
    "check_jitter",
    "clip_box",
    "resample_slice",
    "integer_factor",
    "reduce_slice",
    "box_to_image",
    "lobe_boxes",
    "crop_resize",
    "jit_kernels",
    "jit_switch",
]

logger = logging.getLogger(__name__)

#: label values of the air / body / lung classes (:func:`~.functional_quantize.quantize_lung`, the locator's labels)
AIR, BODY, LUNG = 0, 1, 2

#: bytes of label data a CPU chunk works on (cache-sized: fresh large buffers and page faults dominate otherwise)
_CPU_CHUNK_BYTES = 1 << 20


#: environment variable that turns the numba kernels off (any value but ``0``): the numpy/ATen versions run
NO_JIT_ENV = "MSTL_MONAI_NO_JIT"


@functools.cache
def jit_kernels() -> ModuleType | None:
    """The Generator's numba-compiled CPU kernels (:mod:`.functional_jit`: the lung locator's parts, the reduction of
    the slice and the crops), or ``None``: then their numpy and ATen versions run (the same lung boxes, crops within
    float rounding, about 1.5-2x slower), said once in the log. ``None`` when numba cannot be imported or the
    environment variable ``MSTL_MONAI_NO_JIT`` is set to anything but ``0`` (read on the first call; ``jit_kernels.cache_clear()`` reads
    it again). The first call in a process loads the compiled kernels from numba's cache, or compiles them (seconds).
    """
    if os.environ.get(NO_JIT_ENV, "0") not in ("", "0"):
        logger.info(f"{NO_JIT_ENV} is set: the lobe Generator runs its numpy/ATen versions (slower).")
        return None
    try:
        from . import functional_jit
    except ImportError as e:
        logger.warning(f"numba is not available ({e}): the lobe Generator runs its numpy/ATen versions (slower).")
        return None
    return functional_jit


@contextmanager
def jit_switch(enabled: bool) -> Iterator[None]:
    """Run the enclosed code with the numba kernels on or off (:data:`NO_JIT_ENV` set for the block, then restored;
    :func:`jit_kernels` reads it again on entry and on exit). Process-wide: not for use from several threads at once.

    .. code-block:: python

        with jit_switch(False):
            out = LungLobeGenerator()(img)  # the numpy/ATen versions
    """
    before = os.environ.get(NO_JIT_ENV)
    os.environ[NO_JIT_ENV] = "0" if enabled else "1"
    jit_kernels.cache_clear()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(NO_JIT_ENV, None)
        else:
            os.environ[NO_JIT_ENV] = before
        jit_kernels.cache_clear()


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


def window3(src: torch.Tensor, dst: torch.Tensor, op, dim: int) -> None:
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
        window3(src, tmp, torch.maximum, -1)
        window3(tmp, mx, torch.maximum, -2)
        window3(src, tmp, torch.minimum, -1)
        window3(tmp, mn, torch.minimum, -2)
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
# the content box
# ---------------------------------------------------------------------------------------------------------------
def _band(lo: torch.Tensor, hi: torch.Tensor, tol: float) -> int:
    """Number of leading lines (given their min ``lo`` and max ``hi``) that are constant at the first line's value."""
    ok = ((hi - lo) <= tol) & ((lo - lo[0]).abs() <= tol)
    return int(torch.cumprod(ok.to(torch.int32), 0).sum())


def _no_band(x: torch.Tensor, h: int, rtol: float) -> bool:
    """Whether none of the four outer lines of the (C * H, W) image ``x`` is constant within ``rtol`` of its value
    range (then :func:`content_box` has no band to set aside). Float32 comparisons, as torch's; numpy on the CPU (a
    dozen small reductions cost less there)."""
    if x.device.type == "cpu" and x.dtype == torch.float32 and not x.requires_grad:
        a = x.numpy()
        planes = a.reshape(-1, h, a.shape[-1])
        tol = np.float32(float(a.max() - a.min()) * rtol)
        for line in (a[:, 0], a[:, -1], planes[:, 0], planes[:, -1]):  # left, right, top, bottom (all channels)
            if not line.max() - line.min() > tol:
                return False
        return True
    gmin, gmax = torch.aminmax(x)
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



# ---------------------------------------------------------------------------------------------------------------
# the lung box
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


# ---------------------------------------------------------------------------------------------------------------
# the lobe Generator: its table, boxes and crops
# ---------------------------------------------------------------------------------------------------------------
#: the five lobes, in the order of the region labels 0..4: right upper / middle / lower, left upper / lower
LOBE_NAMES = ("ru", "rm", "rl", "lu", "ll")

#: Default relative lobe boxes ``(x, y, w, h)`` as fractions of the lung box, for an axial slice in the
#: radiological convention (rows anterior -> posterior, image left = patient right). The right lung is the
#: left part of the box, the left lung the right part; they overlap by 10 % in the middle (mediastinum).
#: In an axial slice the upper lobes sit in front (top of the image) and the lower lobes behind; the right
#: middle lobe is the band in between on the right. Neighbouring boxes overlap a little.
DEFAULT_LOBE_BOXES: dict[str, tuple[float, float, float, float]] = {
    "ru": (0.00, 0.00, 0.55, 0.45),
    "rm": (0.00, 0.30, 0.55, 0.40),
    "rl": (0.00, 0.55, 0.55, 0.45),
    "lu": (0.45, 0.00, 0.55, 0.55),
    "ll": (0.45, 0.45, 0.55, 0.55),
}


class LobeRegions(NamedTuple):
    """What the lobe Generators return (with a leading batch dimension from the batched one).

    Attributes:
        regions: (5, C, S, S) float crops, in the order of :data:`LOBE_NAMES`.
        boxes: (5, 4) int64 boxes ``(x, y, w, h)`` in the input image's pixels.
        labels: (5,) int64 lobe indices ``[0, 1, 2, 3, 4]``.
        fallback: ``True`` when no lung was found and the fallback box was used.
        lung_box: (4,) int64 lung box ``(x, y, w, h)`` (the fallback box when ``fallback``).
    """

    regions: torch.Tensor
    boxes: torch.Tensor
    labels: torch.Tensor
    fallback: bool
    lung_box: torch.Tensor


def check_lobe_table(lobe_boxes: Mapping[str, Sequence[float]] | None) -> np.ndarray:
    """The (5, 4) float64 table of lobe boxes (fractions of the lung box, rows in :data:`LOBE_NAMES` order), checked.

    Raises:
        KeyError: the keys are not exactly :data:`LOBE_NAMES`.
        ValueError: a box is not 4 fractions inside the lung box with a positive size.
    """
    table = DEFAULT_LOBE_BOXES if lobe_boxes is None else lobe_boxes
    missing = [k for k in LOBE_NAMES if k not in table]
    extra = [k for k in table if k not in LOBE_NAMES]
    if missing or extra:
        raise KeyError(f"lobe_boxes needs exactly the keys {LOBE_NAMES}, missing {missing}, unknown {extra}.")
    arr = np.asarray([table[k] for k in LOBE_NAMES], dtype=np.float64)
    if arr.shape != (5, 4):
        raise ValueError(f"every lobe box must be (x, y, w, h) fractions, got {dict(table)}.")
    bad = (arr[:, 2] <= 0) | (arr[:, 3] <= 0) | (arr[:, :2] < 0).any(1) | (arr[:, :2] + arr[:, 2:] > 1.0 + 1e-9).any(1)
    if bad.any():
        raise ValueError(
            f"lobe boxes must lie inside the lung box (fractions in [0, 1], w, h > 0): "
            f"{ {LOBE_NAMES[i]: tuple(arr[i]) for i in np.flatnonzero(bad)} }."
        )
    return arr


def check_slice(img, name: str) -> None:
    """The one rule for the Generators' input: a (C, H, W) image of at least 2x2 pixels (``ValueError`` naming
    ``name`` and the shape otherwise)."""
    if img.ndim != 3:
        raise ValueError(f"{name} expects a (C, H, W) image, got shape {tuple(img.shape)}.")
    if img.shape[-2] < 2 or img.shape[-1] < 2:
        raise ValueError(f"{name} needs an image of at least 2x2 pixels, got shape {tuple(img.shape)}.")


def check_jitter(jitter: float) -> float:
    """The relative box jitter of the random Generators, checked: in [0, 1)."""
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}.")
    return float(jitter)


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The pixel box ``(x, y, w, h)`` covering the float box, clipped to a ``width`` x ``height`` image (at least one
    pixel)."""
    x0 = int(min(max(math.floor(x), 0), width - 1))
    y0 = int(min(max(math.floor(y), 0), height - 1))
    x1 = int(min(max(math.ceil(x + w), x0 + 1), width))
    y1 = int(min(max(math.ceil(y + h), y0 + 1), height))
    return x0, y0, x1 - x0, y1 - y0


def resample_slice(
    img: torch.Tensor, cbox: tuple[int, int, int, int] | None, size: int | None, ignore_padding: bool = True
) -> tuple[np.ndarray, tuple[int, int, int, int], tuple[float, float]]:
    """A (C, H, W) slice's channel mean inside its padding (``cbox``; ``None``: its own :func:`content_box`, or the
    whole image without ``ignore_padding``), resampled to ``size`` pixels on its longest side (``None``: as it is):
    ``(gray, content_box, scale)``, gray a float32 (H', W') array on the CPU, scale ``(h / H', w / W')``."""
    h, w = img.shape[-2:]
    gray = img.float().mean(dim=-3, keepdim=True) if img.shape[-3] > 1 else img.float()
    if cbox is None:
        cbox = content_box(gray) if ignore_padding else (0, 0, w, h)
    cx, cy, cw, ch = cbox
    gray = gray[:, cy : cy + ch, cx : cx + cw]
    sy = sx = 1.0
    if size is not None and max(ch, cw) != size:
        scale = size / max(ch, cw)
        hs, ws = max(1, round(ch * scale)), max(1, round(cw * scale))
        # bilinear without antialiasing at a 1/4 scale averages the 2x2 centre of each 4x4 block: a cheap low-pass
        # reduction (5x faster than an area average); small images are enlarged the same way. An integer factor
        # takes the strided sums of :func:`reduce_slice` (numpy on the CPU), any other the kernel behind
        # ``F.interpolate(..., mode="bilinear", align_corners=False)``, without its checks. On the CPU an even factor
        # runs in the numba kernel :func:`~.functional_jit.reduce_even` (the same numbers).
        f = integer_factor(ch, cw, hs, ws)
        if f and gray.device.type == "cpu" and gray.dtype == torch.float32 and not gray.requires_grad:
            a, kernels = gray[0].numpy(), jit_kernels()
            small = kernels.reduce_even(a, f) if kernels is not None and f % 2 == 0 else reduce_slice(a, f)
            return small, (cx, cy, cw, ch), (float(f), float(f))
        if f:
            gray = reduce_slice(gray, f)
        else:
            gray = torch._C._nn.upsample_bilinear2d(gray[None], (hs, ws), False, None, None)[0]
        sy, sx = ch / hs, cw / ws
    return np.ascontiguousarray(gray[0].detach().cpu().numpy()), (cx, cy, cw, ch), (sy, sx)


def integer_factor(ch: int, cw: int, hs: int, ws: int) -> int:
    """The integer factor ``f`` >= 2 with ``(ch, cw) == (f * hs, f * ws)``, else 0 (:func:`reduce_slice` applies)."""
    f = ch // hs
    return f if f >= 2 and ch == f * hs and cw == f * ws else 0


def reduce_slice(x, f: int):
    """Reduce the last two axes of ``x`` (a tensor on any device, or a numpy array) by the integer factor ``f``: the
    bilinear reduction of :func:`resample_slice` (``align_corners=False``, no antialiasing) for an integer factor.

    Every output pixel sits at the centre of an ``f`` x ``f`` block: on its pixel ``f // 2`` for an odd ``f``, and
    halfway between its pixels ``f // 2 - 1`` and ``f // 2`` for an even ``f``, i.e. the mean of those 2 x 2 (the
    interpolation weights are all 0.5), summed as ``((a + b) + (c + d)) / 4``. Strided views and elementwise adds, so
    a numpy array and a tensor on any device give the same numbers, the same as ``upsample_bilinear2d`` gives for
    a 512 x 512 slice reduced to 128 (for smaller images torch's CPU kernel sums in another order, within 1 ulp).
    On the CPU the numpy twin is what the per-image locator uses: no switch to torch's kernels between its numpy
    steps.
    """
    if f % 2:
        out = x[..., f // 2 :: f, f // 2 :: f]
        return np.ascontiguousarray(out) if isinstance(x, np.ndarray) else out.contiguous()
    i = f // 2 - 1
    r0, r1 = x[..., i::f, :], x[..., i + 1 :: f, :]
    out = r0[..., i::f] + r0[..., i + 1 :: f]
    out += r1[..., i::f] + r1[..., i + 1 :: f]
    out *= 0.25
    return out


def box_to_image(
    found: tuple[int, int, int, int] | None,
    cbox: tuple[int, int, int, int],
    scale: tuple[float, float],
    fallback_box: Sequence[float] = (0.0, 0.0, 1.0, 1.0),
) -> tuple[tuple[int, int, int, int], bool]:
    """A box of the resampled slice in the image's pixels, or for ``None`` the ``fallback_box`` (fractions of the
    content box): ``(box, fallback)``."""
    cx, cy, cw, ch = cbox
    if found is None:
        fx, fy, fw, fh = fallback_box
        x0, y0, bw, bh = clip_box(fx * cw, fy * ch, fw * cw, fh * ch, cw, ch)
        return (x0 + cx, y0 + cy, bw, bh), True
    sy, sx = scale
    x, y, bw, bh = found
    x0, y0, bw, bh = clip_box(x * sx, y * sy, bw * sx, bh * sy, cw, ch)
    return (x0 + cx, y0 + cy, bw, bh), False


def lobe_boxes(
    lung_box: Sequence[int], table: np.ndarray, height: int, width: int, offsets: np.ndarray | None = None
) -> list[tuple[int, int, int, int]]:
    """The five lobe boxes ``(x, y, w, h)`` in pixels from the lung box and the (5, 4) ``table`` of fractions.

    ``offsets`` (5, 4), optional, are added to the table's fractions (x, y shift; w, h relative scale).
    """
    lx, ly, lw, lh = (float(v) for v in lung_box)
    if offsets is not None:
        table = table.copy()
        table[:, :2] += offsets[:, :2] * table[:, 2:]
        table[:, 2:] *= 1.0 + offsets[:, 2:]
    return [clip_box(lx + fx * lw, ly + fy * lh, fw * lw, fh * lh, width, height) for fx, fy, fw, fh in table.tolist()]


def crop_resize(
    img: torch.Tensor,
    boxes: Sequence[Sequence[int]],
    size: Sequence[int],
    mode: str = "bilinear",
    jit: bool | None = None,
) -> torch.Tensor:
    """Crop each (x, y, w, h) box of a (C, H, W) image and resize it to ``size`` (H, W): (N, C, S0, S1).

    A box reaching past the image is cut as slicing cuts it. Bilinear crops of a float32 CPU image (without
    gradients) run in one numba call (:func:`~.functional_jit.crop_resize_bilinear`: the sample points and weights of
    ``F.interpolate(..., mode="bilinear", align_corners=False)``, values within float32 rounding of it); otherwise,
    and without numba, ATen's ``upsample_bilinear2d`` writes each crop straight into the output (no per-crop buffers)
    or ``F.interpolate`` resizes it. ``jit=False``: ATen's kernel always (the values of ``F.interpolate`` exactly).
    """
    x = img.float() if not img.is_floating_point() else img
    size = tuple(int(s) for s in size)
    out = torch.empty((len(boxes), x.shape[0], *size), dtype=x.dtype, device=x.device)
    fast = jit is not False and mode == "bilinear" and x.device.type == "cpu" and x.dtype == torch.float32
    kernels = jit_kernels() if fast else None
    if kernels is not None and not x.requires_grad and len(boxes):
        h, w = x.shape[-2:]
        cut = []
        for bx, by, bw, bh in boxes:  # as slicing cuts the box (an empty crop: ATen's error below)
            x0, x1, _ = slice(bx, bx + bw).indices(w)
            y0, y1, _ = slice(by, by + bh).indices(h)
            cut.append((x0, y0, x1 - x0, y1 - y0))
        if min(min(b[2], b[3]) for b in cut) > 0:
            kernels.crop_resize_bilinear(x.numpy(), np.array(cut, dtype=np.int64), out.numpy())
            return out
    for i, (bx, by, bw, bh) in enumerate(boxes):
        crop = x[None, :, by : by + bh, bx : bx + bw]
        if mode == "bilinear":
            torch._C._nn.upsample_bilinear2d(crop, size, False, None, None, out=out[i : i + 1])
        else:
            kw = {"align_corners": False} if mode == "bicubic" else {}
            out[i : i + 1] = F.interpolate(crop, size=size, mode=mode, **kw)
    return out
