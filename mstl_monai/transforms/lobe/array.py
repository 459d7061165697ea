# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The lobe transforms as array transforms: the boundary map, the lung quantiser, the lung locator and the paper's
lung-lobe Generator (per slice, with random jitter, and for a whole batch on its device). Their functional core is
in :mod:`.functional`, :mod:`.functional_quantize`, :mod:`.functional_locate` and :mod:`.functional_batched`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import RandomizableTransform, Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .functional import (
    LOBE_NAMES,
    LobeRegions,
    box_to_image,
    boundary_map,
    check_jitter,
    check_lobe_table,
    check_slice,
    clip_box,
    content_box,
    cpu_single_thread,
    crop_resize,
    lobe_boxes,
    resample_slice,
)
from .functional_batched import batched_crop_resize, batched_lobe_boxes, batched_locate, clip_boxes
from .functional_locate import Parts, locate_parts, part_labels, parts_lung_box, select_series
from .functional_quantize import THRESHOLD_METHODS, quantize_lung

__all__ = [
    "BoundaryMap",
    "QuantizeLung",
    "LungQuantize",
    "LungLobeGenerator",
    "RandLungLobeGenerator",
    "LungLocation",
    "LocateLung",
    "BatchLungLobeGenerator",
]


class BoundaryMap(Transform):
    """The paper's 3x3 boundary rule on a label image: a pixel is a boundary pixel when its 3x3 window holds
    more than one distinct value.

    Equal pixel for pixel to ``skimage.segmentation.find_boundaries(labels_2d, connectivity=2, mode="thick")``
    on every 2D image. Takes (C, H, W) or (B, C, H, W) (any (..., H, W)); numpy in gives numpy out, tensors stay
    on their device. Deterministic (cacheable).

    Args:
        dtype: output dtype (default bool).
        single_thread: on CPU, run on one intra-op thread (faster for this small memory-bound op).

    .. code-block:: python

        edges = BoundaryMap()(labels)  # labels (B, 1, 512, 512) uint8 -> bool (B, 1, 512, 512)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, dtype: torch.dtype | np.dtype | type | None = torch.bool, single_thread: bool = True) -> None:
        self.dtype = dtype
        self.single_thread = single_thread

    def __call__(self, labels: NdarrayOrTensor) -> NdarrayOrTensor:
        if labels.ndim < 3:
            raise ValueError(f"BoundaryMap expects (C, H, W) or (B, C, H, W) labels, got shape {tuple(labels.shape)}.")
        t = convert_to_tensor(labels, track_meta=False)
        out = boundary_map(t, single_thread=self.single_thread)
        return convert_to_dst_type(out, labels, dtype=self.dtype)[0]


class QuantizeLung(Transform):
    """Quantise a CT slice into ``AIR`` (0, outside the body), ``BODY`` (1) and ``LUNG`` (2) labels.

    Dark pixels enclosed by the body (between bright pixels along their row and their column) are lung; dark
    pixels reaching the image edge are air. Works on 8-bit-like slices in [0, 1] (Otsu threshold by default)
    and on Hounsfield units (``hu=True``: fixed threshold, default -400 HU). Multi-channel images use their
    channel mean.

    Args:
        threshold: dark/bright threshold in the image's units; ``None``: Otsu for [0, 1] images, -400 for HU.
        hu: the image holds Hounsfield units.

    .. code-block:: python

        labels = QuantizeLung()(LoadCTSlice()("slice.png"))  # (1, H, W) uint8 in {0, 1, 2}
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(self, threshold: float | None = None, hu: bool = False) -> None:
        self.threshold = threshold if threshold is not None else (-400.0 if hu else None)
        self.hu = hu

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        if img.ndim < 3:
            raise ValueError(f"QuantizeLung expects a (C, H, W) or (B, C, H, W) image, got shape {tuple(img.shape)}.")
        t = convert_to_tensor(img, track_meta=False, dtype=torch.float32)
        gray = t.mean(dim=-3, keepdim=True) if t.shape[-3] > 1 else t
        out = quantize_lung(gray, self.threshold)
        return convert_to_dst_type(out, img, dtype=torch.uint8 if isinstance(img, torch.Tensor) else np.uint8)[0]


