# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The lobe Generator's CPU kernels compiled with numba: the lung locator's parts, the slice's reduction, the crops.

:func:`parts_kernel` (with :func:`bins_hist` and :func:`otsu_bin`) is :func:`~.functional_locate.find_parts`'s work in a
few passes: the numpy version is about 40 small array steps on a 128 x 128 slice, whose cost is mostly their call
overhead. Every result is an integer (levels, labels, counts, sums, moments) or the Otsu level, computed with the same
float64 operations in the same order, so both versions give identical :class:`~.functional_locate.Parts`
(``tests/transforms/test_lobe_jit.py`` compares them on real slices). :func:`reduce_even` gives the same numbers as
:func:`~.functional.reduce_slice`; :func:`crop_resize_bilinear` the crops of :func:`~.functional.crop_resize` within
float32 rounding of ``F.interpolate``. Imported only when numba is installed (:func:`~.functional.jit_kernels`).

Connected parts are 8-connected and numbered like ``scipy.ndimage.label``: in the raster order of their first pixel
(runs joined by a union-find whose root is always a part's smallest run number, the run of its first pixel).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["bins_hist", "otsu_bin", "parts_kernel", "crop_resize_bilinear", "reduce_even"]


@njit(cache=True, nogil=True)
def bins_hist(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`~.functional_quantize.intensity_bins` (``threshold=None``) of a 2D float32 slice and its 256-level
    histogram: ``(q int32, hist int64)``. ``floor(256 x)`` clipped to [0, 255]; as numpy's float-to-int32 cast
    gives INT32_MIN (clipped to 0) for NaN and for values out of the int32 range, so does this."""
    h, w = gray.shape
    q = np.empty((h, w), np.int32)
    hist = np.zeros(256, np.int64)
    for y in range(h):
        for x in range(w):
            v = gray[y, x] * 256.0  # exact in float64 (a power of two), as numpy's float32 product barring overflow
            if not (-2147483648.0 <= v < 2147483648.0):  # NaN, inf and out of int32 range
                b = 0
            else:
                t = int(v)  # truncation towards zero, as the cast
                b = 0 if t < 0 else (255 if t > 255 else t)
            q[y, x] = b
            hist[b] += 1
    return q, hist


@njit(cache=True, nogil=True)
def otsu_bin(hist: np.ndarray) -> int:
    """:func:`~.functional_quantize.threshold_bin` (``"otsu"``) of a 256-level histogram: the same float64 sums,
    products and first maximum as the numpy version."""
    n = hist.shape[0]
    p = np.empty(n, np.float64)
    s = np.empty(n, np.float64)
    cp, cs = 0.0, 0.0
    for i in range(n):
        hi = float(hist[i])
        cp += hi
        cs += hi * ((i + 0.5) / n)
        p[i], s[i] = cp, cs
    best, k = -1.0, 0
    for i in range(n):
        w1 = p[n - 1] - p[i]
        mu0 = s[i] / max(p[i], 1.0)
        mu1 = (s[n - 1] - s[i]) / max(w1, 1.0)
        d = mu0 - mu1
        v = p[i] * w1 * (d * d)
        if v > best:
            best, k = v, i
    return k


@njit(cache=True, nogil=True)
def _find(parent: np.ndarray, a: int) -> int:
    """The root of ``a`` (path halving)."""
    while parent[a] != a:
        parent[a] = parent[parent[a]]
        a = parent[a]
    return a


@njit(cache=True, nogil=True)
def _union(parent: np.ndarray, a: int, b: int) -> None:
    """Join the parts of labels ``a`` and ``b``: the smaller root (the earlier first pixel) stays the root."""
    ra, rb = _find(parent, a), _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb


@njit(cache=True, nogil=True)
def _runs8(mask: np.ndarray, y0: int, y1: int, x0: int, x1: int):
    """The 8-connected parts of the nonzero pixels of ``mask[y0:y1, x0:x1]`` as runs (row pieces):
    ``(n, row, start, stop, part)``, the run ``k`` covering ``mask[row[k], start[k]:stop[k]]`` of part ``part[k]``
    (1..n), the parts numbered in the raster order of their first pixel (as ``scipy.ndimage.label``).

    Each run starts as its own part and joins the runs of the row above that touch it (8-connected: they overlap
    its extent widened by one pixel); the root of a part is its smallest run number, the run of its first pixel.
    """
    cap = (y1 - y0) * ((x1 - x0 + 1) // 2) + 1
    row = np.empty(cap, np.int32)
    start = np.empty(cap, np.int32)
    stop = np.empty(cap, np.int32)
    parent = np.empty(cap, np.int32)
    k = 0
    above0 = above1 = 0  # the runs of the row above: above0 .. above1 - 1
    for y in range(y0, y1):
        m = mask[y]
        first = k
        j = above0
        x = x0
        while x < x1:
            if not m[x]:
                x += 1
                continue
            s = x
            while x < x1 and m[x]:
                x += 1
            row[k], start[k], stop[k], parent[k] = y, s, x, k
            while j < above1 and stop[j] < s:  # ends left of this run's widened extent (and of the later runs')
                j += 1
            i = j
            while i < above1 and start[i] <= x:  # touches [s - 1, x]
                _union(parent, k, i)
                i += 1
            k += 1
        above0, above1 = first, k
    part = np.empty(k, np.int32)
    n = 0
    for i in range(k):
        r = _find(parent, i)
        if r == i:
            n += 1
            part[i] = n
        else:
            part[i] = part[r]
    return n, row[:k], start[:k], stop[:k], part


@njit(cache=True, nogil=True)
def _label8(mask: np.ndarray, y0: int, y1: int, x0: int, x1: int, out: np.ndarray) -> int:
    """Label the 8-connected parts of the nonzero pixels of ``mask[y0:y1, x0:x1]`` into ``out`` (same window, which
    must be 0 before), numbered 1.. in the raster order of their first pixel (as ``scipy.ndimage.label``); returns
    their number."""
    n, row, start, stop, part = _runs8(mask, y0, y1, x0, x1)
    for i in range(row.shape[0]):
        out[row[i], start[i] : stop[i]] = part[i]
    return n


@njit(cache=True, nogil=True)
def _window3(x: np.ndarray, use_max: bool) -> np.ndarray:
    """3x3 minimum (``use_max`` False) or maximum of a 2D uint8 0/1 mask, the window clipped at the image border
    (:func:`~.functional_quantize.window3_np`)."""
    h, w = x.shape
    o = np.empty((h, w), np.uint8)
    for y in range(h):
        for i in range(w):
            v = x[y, i]
            if i > 0:
                v = max(v, x[y, i - 1]) if use_max else min(v, x[y, i - 1])
            if i < w - 1:
                v = max(v, x[y, i + 1]) if use_max else min(v, x[y, i + 1])
            o[y, i] = v
    p = np.empty((h, w), np.uint8)
    for y in range(h):
        for i in range(w):
            v = o[y, i]
            if y > 0:
                v = max(v, o[y - 1, i]) if use_max else min(v, o[y - 1, i])
            if y < h - 1:
                v = max(v, o[y + 1, i]) if use_max else min(v, o[y + 1, i])
            p[y, i] = v
    return p


@njit(cache=True, nogil=True)
def _level(hist: np.ndarray, pct: int) -> int:
    """``_level`` of :mod:`.functional_locate` with ``share = pct / 100``: the lowest level whose cumulative count
    reaches ``ceil(total * pct / 100)``, -1 for an empty histogram."""
    total = 0
    for v in hist:
        total += v
    if total == 0:
        return -1
    need = -(-total * pct // 100)
    c = 0
    for i in range(hist.shape[0]):
        c += hist[i]
        if c >= need:
            return i
    return hist.shape[0]


@njit(cache=True, nogil=True)
def parts_kernel(
    q: np.ndarray,
    bright: np.ndarray,
    hist: np.ndarray,
    hist_body: np.ndarray,
    open_walls: int,
    wall: float,
    body_share: float,
    gas_level: float,
    air_spread: float,
):
    """Everything of :func:`~.functional_locate.find_parts` after the threshold, for an (H, W) slice: its int32
    levels ``q``, its ``bright`` pixels (uint8 0/1), the slice's and the bright pixels' 256-level histograms, ``open_walls`` and
    the module's constants (``WALL``, ``BODY_SHARE``, ``GAS_LEVEL``, ``AIR_SPREAD``).

    Returns:
        ``(n, labels, stats, body, air, gas)``: ``n`` the number of parts (-1: no body), ``labels`` (H, W) int32,
        ``stats`` (n, 8) int64 columns area, n_air, sum_q, n_wall, x0, y0, x1, y1, ``body`` the 6 moments, and the
        outside air's median level and the highest air level (-1: none).
    """
    h, w = q.shape
    labels = np.zeros((h, w), np.int32)
    moments = np.zeros(6, np.int64)
    # ---- the body: the largest part of the opened bright pixels (all of them by BODY_SHARE / sides) ----
    opened = bright
    for _ in range(open_walls // 2):
        opened = _window3(opened, False)
    for _ in range(open_walls // 2):
        opened = _window3(opened, True)
    n_walls, b_row, b_start, b_stop, b_part = _runs8(opened, 0, h, 0, w)
    if n_walls == 0:
        return -1, labels, np.zeros((0, 8), np.int64), moments, 0, 0
    best = 0  # 0: all the bright parts
    if n_walls > 1:
        sizes = np.zeros(n_walls + 1, np.int64)
        for i in range(b_row.shape[0]):
            sizes[b_part[i]] += b_stop[i] - b_start[i]
        best, total = 1, 0
        for i in range(1, n_walls + 1):
            total += sizes[i]
            if sizes[i] > sizes[best]:
                best = i
        top = bottom = left = right = 0
        for i in range(b_row.shape[0]):
            if b_part[i] == best:
                top |= b_row[i] == 0
                bottom |= b_row[i] == h - 1
                left |= b_start[i] == 0
                right |= b_stop[i] == w
        if sizes[best] < body_share * total or top + bottom + left + right > 2:
            best = 0
    # ---- the body's window and its first/last pixel per row and per column ----
    y0, y1, x0, x1 = h, 0, w, 0
    for i in range(b_row.shape[0]):
        if best == 0 or b_part[i] == best:
            y0, y1 = min(y0, b_row[i]), max(y1, b_row[i] + 1)
            x0, x1 = min(x0, b_start[i]), max(x1, b_stop[i])
    xf = np.full(h, w, np.int64)  # first and last body pixel per row (image coordinates; xf > xl: none)
    xl = np.full(h, -1, np.int64)
    yf = np.full(w, h, np.int64)
    yl = np.full(w, -1, np.int64)
    for i in range(b_row.shape[0]):
        if best == 0 or b_part[i] == best:
            y = b_row[i]
            xf[y] = min(xf[y], b_start[i])
            xl[y] = max(xl[y], b_stop[i] - 1)
            for x in range(b_start[i], b_stop[i]):
                yf[x] = min(yf[x], y)
                yl[x] = max(yl[x], y)
    n_rows, n_cols = 0, 0
    for y in range(h):
        if xl[y] >= 0:
            n_rows += 1
    for x in range(w):
        if yl[x] >= 0:
            n_cols += 1
    reach = int(wall * max(n_rows, n_cols))
    # ---- dark pixels inside the body (between its pixels along the row and the column) and the body's moments ----
    dark = np.zeros((h, w), np.uint8)
    inside_n, sx, sy, sxx, syy, sxy = 0, 0, 0, 0, 0, 0
    for y in range(y0, y1):
        for x in range(xf[y], xl[y] + 1):
            if y < yf[x] or y > yl[x]:
                continue
            inside_n += 1
            sx += x
            sy += y
            sxx += x * x
            syy += y * y
            sxy += x * y
            if not bright[y, x]:
                dark[y, x] = 1
    moments[0], moments[1], moments[2], moments[3], moments[4], moments[5] = inside_n, sx, sy, sxx, syy, sxy
    n, d_row, d_start, d_stop, d_part = _runs8(dark, y0, y1, x0, x1)
    # ---- the outside air's levels (everything neither bright nor dark inside) ----
    hist_air = hist - hist_body
    for i in range(d_row.shape[0]):
        qr = q[d_row[i]]
        for x in range(d_start[i], d_stop[i]):
            hist_air[qr[x]] -= 1
    air, air90 = _level(hist_air, 50), _level(hist_air, 90)
    if air < 0:
        air = air90 = 0
        for i in range(hist.shape[0]):
            if hist[i]:
                air = air90 = i
                break
    body_level = _level(hist_body, 50)
    span = 0 if body_level < 0 else max(body_level - air, 0)
    gas = -1 if air90 - air > air_spread * span else air + int(span * gas_level)
    # ---- the parts: labels and statistics, run by run ----
    stats = np.zeros((n, 8), np.int64)
    for i in range(n):
        stats[i, 4], stats[i, 5], stats[i, 6], stats[i, 7] = w, h, -1, -1
    for i in range(d_row.shape[0]):
        y, a, b, lab = d_row[i], d_start[i], d_stop[i], d_part[i]
        labels[y, a:b] = lab
        st = stats[lab - 1]
        st[0] += b - a
        st[4], st[5] = min(st[4], a), min(st[5], y)
        st[6], st[7] = max(st[6], b), max(st[7], y + 1)
        qr = q[y]
        row_deep = xf[y] + reach + 1 <= xl[y] - reach - 1
        for x in range(a, b):
            v = qr[x]
            if v <= gas:
                st[1] += 1
            st[2] += v
            # against the wall: not deep inside along the row or the column
            if not (
                row_deep
                and xf[y] + reach + 1 <= x <= xl[y] - reach - 1
                and yf[x] + reach + 1 <= y <= yl[x] - reach - 1
            ):
                st[3] += 1
    return n, labels, stats, moments, air, gas


# ---------------------------------------------------------------------------------------------------------------
# the crops and the locator's reduction
# ---------------------------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True)
def _axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Source pixels and weights of a bilinear resize of one axis from ``n_in`` to ``n_out`` pixels
    (``align_corners=False``, no antialiasing), as ATen's CPU kernel computes them: the source position
    ``scale * (i + 0.5) - 0.5`` rounded once (a fused multiply-add; exact in float64, then float32), clamped at 0;
    the same size copies."""
    i0 = np.empty(n_out, np.int64)
    i1 = np.empty(n_out, np.int64)
    w0 = np.empty(n_out, np.float32)
    w1 = np.empty(n_out, np.float32)
    one, zero = np.float32(1.0), np.float32(0.0)
    if n_in == n_out:
        for i in range(n_out):
            i0[i], i1[i], w0[i], w1[i] = i, i, one, zero
        return i0, i1, w0, w1
    scale = np.float64(np.float32(np.float32(n_in) / np.float32(n_out)))
    for i in range(n_out):
        r = np.float32(scale * (i + 0.5) - 0.5)
        if r < zero:
            r = zero
        j = min(int(np.floor(r)), n_in - 1)
        lam = min(max(r - np.float32(j), zero), one)
        i0[i], i1[i] = j, j + 1 if j < n_in - 1 else j
        w0[i], w1[i] = one - lam, lam
    return i0, i1, w0, w1


@njit(cache=True, nogil=True)
def crop_resize_bilinear(img: np.ndarray, boxes: np.ndarray, out: np.ndarray) -> None:
    """Crop each ``(x, y, w, h)`` row of ``boxes`` (int64, inside the image) of a (C, H, W) float32 image and resize
    it bilinearly (``align_corners=False``, no antialiasing) into ``out[i]`` (N, C, S0, S1).

    Separable: every source row a crop needs is interpolated along the row once (a gather), then every output row
    is the weighted sum of two such rows (contiguous: vectorised). The sample points and weights are those of
    ``F.interpolate``; its 2D kernel sums in another order, so values agree within float32 rounding (a few ulp).
    """
    c = img.shape[0]
    s0, s1 = out.shape[2], out.shape[3]
    for b in range(boxes.shape[0]):
        bx, by, bw, bh = boxes[b, 0], boxes[b, 1], boxes[b, 2], boxes[b, 3]
        yi0, yi1, wy0, wy1 = _axis(bh, s0)
        xi0, xi1, wx0, wx1 = _axis(bw, s1)
        need = np.zeros(bh, np.bool_)
        for y in range(s0):
            need[yi0[y]] = True
            need[yi1[y]] = True
        rows = np.empty((bh, s1), np.float32)
        for ch in range(c):
            for r in range(bh):
                if need[r]:
                    src = img[ch, by + r, bx : bx + bw]
                    row = rows[r]
                    for x in range(s1):
                        row[x] = src[xi0[x]] * wx0[x] + src[xi1[x]] * wx1[x]
            for y in range(s0):
                a, e = rows[yi0[y]], rows[yi1[y]]
                p, q = wy0[y], wy1[y]
                o = out[b, ch, y]
                for x in range(s1):
                    o[x] = a[x] * p + e[x] * q


@njit(cache=True, nogil=True)
def reduce_even(x: np.ndarray, f: int) -> np.ndarray:
    """:func:`~.functional.reduce_slice` of a 2D float32 image by an even factor ``f``: the mean of the 2 x 2 centre
    of every ``f`` x ``f`` block, summed as ``((a + b) + (c + d)) / 4`` in float32 (the same numbers)."""
    h, w = x.shape[0] // f, x.shape[1] // f
    out = np.empty((h, w), np.float32)
    i = f // 2 - 1
    quarter = np.float32(0.25)
    for y in range(h):
        r0, r1 = x[f * y + i], x[f * y + i + 1]
        for k in range(w):
            j = f * k + i
            out[y, k] = ((r0[j] + r0[j + 1]) + (r1[j] + r1[j + 1])) * quarter
    return out
