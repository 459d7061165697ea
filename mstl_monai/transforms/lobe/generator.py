# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The paper's lung-lobe Generator (locate -> crop -> resize) for one slice, and its random-jitter version."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from monai.config import NdarrayOrTensor
from monai.transforms import RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_tensor

from .functional import LUNG, THRESHOLD_METHODS, boundary_map, content_box, cpu_single_thread, lung_box_from_boundary
from .select import Parts, box_or_none, find_parts, parts_box, select_parts, select_series

__all__ = ["LOBE_NAMES", "DEFAULT_LOBE_BOXES", "LobeRegions", "LungLobeGenerator", "RandLungLobeGenerator"]

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
    """What :class:`LungLobeGenerator` returns.

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


def _check_table(lobe_boxes: Mapping[str, Sequence[float]] | None) -> np.ndarray:
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


def _check_image(img: NdarrayOrTensor, name: str) -> None:
    """The one rule for the Generators' input: a (C, H, W) image of at least 2x2 pixels."""
    if img.ndim != 3:
        raise ValueError(f"{name} expects a (C, H, W) image, got shape {tuple(img.shape)}.")
    if img.shape[-2] < 2 or img.shape[-1] < 2:
        raise ValueError(f"{name} needs an image of at least 2x2 pixels, got shape {tuple(img.shape)}.")


def _clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int]:
    x0 = int(min(max(math.floor(x), 0), width - 1))
    y0 = int(min(max(math.floor(y), 0), height - 1))
    x1 = int(min(max(math.ceil(x + w), x0 + 1), width))
    y1 = int(min(max(math.ceil(y + h), y0 + 1), height))
    return x0, y0, x1 - x0, y1 - y0


