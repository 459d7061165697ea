# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Batched functional core of the lobe Generator: locate, lobe boxes, crop and resize for a batch (B, C, H, W) at once.

Every function runs on the batch's device and gives, image for image, what the per-image functions of
:mod:`.functional` and :class:`~.generator.LungLobeGenerator` give (the same lung boxes and lobe boxes; the crops equal
within bilinear interpolation tolerance). The images of a batch have different content boxes (the padding that made
them square), so after the content box each image is resampled on its own (one ``interpolate`` call per image, no
host synchronisation), into the top-left corner of a common canvas; every later step works on the whole canvas and
ignores what lies outside each image's part of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .functional import AIR, LUNG, _inside_along, _window3, boundary_map

__all__ = [
    "batched_content_box",
    "batched_resample",
    "batched_threshold",
    "batched_quantize_lung",
    "masked_binary_open",
    "connected_components",
    "batched_filter_lung_components",
    "batched_lung_box_from_boundary",
    "clip_boxes",
    "batched_lobe_boxes",
    "batched_crop_resize",
    "batched_locate",
]


def _band(lo: torch.Tensor, hi: torch.Tensor, tol: torch.Tensor) -> torch.Tensor:
    """Per row of (B, N) line minima ``lo`` / maxima ``hi``: the number of leading lines constant at the first's value."""
    ok = ((hi - lo) <= tol[:, None]) & ((lo - lo[:, :1]).abs() <= tol[:, None])
    return torch.cumprod(ok.to(torch.int32), 1).sum(1)


def batched_content_box(img: torch.Tensor, rtol: float = 1e-3) -> torch.Tensor:
    """:func:`~.functional.content_box` of every image of a (B, C, H, W) batch: (B, 4) int64 boxes (x, y, w, h)."""
    b, c, h, w = img.shape
    lo, hi = img.amin(dim=(1, 2)), img.amax(dim=(1, 2))  # per column (B, W)
    rlo, rhi = img.amin(dim=(1, 3)), img.amax(dim=(1, 3))  # per row (B, H)
    value_range = hi.amax(1) - lo.amin(1)
    # the per-image function compares float32 lines with a Python float tolerance, i.e. the tolerance in float32
    tol = (value_range.double() * rtol).to(img.dtype)
    x0, y0 = _band(lo, hi, tol), _band(rlo, rhi, tol)
    x1, y1 = w - _band(lo.flip(1), hi.flip(1), tol), h - _band(rlo.flip(1), rhi.flip(1), tol)
    whole = ~(value_range > 0) | (x1 <= x0) | (y1 <= y0)
    box = torch.stack([x0, y0, x1 - x0, y1 - y0], 1).to(torch.int64)
    full = torch.tensor([0, 0, w, h], dtype=torch.int64, device=img.device)
    return torch.where(whole[:, None], full, box)


