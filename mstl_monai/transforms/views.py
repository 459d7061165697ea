# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Augmented views for contrastive learning: MoCo v2's augmentations as MONAI dictionary transforms."""

from __future__ import annotations

import math
from collections.abc import Sequence

from monai.transforms import (
    RandAdjustContrastd,
    RandFlipd,
    RandGaussianSmoothd,
    RandScaleCropd,
    RandScaleIntensityd,
    RandScaleIntensityFixedMeand,
    Resized,
)

__all__ = ["moco_v2_augmentations"]


def moco_v2_augmentations(
    keys: str | Sequence[str],
    image_size: int | Sequence[int],
    min_scale: float = 0.2,
    flip_prob: float = 0.5,
    jitter_prob: float = 0.8,
    brightness: float = 0.4,
    contrast: float = 0.4,
    gamma: tuple[float, float] = (0.7, 1.5),
    blur_prob: float = 0.5,
    blur_sigma: tuple[float, float] | None = None,
) -> list:
    """MoCo v2's augmentations (Chen et al. 2020) adapted to 1-channel CT slices in ``[0, 1]``, with **separate
    random transform instances for each key**, so the two views of an image are independent draws.

    Per view: random resized crop (area fraction in ``[min_scale, 1]``, random aspect ratio, resized to
    ``image_size``), horizontal flip, brightness and contrast jitter (the grayscale counterpart of colour jitter),
    a gamma jitter, and Gaussian blur (sigma scaled from MoCo's ``[0.1, 2.0]`` at 224 px to ``image_size``).
    MoCo's random grayscale is the identity on gray images and is left out.

    Args:
        keys: the view keys (e.g. ``["view1", "view2"]``), each a copy of the slice made before these transforms.
        image_size: output size of the crop.
        min_scale: smallest crop area as a fraction of the image (MoCo: 0.2).
        flip_prob: probability of the horizontal flip.
        jitter_prob: probability of each intensity jitter (MoCo: 0.8).
        brightness: brightness jitter, intensities multiplied by a factor in ``[1 - b, 1 + b]``.
        contrast: contrast jitter around the mean, by a factor in ``[1 - c, 1 + c]``.
        gamma: range of the gamma jitter.
        blur_prob: probability of the Gaussian blur (MoCo: 0.5).
        blur_sigma: sigma range in pixels (default ``[0.1, 2.0] * image_size / 224``).

    Returns:
        a flat list of MONAI dictionary transforms (put it in a ``Compose``).
    """
    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("moco_v2_augmentations needs at least one view key.")
    size = [int(image_size), int(image_size)] if isinstance(image_size, (int, float)) else [int(s) for s in image_size]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or a pair, got {image_size!r}.")
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale is an area fraction in (0, 1], got {min_scale}.")
    for name, p in (("flip_prob", flip_prob), ("jitter_prob", jitter_prob), ("blur_prob", blur_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}.")
    if blur_sigma is None:
        s = min(size) / 224.0
        blur_sigma = (0.1 * s, 2.0 * s)
    side = math.sqrt(min_scale)
    out: list = []
    for key in keys:
        out += [
            RandScaleCropd(key, roi_scale=side, max_roi_scale=1.0, random_center=True, random_size=True),
            Resized(key, spatial_size=size, mode="bilinear"),
            RandFlipd(key, prob=flip_prob, spatial_axis=1),
            RandScaleIntensityd(key, factors=brightness, prob=jitter_prob),
            RandScaleIntensityFixedMeand(key, factors=contrast, prob=jitter_prob),
            RandAdjustContrastd(key, gamma=tuple(gamma), prob=jitter_prob),
            RandGaussianSmoothd(key, sigma_x=tuple(blur_sigma), sigma_y=tuple(blur_sigma), prob=blur_prob),
        ]
    return out
