# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Batched functional core of the lobe Generator: locate, lobe boxes, crop and resize for a batch (B, C, H, W) at once.

Every function runs on the batch's device and gives, image for image, what the per-image functions of
:mod:`.functional` and :class:`~.array.LungLobeGenerator` give (the same lung boxes and lobe boxes; the crops equal
within bilinear interpolation tolerance). The images of a batch have different content boxes (the padding that made
them square), so after the content box each image is resampled on its own (one ``interpolate`` call per image, no
host synchronisation), into the top-left corner of a common canvas; every later step works on the whole canvas and
ignores what lies outside each image's part of it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .functional import BODY, LUNG, boundary_map, integer_factor, reduce_slice, window3
from .functional_locate import BODY_SHARE, WALL, box_or_none, part_levels, parts_box, select_parts
from .functional_quantize import inside_along, threshold_bin, threshold_level

__all__ = [
    "batched_content_box",
    "batched_resample",
    "masked_binary_open",
    "connected_components",
    "batched_parts",
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

    Bilinear without antialiasing, per image exactly as the per-image locator (:func:`~.functional.reduce_slice` for
    an integer factor, else one ``interpolate`` call), written
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
        f = integer_factor(ch, cw, hs, ws)
        if f:
            crop = reduce_slice(crop, f)
        elif (hs, ws) != (ch, cw):
            crop = F.interpolate(crop, size=(hs, ws), mode="bilinear", align_corners=False)
        canvas[i, :, :hs, :ws] = crop[0]
    hw = torch.tensor(sizes, dtype=torch.int64, device=gray.device)
    ar = torch.arange(s, device=gray.device)
    valid = (ar[None, :, None] < hw[:, 0, None, None]) & (ar[None, None, :] < hw[:, 1, None, None])
    return canvas, valid, sizes


def _masked_square(x: torch.Tensor, valid: torch.Tensor, op, neutral: int, size: int) -> torch.Tensor:
    """``op`` over a ``size`` square of a (B, H, W) tensor, clipped at each image's part of the canvas."""
    out = x.clone()
    tmp = torch.empty_like(x)
    for _ in range(size // 2):
        out.masked_fill_(~valid, neutral)  # outside pixels take the value that changes nothing
        window3(out, tmp, op, -1)
        window3(tmp, out, op, -2)
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
        window3(parent.reshape(shape), tmp, torch.minimum, -1)
        window3(tmp, nb, torch.minimum, -2)
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


def _per_image_hist(q: torch.Tensor, mask: torch.Tensor, bins: int = 256) -> np.ndarray:
    """(B, bins) int64 histograms (on the CPU) of the levels ``q`` of a (B, H, W) canvas where ``mask``."""
    b = q.shape[0]
    idx = q.to(torch.int64) + torch.arange(b, device=q.device)[:, None, None] * bins
    idx = torch.where(mask, idx, b * bins)  # pixels outside the mask go to one extra bin, dropped
    return torch.bincount(idx.reshape(-1), minlength=b * bins + 1)[:-1].reshape(b, bins).cpu().numpy()


def _levels(x: torch.Tensor, valid: torch.Tensor, threshold: float | None) -> tuple[torch.Tensor, np.ndarray]:
    """:func:`~.functional_quantize.intensity_bins` of every image of a (B, H, W) canvas: (B, H, W) int64 levels (0 outside the
    images) and, for a fixed ``threshold``, the per-image (lo, hi) range (float, (B, 2)) they were mapped from."""
    ranges = np.zeros((x.shape[0], 2))
    g = x
    if threshold is not None:
        lo = torch.where(valid, x, torch.inf).amin(dim=(1, 2))
        hi = torch.where(valid, x, -torch.inf).amax(dim=(1, 2))
        ranges = torch.stack([lo, hi], 1).double().cpu().numpy()
        scale = [np.float32(1.0 / (b - a)) if b > a else np.float32(0.0) for a, b in ranges.tolist()]
        scale = torch.tensor(np.asarray(scale, dtype=np.float32), device=x.device)
        g = (x - lo[:, None, None]) * scale[:, None, None]
    q = (g.clamp(0.0, 1.0) * 256.0).to(torch.int64).clamp_max(255)
    return torch.where(valid, q, 0), ranges


def batched_parts(
    x: torch.Tensor,
    valid: torch.Tensor,
    sizes: torch.Tensor,
    threshold: float | None = None,
    method: str = "otsu",
    open_walls: int = 3,
    open_size: int = 1,
) -> tuple[list[tuple[np.ndarray, ...] | None], torch.Tensor, torch.Tensor]:
    """:func:`~.functional_locate.find_parts` of every image of a (B, H, W) canvas whose images have the (B, 2) ``sizes`` (h, w),
    on its device.

    Returns:
        ``(stats, parts, bright)``: per image the statistics ``(area, n_air, sum_q, n_wall, bbox, seeded, body, levels)``
        of its parts (numpy, on the CPU, in the per-image order; ``None``: no body), the parts
        (:func:`connected_components` of the dark pixels enclosed by the body) and the bright pixels (B, H, W).
    """
    b, s = x.shape[0], x.shape[1] * x.shape[2]
    dev = x.device
    q, ranges = _levels(x, valid, threshold)
    hist = _per_image_hist(q, valid)
    if threshold is None:
        k = [threshold_bin(hi, method) for hi in hist]
        bright = (q > torch.tensor(k, device=dev)[:, None, None]) & valid
    else:
        k = [threshold_level(lo, hi, threshold) for lo, hi in ranges.tolist()]
        bright = (x > torch.tensor(threshold, dtype=x.dtype, device=dev)) & valid
    comp = connected_components(masked_binary_open(bright, valid, open_walls))
    area = torch.bincount(comp[comp >= 0], minlength=b * s).reshape(b, s)
    root = torch.argmax(area, 1) + torch.arange(b, device=dev) * s  # the first of the largest (as np.argmax)
    largest, total = area.amax(1), area.sum(1)
    has_body = (largest > 0).cpu().numpy()
    body = comp == root[:, None, None]
    hs, ws = sizes[:, 0], sizes[:, 1]
    ar = torch.arange(b, device=dev)
    sides = (
        body[:, 0].any(1).long()
        + body[ar, hs - 1].any(1).long()
        + body[:, :, 0].any(1).long()
        + body[ar, :, ws - 1].any(1).long()
    )
    whole = ((largest.double() < BODY_SHARE * total.double()) | (sides > 2))[:, None, None]
    body = torch.where(whole, comp >= 0, body)
    inside = inside_along(body, -1) & inside_along(body, -2)
    dark = inside & ~bright
    filled = (inside | body).to(torch.uint8)
    h_air, h_body = _per_image_hist(q, valid & ~bright & ~inside), _per_image_hist(q, bright)
    lv = np.asarray([part_levels(h_air[i], h_body[i], hist[i]) for i in range(b)], dtype=np.int64)
    # against the wall: within reach of the body's first or last pixel along the row or the column
    h, w = x.shape[1:]
    xs, ys = torch.arange(w, device=dev), torch.arange(h, device=dev)
    x_first, y_first = filled.argmax(2)[:, :, None], filled.argmax(1)[:, None]
    x_last, y_last = w - 1 - filled.flip(2).argmax(2)[:, :, None], h - 1 - filled.flip(1).argmax(1)[:, None]
    extent = torch.maximum(filled.amax(2).sum(1), filled.amax(1).sum(1)).tolist()
    reach = torch.tensor([int(WALL * e) for e in extent], device=dev)[:, None, None]
    ys_ = ys[:, None]
    near = (xs <= x_first + reach) | (xs >= x_last - reach) | (ys_ <= y_first + reach) | (ys_ >= y_last - reach)
    lv_t = torch.as_tensor(lv, device=dev)
    parts = connected_components(dark)
    fg = parts >= 0
    r = parts[fg]

    def count(mask: torch.Tensor) -> torch.Tensor:
        return torch.bincount(r[mask[fg]], minlength=b * s)

    sum_q = torch.zeros(b * s, dtype=torch.int64, device=dev).index_add_(0, r, q[fg])
    stats = [count(torch.ones_like(dark)), count(q <= lv_t[:, 1, None, None]), sum_q]
    stats.append(count(near))
    if open_size > 1:
        stats.append(count(masked_binary_open(dark, valid, open_size)) > 0)
    yy, xx = (ys[None, :, None].expand_as(parts)[fg], xs[None, None, :].expand_as(parts)[fg])
    box = torch.full((4, b * s), -1, dtype=torch.int64, device=dev)
    big = torch.iinfo(torch.int64).max
    box[:2] = big
    for row, v, how in ((0, xx, "amin"), (1, yy, "amin"), (2, xx + 1, "amax"), (3, yy + 1, "amax")):
        box[row].scatter_reduce_(0, r, v, reduce=how)
    # the body's integer moments per image
    fx = filled.to(torch.int64)
    cols, rows, rx = fx.sum(1), fx.sum(2), (fx * xs).sum(2)
    sums = [cols.sum(1), (cols * xs).sum(1), (rows * ys).sum(1), (cols * xs * xs).sum(1), (rows * ys * ys).sum(1)]
    sums.append((rx * ys).sum(1))  # elementwise products: integer matmul is not on every device
    moments = torch.stack(sums, 1).cpu().numpy()
    roots = torch.unique(r)  # sorted: image by image, each in the per-image order (the first pixel's raster order)
    table = torch.cat([torch.stack([v[roots] for v in stats[:4]]), box[:, roots]]).cpu().numpy()
    seeded = stats[4][roots].cpu().numpy() if open_size > 1 else np.ones(len(roots), dtype=bool)
    owner = (roots // s).cpu().numpy()
    out: list[tuple[np.ndarray, ...] | None] = []
    for i in range(b):
        if not has_body[i]:
            out.append(None)
            continue
        sel = owner == i
        t = table[:, sel]
        levels = np.array([lv[i, 0], k[i]], dtype=np.int64)
        out.append((t[0], t[1], t[2], t[3], t[4:8].T.copy(), seeded[sel], moments[i], levels))
    return out, parts, bright


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
    """The per-image :func:`~.functional.clip_box` on float64 tensors (broadcast together; ``width``/``height``
    tensors or ints):
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
    (B, 5, 4) ``offsets`` (see :meth:`~.array.LungLobeGenerator.lobe_boxes`)."""
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
    min_box_fraction: float = 0.1,
    trim: float = 0.0,
    open_size: int = 1,
    open_walls: int = 3,
    method: str = "otsu",
    min_component_ratio: float = 0.05,
    ignore_padding: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lung box of every image of a (B, C, H, W) batch, as :meth:`~.array.LungLobeGenerator.locate` finds it
    image by image (same arguments): ``(boxes, fallback)``, (B, 4) int64 boxes (x, y, w, h) in the batch's pixels
    and a (B,) bool, True where no lung was found and ``fallback_box`` was used. The pixel work runs on the batch's
    device; the small per-part tables go to the CPU for :func:`~.functional_locate.select_parts`."""
    b, c, h, w = img.shape
    gray = img.float().mean(dim=1, keepdim=True) if c > 1 else img.float()
    if ignore_padding:
        cbox = batched_content_box(gray)
    else:
        cbox = torch.tensor([[0, 0, w, h]] * b, dtype=torch.int64, device=img.device)
    canvas, valid, sizes = batched_resample(gray, cbox.tolist(), locate_size)
    x = canvas[:, 0]
    hw = torch.tensor(sizes, dtype=torch.int64, device=img.device)
    lung = np.zeros((b, 4), dtype=np.int64)
    found = np.zeros(b, dtype=bool)
    todo = np.arange(b)
    # first with the bright walls opened; the images without a lung once more with the walls as they are
    for walls in dict.fromkeys((open_walls, 1)):
        sel = torch.as_tensor(todo, device=img.device)
        stats, parts, bright = batched_parts(x[sel], valid[sel], hw[sel], threshold, method, walls, open_size)
        keeps = [None if st is None else select_parts(*st, min_ratio=min_component_ratio)[0] for st in stats]
        boxes = _boxes_of(stats, keeps, parts, bright, hw[sel], trim, min_box_fraction)
        for i, box in zip(todo.tolist(), boxes):
            if box is not None:
                lung[i], found[i] = box, True
        todo = todo[~found[todo]]
        if todo.size == 0:
            break
    # back to the batch's pixels: the found box scaled, else the fallback box, inside the content box
    lung_t = torch.as_tensor(lung, device=img.device)
    found_t = torch.as_tensor(found, device=img.device)
    cx, cy, cw, ch = (cbox[:, i].double() for i in range(4))
    sy, sx = ch / hw[:, 0].double(), cw / hw[:, 1].double()
    lx, ly, lw, lh = (lung_t[:, i].double() for i in range(4))
    scaled = clip_boxes(lx * sx, ly * sy, lw * sx, lh * sy, cw, ch)
    fx, fy, fw, fh = (float(v) for v in fallback_box)
    fall = clip_boxes(fx * cw, fy * ch, fw * cw, fh * ch, cw, ch)
    out = torch.where(found_t[:, None], scaled, fall)
    out[:, :2] += cbox[:, :2]
    return out, ~found_t


def _boxes_of(stats, keeps, parts, bright, hw, trim, min_box_fraction) -> list[tuple[int, int, int, int] | None]:
    """The lung box of every image (``None``: no lung) from its kept parts, as the per-image locator takes it."""
    sizes = hw.tolist()
    if trim == 0.0:
        return [
            None if st is None else parts_box(st[4], k, hs, ws, min_box_fraction)
            for st, k, (hs, ws) in zip(stats, keeps, sizes)
        ]
    # with a trim: the boundary map of the labels with the kept parts as the lung class
    s = parts.shape[1] * parts.shape[2]
    roots = torch.unique(parts[parts >= 0]).cpu().numpy()
    owner = roots // s
    kept = np.zeros(len(roots), dtype=bool)
    for i, k in enumerate(keeps):
        if k is not None:
            kept[owner == i] = k
    lut = torch.zeros(parts.numel() + 1, dtype=torch.bool, device=parts.device)
    lut[torch.as_tensor(roots[kept], device=parts.device)] = True
    labels = bright.to(torch.uint8) * BODY
    labels.masked_fill_(lut[parts], LUNG)  # -1 (no part) reads the last entry, False
    box, ok = batched_lung_box_from_boundary(boundary_map(labels, single_thread=False), labels, hw, trim, 0.0, 1)
    return [
        box_or_none(tuple(bx), hs, ws, min_box_fraction) if good and st is not None else None
        for bx, good, st, (hs, ws) in zip(box.tolist(), ok.tolist(), stats, sizes)
    ]