def batched_resample(
    gray: torch.Tensor, boxes: Sequence[Sequence[int]], size: int | None
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """Resample the ``boxes`` (x, y, w, h) of a (B, 1, H, W) batch to ``size`` pixels on their longest side.

    Bilinear without antialiasing, one ``interpolate`` call per image (exactly as the per-image locator), written
    into the top-left corner of a zero (B, 1, S, S) canvas (``S``: the largest resampled side).

    Returns:
        ``(canvas, valid, sizes)``: the canvas, a (B, S, S) bool mask of each image's part and the (h, w) sizes.
    """
    sizes = []
    for _, _, cw, ch in boxes:
        if size is not None and max(ch, cw) != size:
            scale = size / max(ch, cw)
            sizes.append((max(1, round(ch * scale)), max(1, round(cw * scale))))
        else:
            sizes.append((ch, cw))
    s = max(max(hw) for hw in sizes)
    canvas = gray.new_zeros((gray.shape[0], 1, s, s))
    for i, ((cx, cy, cw, ch), (hs, ws)) in enumerate(zip(boxes, sizes)):
        crop = gray[i : i + 1, :, cy : cy + ch, cx : cx + cw]
        if (hs, ws) != (ch, cw):
            crop = F.interpolate(crop, size=(hs, ws), mode="bilinear", align_corners=False)
        canvas[i, :, :hs, :ws] = crop[0]
    hw = torch.tensor(sizes, dtype=torch.int64, device=gray.device)
    ar = torch.arange(s, device=gray.device)
    valid = (ar[None, :, None] < hw[:, 0, None, None]) & (ar[None, None, :] < hw[:, 1, None, None])
    return canvas, valid, sizes


def batched_threshold(x: torch.Tensor, valid: torch.Tensor, method: str = "otsu") -> torch.Tensor:
    """Per-image automatic threshold of the valid pixels of a (B, H, W) canvas: (B,) float32.

    ``"otsu"``: :func:`~.functional.otsu_threshold` (256 bins); ``"multiotsu"``:
    :func:`~.functional.multiotsu_low_threshold` (64 bins). Values are clamped to [0, 1]; the histogram counts are
    exact, so each threshold equals the per-image one.
    """
    if method not in ("otsu", "multiotsu"):
        raise ValueError(f"method must be 'otsu' or 'multiotsu', got {method!r}.")
    bins = 256 if method == "otsu" else 64
    b = x.shape[0]
    v = x.float().clamp(0, 1)
    idx = (v * bins).to(torch.int64).clamp_max(bins - 1) + torch.arange(b, device=x.device)[:, None, None] * bins
    idx = torch.where(valid, idx, b * bins)  # pixels outside the images go to one extra bin, dropped
    hist = torch.bincount(idx.reshape(-1), minlength=b * bins + 1)[:-1].reshape(b, bins)
    if method == "otsu":
        hist = hist.float()
        centres = torch.linspace(0.0, 1.0, bins + 1, device=x.device)
        centres = (centres[:-1] + centres[1:]) * 0.5
        w0 = torch.cumsum(hist, 1)
        total = w0[:, -1:]
        m0 = torch.cumsum(hist * centres, 1)
        w1 = total - w0
        mu0 = m0 / w0.clamp_min(1)
        mu1 = (m0[:, -1:] - m0) / w1.clamp_min(1)
        between = w0 * w1 * (mu0 - mu1) ** 2
        between = torch.where((w0 > 0) & (w1 > 0), between, torch.zeros_like(between))
        k = torch.argmax(between, 1)
        return centres[k] + 1.0 / bins * 0.5
    hist = hist.double()
    width = 1.0 / bins
    centres = width * (torch.arange(bins, device=x.device, dtype=torch.float64) + 0.5)
    p, s = torch.cumsum(hist, 1), torch.cumsum(hist * centres, 1)
    tot_p, tot_s = p[:, -1:, None], s[:, -1:, None]
    w0, s0 = p[:, :, None], s[:, :, None]
    w1, s1 = p[:, None, :] - p[:, :, None], s[:, None, :] - s[:, :, None]
    w2, s2 = tot_p - p[:, None, :], tot_s - s[:, None, :]
    ok = (w0 > 0) & (w1 > 0) & (w2 > 0)
    var = s0**2 / w0.clamp_min(1e-12) + s1**2 / w1.clamp_min(1e-12) + s2**2 / w2.clamp_min(1e-12)
    var = torch.where(ok, var, torch.full_like(var, -1.0))
    i = torch.argmax(var.reshape(b, -1), 1) // bins
    return (width * (i + 1).double()).float()


def _masked_square(x: torch.Tensor, valid: torch.Tensor, op, neutral: int, size: int) -> torch.Tensor:
    """``op`` over a ``size`` square of a (B, H, W) tensor, clipped at each image's part of the canvas."""
    out = x.clone()
    tmp = torch.empty_like(x)
    for _ in range(size // 2):
        out.masked_fill_(~valid, neutral)  # outside pixels take the value that changes nothing
        _window3(out, tmp, op, -1)
        _window3(tmp, out, op, -2)
    return out


def masked_binary_open(mask: torch.Tensor, valid: torch.Tensor, size: int) -> torch.Tensor:
    """:func:`~.functional.binary_open` of every image's part (``valid``) of a (B, H, W) bool canvas."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"binary_open needs an odd size >= 1, got {size}.")
    m = (mask & valid).to(torch.uint8)
    if size == 1:
        return m.bool()
    m = _masked_square(m, valid, torch.minimum, 1, size)
    m = _masked_square(m, valid, torch.maximum, 0, size)
    return m.bool() & valid


def batched_quantize_lung(
    x: torch.Tensor, valid: torch.Tensor, threshold: torch.Tensor, open_walls: int = 1
) -> torch.Tensor:
    """:func:`~.functional.quantize_lung` of the images of a (B, H, W) canvas, with a (B,) threshold: uint8 labels
    (``AIR`` outside each image's part)."""
    bright = (x > threshold.to(x.dtype)[:, None, None]) & valid
    walls = bright if open_walls <= 1 else masked_binary_open(bright, valid, open_walls)
    inside = _inside_along(walls, -1) & _inside_along(walls, -2)
    labels = bright.to(torch.uint8)
    labels.masked_fill_(inside & ~bright, LUNG)
    return labels


def connected_components(mask: torch.Tensor, max_iter: int = 1000) -> torch.Tensor:
    """8-connected components of every image of a (B, H, W) bool tensor, on its device.

    Returns an int64 tensor: for a foreground pixel the flat index (in the whole batch) of the first pixel of its
    component, -1 for the background. Union-find by rounds (a label-propagation form of Shiloach-Vishkin): every
    pixel holds a parent, a pixel of its component with a smaller or equal index; each round hooks the parent of
    every pixel to the smallest parent in its 3x3 neighbourhood, then compresses the parent chains by pointer
    jumping, until no parent changes. A few rounds (logarithmic in the component size on typical shapes).
    """
    shape, n = mask.shape, mask.numel()
    big = torch.iinfo(torch.int64).max
    fg = mask.reshape(-1).nonzero().squeeze(1)
    parent = torch.full((n,), big, dtype=torch.int64, device=mask.device)
    parent[fg] = fg
    tmp, nb = torch.empty(shape, dtype=torch.int64, device=mask.device), torch.empty(shape, dtype=torch.int64, device=mask.device)
    for _ in range(max_iter):
        before = parent[fg]
        _window3(parent.reshape(shape), tmp, torch.minimum, -1)
        _window3(tmp, nb, torch.minimum, -2)
        m = nb.reshape(-1)[fg]
        parent.scatter_reduce_(0, before, m, reduce="amin")  # hook: the parent's parent
        parent[fg] = torch.minimum(parent[fg], m)
        cur = parent[fg]
        while True:  # compress: jump until every pixel points at a root
            nxt = parent[cur]
            if torch.equal(nxt, cur):
                break
            parent[fg] = cur = nxt
        if torch.equal(cur, before):
            break
    else:
        raise RuntimeError(f"connected_components did not converge in {max_iter} rounds.")
    out = torch.full((n,), -1, dtype=torch.int64, device=mask.device)
    out[fg] = parent[fg]
    return out.reshape(shape)


def batched_filter_lung_components(
    labels: torch.Tensor, valid: torch.Tensor, open_size: int = 3, min_ratio: float = 0.05
) -> torch.Tensor:
    """:func:`~.functional.filter_lung_components` of every image of a (B, H, W) label canvas, on its device."""
    lung = labels == LUNG
    seeds = lung if open_size <= 1 else masked_binary_open(lung, valid, open_size)
    comp = connected_components(lung)
    b, hw = labels.shape[0], labels.shape[1] * labels.shape[2]
    # a component is named by its first pixel, so component r belongs to image r // hw: per-root arrays are (B, H*W)
    area = torch.bincount(torch.where(lung, comp, b * hw).reshape(-1), minlength=b * hw + 1)[:-1].reshape(b, hw)
    seeded = torch.zeros(b * hw + 1, dtype=torch.bool, device=labels.device)
    seeded[torch.where(seeds & lung, comp, b * hw).reshape(-1)] = True
    seeded = seeded[:-1].reshape(b, hw)
    best = torch.where(seeded, area, 0).amax(1, keepdim=True)
    keep = seeded & (area.double() >= min_ratio * best.double())
    drop = lung & ~keep.reshape(-1)[comp.clamp_min(0)]
    return labels.masked_fill(drop, AIR)


def batched_lung_box_from_boundary(
    bmap: torch.Tensor,
    labels: torch.Tensor,
    sizes: torch.Tensor,
    trim: float = 0.0,
    min_fraction: float = 0.2,
    min_pixels: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~.functional.lung_box_from_boundary` of every image of a (B, H, W) canvas whose images have the
    (B, 2) ``sizes`` (h, w): ``(boxes, found)``, (B, 4) int64 boxes (x, y, w, h) and a (B,) bool."""
    edge = bmap & (labels == LUNG)
    cols, rows = edge.sum(dim=1, dtype=torch.int32), edge.sum(dim=2, dtype=torch.int32)
    total = cols.sum(1)
    # like the per-image function: the trimmed counts go through float32, then int32
    lo = (trim * total.double()).float().to(torch.int32)[:, None]
    hi = ((1.0 - trim) * total.double()).float().to(torch.int32)[:, None]
    cx, cy = torch.cumsum(cols, 1, dtype=torch.int32), torch.cumsum(rows, 1, dtype=torch.int32)
    x0 = torch.searchsorted(cx, lo, right=True)[:, 0]
    x1 = torch.searchsorted(cx, hi, right=False)[:, 0]
    y0 = torch.searchsorted(cy, lo, right=True)[:, 0]
    y1 = torch.searchsorted(cy, hi, right=False)[:, 0]
    h, w = sizes[:, 0], sizes[:, 1]
    x1, y1 = torch.minimum(x1, w - 1), torch.minimum(y1, h - 1)
    bw, bh = x1 - x0 + 1, y1 - y0 + 1
    found = (total >= min_pixels) & (bw.double() >= min_fraction * w.double()) & (bh.double() >= min_fraction * h.double())
    return torch.stack([x0, y0, bw, bh], 1).to(torch.int64), found


def clip_boxes(x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, h: torch.Tensor, width, height) -> torch.Tensor:
    """The per-image ``_clip_box`` on float64 tensors (broadcast together; ``width``/``height`` tensors or ints):
    int64 boxes (..., 4) of at least one pixel inside the image."""
    width = torch.as_tensor(width, dtype=torch.float64, device=x.device)
    height = torch.as_tensor(height, dtype=torch.float64, device=x.device)
    x0 = torch.minimum(x.floor().clamp_min(0), width - 1)
    y0 = torch.minimum(y.floor().clamp_min(0), height - 1)
    x1 = torch.minimum(torch.maximum((x + w).ceil(), x0 + 1), width)
    y1 = torch.minimum(torch.maximum((y + h).ceil(), y0 + 1), height)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], -1).to(torch.int64)


def batched_lobe_boxes(
    lung_boxes: torch.Tensor, table: torch.Tensor, height: int, width: int, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """The (B, 5, 4) lobe boxes of (B, 4) lung boxes from the (5, 4) float64 table of fractions, with optional
    (B, 5, 4) ``offsets`` (see :meth:`~.generator.LungLobeGenerator.lobe_boxes`)."""
    lung = lung_boxes.to(torch.float64)
    t = table.to(device=lung.device, dtype=torch.float64).expand(lung.shape[0], -1, -1)
    if offsets is not None:
        off = offsets.to(device=lung.device, dtype=torch.float64)
        xy = t[..., :2] + off[..., :2] * t[..., 2:]
        t = torch.cat([xy, t[..., 2:] * (1.0 + off[..., 2:])], -1)
    lx, ly, lw, lh = (lung[:, i, None] for i in range(4))
    fx, fy, fw, fh = t.unbind(-1)
    return clip_boxes(lx + fx * lw, ly + fy * lh, fw * lw, fh * lh, width, height)


def batched_crop_resize(img: torch.Tensor, boxes: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the (B, R, 4) boxes (x, y, w, h) of a (B, C, H, W) batch and resize each to ``size`` (bilinear):
    (B, R, C, S0, S1), in one ``grid_sample`` call.

    Sample points are those of ``interpolate(crop, size, mode="bilinear", align_corners=False)`` on each crop,
    clamped to the crop (as ``interpolate`` clamps to its input), so the crops equal the per-image ones within
    float rounding.
    """
    x = img if img.is_floating_point() else img.float()
    b, c, h, w = x.shape
    r = boxes.shape[1]
    s0, s1 = int(size[0]), int(size[1])
    bx = boxes.to(device=x.device, dtype=torch.float64)

    def axis(start, extent, n_out, n_in):  # (B, R, n_out) normalised grid coordinates
        d = torch.arange(n_out, device=x.device, dtype=torch.float64)
        src = (extent[..., None] / n_out) * (d + 0.5) - 0.5
        src = torch.minimum(src.clamp_min(0), extent[..., None] - 1) + start[..., None]
        return (2 * src + 1) / n_in - 1

    gx, gy = axis(bx[..., 0], bx[..., 2], s1, w), axis(bx[..., 1], bx[..., 3], s0, h)
    grid = torch.stack(torch.broadcast_tensors(gx[:, :, None, :], gy[:, :, :, None]), -1)  # (B, R, S0, S1, 2)
    grid = grid.reshape(b, r * s0, s1, 2).to(x.dtype)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)  # (B, C, R*S0, S1)
    return out.reshape(b, c, r, s0, s1).transpose(1, 2)


def batched_locate(
    img: torch.Tensor,
    threshold: float | None = None,
    locate_size: int | None = 128,
    fallback_box: Sequence[float] = (0.0, 0.0, 1.0, 1.0),
    min_box_fraction: float = 0.2,
    trim: float = 0.0,
    open_size: int = 3,
    open_walls: int = 3,
    method: str = "otsu",
    min_component_ratio: float = 0.05,
    ignore_padding: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lung box of every image of a (B, C, H, W) batch, as :meth:`~.generator.LungLobeGenerator.locate` finds it
    image by image (same arguments): ``(boxes, fallback)``, (B, 4) int64 boxes (x, y, w, h) in the batch's pixels
    and a (B,) bool, True where no lung was found and ``fallback_box`` was used."""
    b, c, h, w = img.shape
    gray = img.float().mean(dim=1, keepdim=True) if c > 1 else img.float()
    if ignore_padding:
        cbox = batched_content_box(gray)
    else:
        cbox = torch.tensor([[0, 0, w, h]] * b, dtype=torch.int64, device=img.device)
    canvas, valid, sizes = batched_resample(gray, cbox.tolist(), locate_size)
    x = canvas[:, 0]
    if threshold is None:
        t = batched_threshold(x, valid, method)
    else:
        t = torch.full((b,), float(threshold), dtype=torch.float32, device=img.device)
    hw = torch.tensor(sizes, dtype=torch.int64, device=img.device)
    lung = torch.zeros((b, 4), dtype=torch.int64, device=img.device)
    found = torch.zeros(b, dtype=torch.bool, device=img.device)
    todo = torch.arange(b, device=img.device)
    # first with the bright walls opened; the images without a lung once more with the walls as they are
    for walls in dict.fromkeys((open_walls, 1)):
        labels = batched_quantize_lung(x[todo], valid[todo], t[todo], walls)
        labels = batched_filter_lung_components(labels, valid[todo], open_size, min_component_ratio)
        bmap = boundary_map(labels, single_thread=False)
        box, ok = batched_lung_box_from_boundary(bmap, labels, hw[todo], trim, min_box_fraction)
        lung[todo], found[todo] = box, ok
        todo = todo[~ok]
        if todo.numel() == 0:
            break
    # back to the batch's pixels: the found box scaled, else the fallback box, inside the content box
    cx, cy, cw, ch = (cbox[:, i].double() for i in range(4))
    sy, sx = ch / hw[:, 0].double(), cw / hw[:, 1].double()
    lx, ly, lw, lh = (lung[:, i].double() for i in range(4))
    scaled = clip_boxes(lx * sx, ly * sy, lw * sx, lh * sy, cw, ch)
    fx, fy, fw, fh = (float(v) for v in fallback_box)
    fall = clip_boxes(fx * cw, fy * ch, fw * cw, fh * ch, cw, ch)
    out = torch.where(found[:, None], scaled, fall)
    out[:, :2] += cbox[:, :2]
    return out, ~found