LungQuantize = QuantizeLung


class LungLobeGenerator(Transform):
    """The paper's region Generator (locate -> crop -> resize): five crops over the lung lobes ``ru, rm, rl, lu, ll``.

    Locate: constant bands at the image border (the padding of ``SpatialPad``, empty background) are set aside
    (``ignore_padding``), so that padding a slice does not change what is found; the rest of the slice (channel
    mean) is resampled to ``locate_size`` pixels on its longest side (bilinear; so that the pixel sizes below mean
    the same at any input size). There (:mod:`.functional_locate`, numba kernels on the CPU, or numpy/scipy) bright pixels (Otsu) are
    the body
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
        self.table = check_lobe_table(lobe_boxes)
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
        check_slice(img, type(self).__name__)
        gray, cbox, scale = resample_slice(img, None, self.locate_size, self.ignore_padding)
        parts, keep, _, found = self._locate_parts(gray)
        info = {"labels": part_labels(parts, keep, gray.shape), "scale": scale, "content_box": cbox}
        return (*box_to_image(found, cbox, scale, self.fallback_box), info)

    def lung_fraction(self, img: torch.Tensor) -> tuple[float, bool]:
        """``(fraction, fallback)`` of a (C, H, W) slice: the share of the resampled slice's pixels that are lung and
        whether the fallback box was used; the same numbers as ``locate``'s ``(labels == LUNG).float().mean()``
        (the lung parts' areas counted, without making the label image)."""
        check_slice(img, type(self).__name__)
        gray, cbox, scale = resample_slice(img, None, self.locate_size, self.ignore_padding)
        parts, keep, _, found = self._locate_parts(gray)
        lung = 0 if parts is None else int(parts.area[keep].sum())
        # float32, as the mean of the float labels: an exact count over an exact size, rounded once
        fraction = float(np.float32(lung) / np.float32(gray.size))
        return fraction, box_to_image(found, cbox, scale, self.fallback_box)[1]

    def locate_box(self, img: torch.Tensor) -> tuple[tuple[int, int, int, int], bool]:
        """:meth:`locate` without its ``info``: ``(box, fallback)`` of a (C, H, W) slice (what the crops need)."""
        gray, cbox, scale = resample_slice(img, None, self.locate_size, self.ignore_padding)
        return box_to_image(self._locate_parts(gray)[3], cbox, scale, self.fallback_box)

    def locate_series(self, stack: NdarrayOrTensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The lung boxes of the (N, C, H, W) slices of one series, in order along the body axis.

        Each slice is located as by :meth:`locate`, then checked against its neighbours
        (:func:`~.functional_locate.select_series`): from the slice with the most lung outwards, a slice keeps the
        lung-like parts that continue the lung of the slice before it. This sets aside gas and dark areas that a
        slice alone cannot tell from lung, and keeps small lung parts at the apex and the bases that continue the
        lung. The padding set aside is the one common to all slices.

        Returns:
            ``(boxes, fallback)``: (N, 4) int64 boxes (x, y, w, h) and (N,) bool, on the CPU.

        Raises:
            ValueError: ``stack`` is not (N, C, H, W) or its slices are smaller than 2x2 pixels.
        """
        t = convert_to_tensor(stack, track_meta=False)
        if t.ndim != 4:
            raise ValueError(f"locate_series expects an (N, C, H, W) stack of slices, got shape {tuple(t.shape)}.")
        check_slice(t[0] if len(t) else t.new_zeros(1, 2, 2), "locate_series")
        gray_all = t.float().mean(dim=1, keepdim=True) if t.shape[1] > 1 else t.float()
        h, w = t.shape[-2:]
        cbox = content_box(gray_all) if self.ignore_padding else (0, 0, w, h)
        found = [self._locate_parts(resample_slice(s, cbox, self.locate_size)[0]) for s in t]
        labels = [None if p is None else p.labels for p, _, _, _ in found]
        keeps = select_series(labels, [like for _, _, like, _ in found], [k for _, k, _, _ in found])
        if len(t):
            gray, _, scale = resample_slice(t[0], cbox, self.locate_size)
        else:
            gray, scale = np.zeros((1, 1), np.float32), (1.0, 1.0)
        boxes, fallback = [], []
        for (parts, _, _, _), keep in zip(found, keeps):
            box = parts_lung_box(parts, keep, gray.shape, self.trim, self.min_box_fraction)
            box, fell = box_to_image(box, cbox, scale, self.fallback_box)
            boxes.append(box)
            fallback.append(fell)
        return torch.tensor(boxes, dtype=torch.int64).reshape(-1, 4), torch.tensor(fallback, dtype=torch.bool)

    def _locate_parts(
        self, gray: np.ndarray
    ) -> tuple[Parts | None, np.ndarray, np.ndarray, tuple[int, int, int, int] | None]:
        """:func:`~.functional_locate.locate_parts` with this Generator's settings."""
        return locate_parts(
            gray,
            self.threshold,
            self.method,
            self.open_walls,
            self.open_size,
            self.min_component_ratio,
            self.trim,
            self.min_box_fraction,
        )

    def lobe_boxes(
        self, lung_box: Sequence[int], height: int, width: int, offsets: np.ndarray | None = None
    ) -> torch.Tensor:
        """The five lobe boxes (5, 4) ``(x, y, w, h)`` in pixels from the lung box and the relative table.

        ``offsets`` (5, 4), optional, are added to the table's fractions (x, y shift; w, h relative scale).
        """
        return torch.tensor(lobe_boxes(lung_box, self.table, height, width, offsets), dtype=torch.int64)

    def crop_resize(self, img: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Crop each (x, y, w, h) box of a (C, H, W) image and resize it to ``spatial_size``: (N, C, S, S)
        (:func:`~.functional.crop_resize`)."""
        return crop_resize(img, boxes.tolist(), self.spatial_size, self.mode)

    def __call__(
        self, img: NdarrayOrTensor, offsets: np.ndarray | None = None, lung_offsets: np.ndarray | None = None
    ) -> LobeRegions:
        """Generate the five regions of a (C, H, W) slice; ``offsets`` (5, 4) jitter the lobe table (see
        :meth:`lobe_boxes`) and ``lung_offsets`` (4,) the lung box (x, y shift in box sizes; w, h relative scale)."""
        check_slice(img, "LungLobeGenerator")
        t = convert_to_tensor(img, track_meta=False)
        h, w = t.shape[-2:]
        with cpu_single_thread(self.single_thread and t.device.type == "cpu"):
            lung_box, fallback = self.locate_box(t)
            if lung_offsets is not None:
                lx, ly, lw, lh = lung_box
                o = lung_offsets
                lung_box = clip_box(lx + o[0] * lw, ly + o[1] * lh, lw * (1 + o[2]), lh * (1 + o[3]), w, h)
            boxes = lobe_boxes(lung_box, self.table, h, w, offsets)
            regions = crop_resize(t, boxes, self.spatial_size, self.mode)
        dev = regions.device
        return LobeRegions(
            regions=regions,
            boxes=torch.tensor(boxes, dtype=torch.int64, device=dev),
            labels=torch.arange(len(LOBE_NAMES), dtype=torch.int64, device=dev),
            fallback=bool(fallback),
            lung_box=torch.tensor(lung_box, dtype=torch.int64, device=dev),
        )


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
        check_slice(img, "RandLungLobeGenerator")
        if randomize:
            self.randomize()
        return self.generator(img, offsets=self._offsets, lung_offsets=self._lung_offsets)


class LungLocation(NamedTuple):
    """What :class:`LocateLung` returns.

    Attributes:
        found: ``False`` when no lung was found (the Generator would fall back to its ``fallback_box``).
        box_fraction: area of the lung box / image area (``nan`` when no lung was found).
        box: (4,) int64 lung box ``(x, y, w, h)`` in the image's pixels (the fallback box when not ``found``).
    """

    found: bool
    box_fraction: float
    box: torch.Tensor


class LocateLung(Transform):
    """The lobe Generator's lung locator on one (C, H, W) slice: whether it finds a lung and how much of the slice
    its box covers.

    The same locator (and the same box) as :class:`LungLobeGenerator`'s crops use, without the crops: a classifier's
    preprocessing can flag predictions made without a lung. Locate on the loaded slice, before any resizing or
    padding. Slices smaller than 2x2 pixels hold no lung (``found`` False).

    Args:
        kwargs: the locator's arguments of :class:`LungLobeGenerator` (``locate_size``, ``threshold``, ...).

    Raises:
        ValueError: the image is not (C, H, W).

    .. code-block:: python

        out = LocateLung()(LoadCTSlice()("slice.png"))
        out.found, out.box_fraction, out.box  # True, 0.41, tensor([ 61, 118, 391, 275])
    """

    backend = LungLobeGenerator.backend

    def __init__(self, **kwargs) -> None:
        self.generator = LungLobeGenerator(**kwargs)

    def __call__(self, img: NdarrayOrTensor) -> LungLocation:
        if img.ndim != 3:
            raise ValueError(f"LocateLung expects a (C, H, W) image, got shape {tuple(img.shape)}.")
        t = convert_to_tensor(img, track_meta=False)
        h, w = t.shape[-2:]
        if h < 2 or w < 2:  # too small to hold a lung (the Generator refuses it)
            return LungLocation(False, float("nan"), torch.tensor([0, 0, w, h], dtype=torch.int64))
        with cpu_single_thread(self.generator.single_thread and t.device.type == "cpu"):
            box, fallback = self.generator.locate_box(t)
        fraction = float("nan") if fallback else float(box[2] * box[3]) / float(h * w)
        return LungLocation(not fallback, fraction, torch.tensor(box, dtype=torch.int64))


class BatchLungLobeGenerator(RandomizableTransform):
    """:class:`RandLungLobeGenerator` for a batch (B, C, H, W) at once, on the batch's device.

    Locate (content box, quantise, lung components, boundary map, lung box), the lobe boxes and the crops run as
    batched tensor ops (:mod:`.functional_batched`), so a training loop can take the batch of full slices and make the
    lobe
    crops on its device instead of in the data-loader workers. For every image it finds **the same lung box, lobe
    boxes and fallback** as the per-image transform with the same arguments and the same jitter offsets; the crops
    are sampled with one ``grid_sample`` (bilinear, at the points ``interpolate`` uses on each crop), equal to the
    per-image crops within float rounding (about 1e-6 for images in [0, 1]).

    Jitter: as :class:`RandLungLobeGenerator`, with probability ``prob`` an image's lung box and each of its
    lobe boxes get offsets drawn uniformly from ``[-jitter, jitter]`` (position in box sizes, size as a relative
    scale); the draws are independent per image and come from ``self.R`` in the calling process (``B`` flags, then
    (B, 4) lung offsets, then (B, 5, 4) lobe offsets). Same distribution as the per-image transform, but not the
    same numbers for the same seed: the per-image transform draws image by image in each loader worker. Given the
    same offsets (``lung_offsets`` / ``offsets`` arguments), the boxes are identical.

    Args:
        spatial_size: output size of each region.
        prob: probability of jittering an image's boxes.
        jitter: maximal relative jitter (>= 0, < 1; 0: the deterministic boxes of :class:`LungLobeGenerator`).
        kwargs: the other arguments of :class:`LungLobeGenerator` (``mode`` must be ``"bilinear"``).

    .. code-block:: python

        gen = BatchLungLobeGenerator(spatial_size=64, jitter=0.1).set_random_state(0)
        out = gen(images)  # images (B, 1, H, W) in [0, 1] on any device
        out.regions.shape  # (B, 5, 1, 64, 64); out.boxes (B, 5, 4); out.fallback (B,) bool
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, spatial_size: int | Sequence[int] = 224, prob: float = 1.0, jitter: float = 0.0, **kwargs
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.jitter = check_jitter(jitter)
        self.generator = LungLobeGenerator(spatial_size=spatial_size, **kwargs)  # the settings, checked once
        if self.generator.mode != "bilinear":
            raise ValueError(f"BatchLungLobeGenerator resizes bilinearly only, got mode={self.generator.mode!r}.")
        self._lung_offsets: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the jitter of a batch of ``data`` (an int) images."""
        b = int(data)
        if self.jitter == 0.0:
            self._lung_offsets = self._offsets = None
            return
        do = self.R.rand(b) < self.prob
        self._lung_offsets = self.R.uniform(-self.jitter, self.jitter, size=(b, 4)) * do[:, None]
        self._offsets = self.R.uniform(-self.jitter, self.jitter, size=(b, len(LOBE_NAMES), 4)) * do[:, None, None]

    def locate(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4) lung boxes and (B,) fallback flags of a (B, C, H, W) batch (see :func:`~.functional_batched.batched_locate`)."""
        g = self.generator
        return batched_locate(
            img,
            threshold=g.threshold,
            locate_size=g.locate_size,
            fallback_box=g.fallback_box,
            min_box_fraction=g.min_box_fraction,
            trim=g.trim,
            open_size=g.open_size,
            open_walls=g.open_walls,
            method=g.method,
            min_component_ratio=g.min_component_ratio,
            ignore_padding=g.ignore_padding,
        )

    def __call__(
        self,
        img: NdarrayOrTensor,
        randomize: bool = True,
        lung_offsets: NdarrayOrTensor | None = None,
        offsets: NdarrayOrTensor | None = None,
    ) -> LobeRegions:
        """The five regions of every slice of a (B, C, H, W) batch: a :class:`LobeRegions` of batched
        tensors (regions (B, 5, C, S, S), boxes (B, 5, 4), labels (B, 5), fallback (B,) bool, lung_box (B, 4)).

        ``lung_offsets`` (B, 4) and ``offsets`` (B, 5, 4) replace the drawn jitter when given."""
        if img.ndim != 4 or img.shape[-2] < 2 or img.shape[-1] < 2:
            raise ValueError(f"BatchLungLobeGenerator expects a (B, C, H, W) batch of >= 2x2 images, got {tuple(img.shape)}.")
        t = convert_to_tensor(img, track_meta=False)
        b, _, h, w = t.shape
        if randomize and lung_offsets is None and offsets is None:
            self.randomize(b)
        lung_offsets = self._lung_offsets if lung_offsets is None else lung_offsets
        offsets = self._offsets if offsets is None else offsets
        gen = self.generator
        with cpu_single_thread(gen.single_thread and t.device.type == "cpu"):
            lung, fallback = self.locate(t)
            if lung_offsets is not None:
                o = torch.as_tensor(lung_offsets, dtype=torch.float64, device=t.device)
                lx, ly, lw, lh = lung.double().unbind(1)
                lung = clip_boxes(lx + o[:, 0] * lw, ly + o[:, 1] * lh, lw * (1 + o[:, 2]), lh * (1 + o[:, 3]), w, h)
            table = torch.as_tensor(gen.table, dtype=torch.float64)
            off = None if offsets is None else torch.as_tensor(offsets, dtype=torch.float64, device=t.device)
            boxes = batched_lobe_boxes(lung, table, h, w, off)
            regions = batched_crop_resize(t, boxes, gen.spatial_size)
        labels = torch.arange(len(LOBE_NAMES), dtype=torch.int64, device=t.device).expand(b, -1)
        return LobeRegions(regions=regions, boxes=boxes, labels=labels, fallback=fallback, lung_box=lung)