class LungLobeGenerator(Transform):
    """The paper's region Generator (locate -> crop -> resize): five crops over the lung lobes ``ru, rm, rl, lu, ll``.

    Locate: constant bands at the image border (the padding of ``SpatialPad``, empty background) are set aside
    (``ignore_padding``), so that padding a slice does not change what is found; the rest of the slice (channel
    mean) is resampled to ``locate_size`` pixels on its longest side (bilinear; so that the pixel sizes below mean
    the same at any input size). There (:mod:`.select`, numpy/scipy on the CPU) bright pixels (Otsu) are the body
    class; the largest part of them, thin structures such as the CT table opened away (``open_walls``), is the body;
    dark parts between body pixels along their row and their column are the candidates. Of these, gas pockets
    (stomach, bowel: a core at the level of the outside air, where lung tissue is denser), parts away from the
    lungs (the largest lung-like part, its mirror partner across the body's axis and big parts are the lungs; other
    parts count only within their reach) and small parts (below ``min_component_ratio`` of the largest lung part)
    are set aside: the lung class of ``labels``. The lung box is the extent of the lung's boundary pixels
    (:class:`BoundaryMap`; with ``trim`` 0, the extent of the lung parts), trimmed by ``trim`` on each side.
    Without a lung the search runs once more without the opening of the walls (e.g. a slice in a soft-tissue
    window). The five lobe boxes sit at fixed relative positions in the lung box (``lobe_boxes``, default
    :data:`DEFAULT_LOBE_BOXES`). Crop and resize: each box of the full-resolution image is resized to
    ``spatial_size``. When no lung is found (no lung-like part, or a box whose longer side is below
    ``min_box_fraction`` of the image's or its shorter below half of that, e.g. a constant image or an abdominal
    slice with only bowel gas), the lung box falls back to ``fallback_box`` (fractions ``(x, y, w, h)`` of the image
    inside its padding; default all of it) and ``fallback`` is ``True``. The crops run on the image's device.
    Images smaller than 2x2 pixels are refused (``ValueError``), by this and by :class:`RandLungLobeGenerator`.
    For the slices of a series, :meth:`locate_series` also checks each slice against its neighbours.

    Lung-box accuracy: ``scripts/lung_locator_check.py`` scores the IoU of the lung box with the bounding box of
    radiologists' lung masks on 100 slices, split into a tuning and a held-out half.

    Args:
        spatial_size: output size of each region (int or (H, W)).
        lobe_boxes: table ``{name: (x, y, w, h)}`` of fractions of the lung box, keys :data:`LOBE_NAMES`.
        threshold: quantiser threshold (``None``: Otsu per image; give e.g. -400 for images in HU).
        locate_size: longest side the slice is resampled to for locating the lung (``None``: as it is).
        fallback_box: ``(x, y, w, h)`` fractions of the image (inside its padding) used when no lung is found
            (``None``: all of it).
        min_box_fraction: the lung box's longer side must span at least this fraction of the image's (along that
            side), its shorter side half of that.
        trim: fraction of the lung boundary pixels trimmed on each side when taking the box.
        open_size: side of the square opening that decides which dark parts are only thin slits, in pixels of the
            resampled image (1: none, the default: dark areas outside the body, such as gaps in the CT table, are
            set aside anyway, and thin lung bases are kept). A part that survives it is kept whole.
        min_component_ratio: lung-like parts smaller than this fraction of the largest one are not lung (specks;
            0: keep all).
        ignore_padding: set constant border bands aside when locating (:func:`~.functional.content_box`).
        open_walls: side of the square opening of the bright pixels before deciding what they enclose, in pixels
            of the reduced image (thin bright structures such as the CT table then enclose nothing; 1: none).
            When that finds no lung, the lung is searched once more without the opening.
        mode: interpolation mode of the resize (``"bilinear"``, ``"nearest"``, ``"bicubic"``, ``"area"``).
        single_thread: on CPU, run on one intra-op thread (see :func:`~.functional.cpu_single_thread`).

    .. code-block:: python

        out = LungLobeGenerator(spatial_size=224)(img)  # img (1, H, W) in [0, 1]
        out.regions.shape  # (5, 1, 224, 224); out.boxes (5, 4) x, y, w, h; out.fallback False
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        spatial_size: int | Sequence[int] = 224,
        lobe_boxes: Mapping[str, Sequence[float]] | None = None,
        threshold: float | None = None,
        locate_size: int | None = 128,
        fallback_box: Sequence[float] | None = None,
        min_box_fraction: float = 0.1,
        trim: float = 0.0,
        open_size: int = 1,
        open_walls: int = 3,
        method: str = "otsu",
        mode: str = "bilinear",
        single_thread: bool = True,
        min_component_ratio: float = 0.05,
        ignore_padding: bool = True,
    ) -> None:
        size = (spatial_size, spatial_size) if isinstance(spatial_size, int) else tuple(int(s) for s in spatial_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError(f"spatial_size must be a positive int or (H, W), got {spatial_size!r}.")
        self.spatial_size = size
        self.table = _check_table(lobe_boxes)
        self.threshold = threshold
        if locate_size is not None and locate_size < 8:
            raise ValueError(f"locate_size must be >= 8 or None, got {locate_size}.")
        self.locate_size = locate_size
        if fallback_box is not None:
            fb = tuple(float(v) for v in fallback_box)
            if len(fb) != 4 or fb[2] <= 0 or fb[3] <= 0 or min(fb[:2]) < 0 or fb[0] + fb[2] > 1 or fb[1] + fb[3] > 1:
                raise ValueError(f"fallback_box must be (x, y, w, h) fractions inside the image, got {fallback_box!r}.")
            self.fallback_box: tuple[float, float, float, float] = fb  # type: ignore[assignment]
        else:
            self.fallback_box = (0.0, 0.0, 1.0, 1.0)
        if not 0.0 <= min_box_fraction <= 1.0:
            raise ValueError(f"min_box_fraction must be in [0, 1], got {min_box_fraction}.")
        self.min_box_fraction = min_box_fraction
        if not 0.0 <= trim < 0.5:
            raise ValueError(f"trim must be in [0, 0.5), got {trim}.")
        self.trim = trim
        if open_size < 1 or open_size % 2 == 0:
            raise ValueError(f"open_size must be an odd int >= 1, got {open_size}.")
        self.open_size = int(open_size)
        if open_walls < 1 or open_walls % 2 == 0:
            raise ValueError(f"open_walls must be an odd int >= 1, got {open_walls}.")
        self.open_walls = int(open_walls)
        if method not in THRESHOLD_METHODS:
            raise ValueError(f"method must be one of {tuple(THRESHOLD_METHODS)}, got {method!r}.")
        self.method = method
        if mode not in ("bilinear", "nearest", "bicubic", "area", "nearest-exact"):
            raise ValueError(f"mode must be bilinear, nearest, nearest-exact, bicubic or area, got {mode!r}.")
        self.mode = mode
        self.single_thread = single_thread
        if not 0.0 <= min_component_ratio <= 1.0:
            raise ValueError(f"min_component_ratio must be in [0, 1], got {min_component_ratio}.")
        self.min_component_ratio = float(min_component_ratio)
        self.ignore_padding = bool(ignore_padding)

    # -- locate ----------------------------------------------------------------------------------------------------
    def locate(self, img: torch.Tensor) -> tuple[tuple[int, int, int, int], bool, dict[str, Any]]:
        """Find the lung box of a (C, H, W) slice.

        Returns:
            ``(box, fallback, info)``: the lung box (x, y, w, h) in the image's pixels, whether the fallback was
            used, and ``info`` with the resampled ``labels`` (1, H', W') uint8 on the CPU (``AIR``/``BODY``/``LUNG``,
            the lung class holding the lung parts found), the ``scale`` (h / H', w / W') and the ``content_box``
            (x, y, w, h) they cover (the image inside its padding).

        Raises:
            ValueError: the image is not (C, H, W) or is smaller than 2x2 pixels.
        """
        _check_image(img, type(self).__name__)
        gray, cbox, scale = self._resample(img, None)
        parts, keep, _, found = self._find(gray)
        info = {"labels": self._labels(parts, keep, gray.shape), "scale": scale, "content_box": cbox}
        return (*self._to_image(found, cbox, scale), info)

    def _locate_box(self, img: torch.Tensor) -> tuple[tuple[int, int, int, int], bool]:
        """:meth:`locate` without its ``info`` (what the crops need)."""
        gray, cbox, scale = self._resample(img, None)
        return self._to_image(self._find(gray)[3], cbox, scale)

    def locate_series(self, stack: NdarrayOrTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The lung boxes of the (N, C, H, W) slices of one series, in order along the body axis.

        Each slice is located as by :meth:`locate`, then checked against its neighbours
        (:func:`~.select.select_series`): from the slice with the most lung outwards, a slice keeps the lung-like
        parts that continue the lung of the slice before it. This sets aside gas and dark areas that a slice alone
        cannot tell from lung, and keeps small lung parts at the apex and the bases that continue the lung. The
        padding set aside is the one common to all slices.

        Returns:
            ``(boxes, fallback)``: (N, 4) int64 boxes (x, y, w, h) and (N,) bool, on the CPU.

        Raises:
            ValueError: ``stack`` is not (N, C, H, W) or its slices are smaller than 2x2 pixels.
        """
        t = convert_to_tensor(stack, track_meta=False)
        if t.ndim != 4:
            raise ValueError(f"locate_series expects an (N, C, H, W) stack of slices, got shape {tuple(t.shape)}.")
        _check_image(t[0] if len(t) else t.new_zeros(1, 2, 2), "locate_series")
        gray_all = t.float().mean(dim=1, keepdim=True) if t.shape[1] > 1 else t.float()
        h, w = t.shape[-2:]
        cbox = content_box(gray_all) if self.ignore_padding else (0, 0, w, h)
        found = [self._find(self._resample(s, cbox)[0]) for s in t]
        labels = [None if p is None else p.labels for p, _, _, _ in found]
        keeps = select_series(labels, [like for _, _, like, _ in found], [k for _, k, _, _ in found])
        gray, _, scale = self._resample(t[0], cbox) if len(t) else (np.zeros((1, 1), np.float32), cbox, (1.0, 1.0))
        boxes, fallback = [], []
        for (parts, _, _, _), keep in zip(found, keeps):
            box, fell = self._to_image(self._box(parts, keep, gray.shape), cbox, scale)
            boxes.append(box)
            fallback.append(fell)
        return torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4), torch.tensor(fallback, dtype=torch.bool)

    def _resample(
        self, img: torch.Tensor, cbox: tuple[int, int, int, int] | None
    ) -> tuple[np.ndarray, tuple[int, int, int, int], tuple[float, float]]:
        """The slice's channel mean inside its padding (``cbox``; ``None``: its own), resampled to ``locate_size``
        on its longest side: ``(gray, content_box, scale)``, gray a float32 (H', W') array on the CPU."""
        h, w = img.shape[-2:]
        gray = img.float().mean(dim=-3, keepdim=True) if img.shape[-3] > 1 else img.float()
        if cbox is None:
            cbox = content_box(gray) if self.ignore_padding else (0, 0, w, h)
        cx, cy, cw, ch = cbox
        gray = gray[:, cy : cy + ch, cx : cx + cw]
        sy = sx = 1.0
        if self.locate_size is not None and max(ch, cw) != self.locate_size:
            scale = self.locate_size / max(ch, cw)
            hs, ws = max(1, round(ch * scale)), max(1, round(cw * scale))
            # bilinear without antialiasing at a 1/4 scale averages the 2x2 centre of each 4x4 block: a cheap
            # low-pass reduction (5x faster than an area average); small images are enlarged the same way. The
            # kernel behind ``F.interpolate(..., mode="bilinear", align_corners=False)``, without its checks.
            gray = torch._C._nn.upsample_bilinear2d(gray[None], (hs, ws), False, None, None)[0]
            sy, sx = ch / hs, cw / ws
        return np.ascontiguousarray(gray[0].detach().cpu().numpy()), (cx, cy, cw, ch), (sy, sx)

    def _find(self, gray: np.ndarray) -> tuple[Parts | None, np.ndarray, np.ndarray, tuple[int, int, int, int] | None]:
        """The dark parts of a resampled slice, which are lung and the lung box: ``(parts, keep, lung_like, box)``;
        first with the bright walls opened (the CT table encloses nothing), without that opening when it finds no
        lung."""
        parts, keep, like, box = None, np.zeros(0, dtype=bool), np.zeros(0, dtype=bool), None
        for walls in dict.fromkeys((self.open_walls, 1)):
            found = find_parts(gray, self.threshold, self.method, walls, self.open_size)
            if found is None:
                continue
            parts = found
            keep, like = select_parts(*found[2:], min_ratio=self.min_component_ratio)
            box = self._box(parts, keep, gray.shape)
            if box is not None:
                break
        return parts, keep, like, box

    def _labels(self, parts: Parts | None, keep: np.ndarray, shape: tuple[int, int]) -> torch.Tensor:
        """The (1, H', W') uint8 ``AIR``/``BODY``/``LUNG`` labels of a resampled slice."""
        if parts is None:
            return torch.zeros((1, *shape), dtype=torch.uint8)
        labels = parts.bright.astype(np.uint8)  # BODY where bright
        labels[np.concatenate([[False], keep])[parts.labels]] = LUNG
        return torch.from_numpy(labels)[None]

    def _box(self, parts: Parts | None, keep: np.ndarray, shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
        """The lung box (x, y, w, h) in the resampled slice, or ``None`` (no lung)."""
        if parts is None or not keep.any():
            return None
        if self.trim == 0.0:
            return parts_box(parts.bbox, keep, shape[0], shape[1], self.min_box_fraction)
        labels = self._labels(parts, keep, shape)
        box = lung_box_from_boundary(boundary_map(labels)[0], labels[0], trim=self.trim, min_fraction=0.0, min_pixels=1)
        return None if box is None else box_or_none(box, shape[0], shape[1], self.min_box_fraction)

    def _to_image(
        self, found: tuple[int, int, int, int] | None, cbox: tuple[int, int, int, int], scale: tuple[float, float]
    ) -> tuple[tuple[int, int, int, int], bool]:
        """A box of the resampled slice in the image's pixels (the fallback box for ``None``): ``(box, fallback)``."""
        cx, cy, cw, ch = cbox
        if found is None:
            fx, fy, fw, fh = self.fallback_box
            x0, y0, bw, bh = _clip_box(fx * cw, fy * ch, fw * cw, fh * ch, cw, ch)
            return (x0 + cx, y0 + cy, bw, bh), True
        sy, sx = scale
        x, y, bw, bh = found
        x0, y0, bw, bh = _clip_box(x * sx, y * sy, bw * sx, bh * sy, cw, ch)
        return (x0 + cx, y0 + cy, bw, bh), False

    def lobe_boxes(
        self, lung_box: Sequence[int], height: int, width: int, offsets: np.ndarray | None = None
    ) -> torch.Tensor:
        """The five lobe boxes (5, 4) ``(x, y, w, h)`` in pixels from the lung box and the relative table.

        ``offsets`` (5, 4), optional, are added to the table's fractions (x, y shift; w, h relative scale).
        """
        lx, ly, lw, lh = (float(v) for v in lung_box)
        table = self.table.copy()
        if offsets is not None:
            table[:, :2] += offsets[:, :2] * table[:, 2:]
            table[:, 2:] *= 1.0 + offsets[:, 2:]
        boxes = [_clip_box(lx + fx * lw, ly + fy * lh, fw * lw, fh * lh, width, height) for fx, fy, fw, fh in table]
        return torch.tensor(boxes, dtype=torch.int64)

    def crop_resize(self, img: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Crop each (x, y, w, h) box of a (C, H, W) image and resize it to ``spatial_size``: (N, C, S, S).

        Bilinear crops are written straight into the output (ATen's ``upsample_bilinear2d`` with ``out=``, the
        kernel behind ``F.interpolate``): no per-crop buffers and no concatenation, which halves the cost on CPU.
        """
        x = img.float() if not img.is_floating_point() else img
        rows = boxes.tolist()
        out = torch.empty((len(rows), x.shape[0], *self.spatial_size), dtype=x.dtype, device=x.device)
        for i, (bx, by, bw, bh) in enumerate(rows):
            crop = x[None, :, by : by + bh, bx : bx + bw]
            if self.mode == "bilinear":
                torch._C._nn.upsample_bilinear2d(crop, self.spatial_size, False, None, None, out=out[i : i + 1])
            else:
                kw = {"align_corners": False} if self.mode == "bicubic" else {}
                out[i : i + 1] = F.interpolate(crop, size=self.spatial_size, mode=self.mode, **kw)
        return out

    def __call__(
        self, img: NdarrayOrTensor, offsets: np.ndarray | None = None, lung_offsets: np.ndarray | None = None
    ) -> LobeRegions:
        """Generate the five regions of a (C, H, W) slice; ``offsets`` (5, 4) jitter the lobe table (see
        :meth:`lobe_boxes`) and ``lung_offsets`` (4,) the lung box (x, y shift in box sizes; w, h relative scale)."""
        _check_image(img, "LungLobeGenerator")
        t = convert_to_tensor(img, track_meta=False)
        h, w = t.shape[-2:]
        with cpu_single_thread(self.single_thread and t.device.type == "cpu"):
            lung_box, fallback = self._locate_box(t)
            if lung_offsets is not None:
                lx, ly, lw, lh = lung_box
                o = lung_offsets
                lung_box = _clip_box(lx + o[0] * lw, ly + o[1] * lh, lw * (1 + o[2]), lh * (1 + o[3]), w, h)
            boxes = self.lobe_boxes(lung_box, h, w, offsets)
            regions = self.crop_resize(t, boxes)
        dev = regions.device
        return LobeRegions(
            regions=regions,
            boxes=boxes.to(dev),
            labels=torch.arange(len(LOBE_NAMES), dtype=torch.int64, device=dev),
            fallback=bool(fallback),
            lung_box=torch.tensor(lung_box, dtype=torch.int64, device=dev),
        )


def check_jitter(jitter: float) -> float:
    """The relative box jitter of the random Generators, checked: in [0, 1)."""
    if not 0.0 <= jitter < 1.0:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}.")
    return float(jitter)


class RandLungLobeGenerator(RandomizableTransform):
    """:class:`LungLobeGenerator` with random box jitter, for the self-supervised stage.

    With probability ``prob`` the lung box and each lobe box are jittered: the position moves by up to
    ``jitter`` of the box's size and the size scales by a factor in ``[1 - jitter, 1 + jitter]`` (uniform
    draws from ``self.R``); otherwise the boxes are the deterministic ones. Boxes are clipped to the image.

    Args:
        spatial_size: output size of each region.
        prob: probability of jittering.
        jitter: maximal relative jitter (>= 0, < 1).
        kwargs: the other arguments of :class:`LungLobeGenerator`.
    """

    backend = LungLobeGenerator.backend

    def __init__(
        self, spatial_size: int | Sequence[int] = 224, prob: float = 1.0, jitter: float = 0.1, **kwargs
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.jitter = check_jitter(jitter)
        self.generator = LungLobeGenerator(spatial_size=spatial_size, **kwargs)
        self._offsets: np.ndarray | None = None
        self._lung_offsets: np.ndarray | None = None

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if not self._do_transform:
            self._offsets = self._lung_offsets = None
            return
        self._lung_offsets = self.R.uniform(-self.jitter, self.jitter, size=4)
        self._offsets = self.R.uniform(-self.jitter, self.jitter, size=(len(LOBE_NAMES), 4))

    def __call__(self, img: NdarrayOrTensor, randomize: bool = True) -> LobeRegions:
        _check_image(img, "RandLungLobeGenerator")
        if randomize:
            self.randomize()
        return self.generator(img, offsets=self._offsets, lung_offsets=self._lung_offsets)
