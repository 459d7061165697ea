# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The boundary map and the lung quantiser as array transforms (the lobe Generator is in :mod:`.generator`)."""

from __future__ import annotations

import numpy as np
import torch
from monai.config import NdarrayOrTensor
from monai.transforms import Transform
from monai.utils import TransformBackends, convert_to_dst_type, convert_to_tensor

from .functional import AIR, BODY, LUNG, boundary_map, quantize_lung
from .generator import DEFAULT_LOBE_BOXES, LOBE_NAMES, LobeRegions, LungLobeGenerator, RandLungLobeGenerator

# the lobe Generator (locate -> crop -> resize) and its lobe table live in .generator; named here too
__all__ = [
    "AIR",
    "BODY",
    "LUNG",
    "LOBE_NAMES",
    "DEFAULT_LOBE_BOXES",
    "BoundaryMap",
    "QuantizeLung",
    "LungQuantize",
    "LobeRegions",
    "LungLobeGenerator",
    "RandLungLobeGenerator",
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
