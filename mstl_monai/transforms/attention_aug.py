# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""MAG-SD's attention-guided augmentations (Li et al. 2021) as batched tensor operations.

Each augmentation is driven by one attention map per image, thresholded at a random fraction ``theta`` of that
map's maximum (one draw per image) after bilinear upsampling to the image size:

- :func:`attention_mixup`: the box around the attended region, padded by ``padding`` of the image size on every
  side, upsampled to the full image (bilinear) and blended ``0.6 * image + 0.4 * patch``;
- :func:`attention_dimming`: the attended region multiplied by ``dim_factor`` (MAG-SD's "dropping"/"dimming");
- :func:`attention_patching`: the padded box pasted at a random place of the same image.

The reference (JasonLeeGHub/MAG-SD ``batch_augment``) loops over the images in Python; these work on the whole
batch at once, on the images' device, with no host synchronisation. Random draws come from ``generator`` (a
``torch.Generator`` on the images' device) or torch's default one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "AttentionAugment",
    "attention_boxes",
    "attention_dimming",
    "attention_mask",
    "attention_mixup",
    "attention_patching",
    "random_thresholds",
]


def _check(images: torch.Tensor, maps: torch.Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}.")
    if maps.ndim != 4 or maps.shape[1] != 1 or maps.shape[0] != images.shape[0]:
        raise ValueError(
            f"maps must be one map per image (B, 1, h, w) with B={images.shape[0]}, got shape {tuple(maps.shape)}."
        )


def random_thresholds(
    n: int,
    theta: float | Sequence[float],
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``n`` thresholds (fractions of each map's maximum): a constant ``theta``, or uniform in ``theta=(lo, hi)``."""
    if isinstance(theta, (int, float)):
        return torch.full((n,), float(theta), device=device)
    lo, hi = (float(t) for t in theta)
    if not 0.0 <= lo <= hi <= 1.0:
        raise ValueError(f"theta must be a fraction or a range (lo, hi) with 0 <= lo <= hi <= 1, got {theta!r}.")
    return lo + (hi - lo) * torch.rand(n, device=device, generator=generator)


def attention_mask(images: torch.Tensor, maps: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Where each upsampled map reaches its threshold: ``up(A) >= t * max(A)``, a bool ``(B, H, W)``.

    Args:
        images: ``(B, C, H, W)`` (only its size is used).
        maps: ``(B, 1, h, w)`` attention maps.
        thresholds: ``(B,)`` fractions of each map's maximum.
    """
    _check(images, maps)
    up = F.interpolate(maps.float(), size=images.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    peak = maps.float().flatten(1).amax(dim=1)
    return up >= (thresholds.to(up) * peak)[:, None, None]


def _first_last(any_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """First and last True index along the last axis of a bool ``(B, N)`` (0 and N-1 for an all-False row)."""
    n = any_.shape[-1]
    hit = any_.to(torch.uint8)
    first = hit.argmax(dim=-1)
    last = n - 1 - hit.flip(-1).argmax(dim=-1)
    empty = ~any_.any(dim=-1)
    return torch.where(empty, torch.zeros_like(first), first), torch.where(empty, torch.full_like(last, n - 1), last)


def attention_boxes(mask: torch.Tensor, padding: float = 0.1) -> torch.Tensor:
    """The box around each mask's True pixels, padded by ``padding`` of the image size per side, clipped to the
    image: ``(B, 4)`` long tensor ``[top, bottom, left, right)`` (bottom/right exclusive). An empty mask gives the
    whole image."""
    if mask.ndim != 3:
        raise ValueError(f"mask must be (B, H, W), got shape {tuple(mask.shape)}.")
    if not 0.0 <= padding < 1.0:
        raise ValueError(f"padding must be a fraction of the image size in [0, 1), got {padding}.")
    h, w = mask.shape[1:]
    top, bottom = _first_last(mask.any(dim=2))
    left, right = _first_last(mask.any(dim=1))
    ph, pw = int(padding * h), int(padding * w)
    return torch.stack(
        [
            (top - ph).clamp(min=0),
            (bottom + 1 + ph).clamp(max=h),
            (left - pw).clamp(min=0),
            (right + 1 + pw).clamp(max=w),
        ],
        dim=1,
    )


def _resize_boxes(images: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each image's box resized to the full image, bilinear as ``F.interpolate(crop, size, align_corners=False)``."""
    b, _, h, w = images.shape
    boxes = boxes.to(images.device)

    def coords(start: torch.Tensor, stop: torch.Tensor, n: int) -> torch.Tensor:
        # source pixel of output pixel i: start + (i + 0.5) * len / n - 0.5, clamped to the box (as interpolate)
        size = (stop - start).to(images.dtype)[:, None]
        i = torch.arange(n, device=images.device, dtype=images.dtype)[None]
        src = start.to(images.dtype)[:, None] + (i + 0.5) * size / n - 0.5
        src = torch.minimum(torch.maximum(src, start.to(images.dtype)[:, None]), (stop - 1).to(images.dtype)[:, None])
        return (2.0 * src + 1.0) / n - 1.0  # grid_sample's normalised coordinate (align_corners=False)

    ys, xs = coords(boxes[:, 0], boxes[:, 1], h), coords(boxes[:, 2], boxes[:, 3], w)
    grid = torch.stack([xs[:, None, :].expand(b, h, w), ys[:, :, None].expand(b, h, w)], dim=-1)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def attention_mixup(
    images: torch.Tensor,
    maps: torch.Tensor,
    theta: float | Sequence[float] = (0.4, 0.6),
    padding: float = 0.1,
    weight: float = 0.6,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Attention mixup: ``weight * image + (1 - weight) * up(box)``, the box around ``up(A) >= theta * max(A)``
    padded by ``padding``. ``images`` ``(B, C, H, W)``, ``maps`` ``(B, 1, h, w)``; returns ``(B, C, H, W)``."""
    _check(images, maps)
    t = random_thresholds(images.shape[0], theta, images.device, generator)
    boxes = attention_boxes(attention_mask(images, maps, t), padding)
    return weight * images + (1.0 - weight) * _resize_boxes(images, boxes)


def attention_dimming(
    images: torch.Tensor,
    maps: torch.Tensor,
    theta: float | Sequence[float] = (0.2, 0.5),
    dim_factor: float = 0.001,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Attention dimming (dropping): pixels where ``up(A) >= theta * max(A)`` multiplied by ``dim_factor`` (0: dropped;
    the reference keeps 0.001 of them), the others kept."""
    _check(images, maps)
    t = random_thresholds(images.shape[0], theta, images.device, generator)
    mask = attention_mask(images, maps, t)[:, None]
    return torch.where(mask, images * dim_factor, images)


def attention_patching(
    images: torch.Tensor,
    maps: torch.Tensor,
    theta: float | Sequence[float] = (0.4, 0.6),
    padding: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Attention patching: the padded box around ``up(A) >= theta * max(A)`` copied to a random place of the same
    image (top-left uniform over the places where it fits), the rest of the image kept."""
    _check(images, maps)
    b, c, h, w = images.shape
    t = random_thresholds(b, theta, images.device, generator)
    boxes = attention_boxes(attention_mask(images, maps, t), padding)
    bh, bw = boxes[:, 1] - boxes[:, 0], boxes[:, 3] - boxes[:, 2]
    u = torch.rand(b, 2, device=images.device, generator=generator)
    top = (u[:, 0] * (h - bh + 1).to(u)).long().clamp(max=h - bh)  # uniform integer in [0, h - bh]
    left = (u[:, 1] * (w - bw + 1).to(u)).long().clamp(max=w - bw)
    y = torch.arange(h, device=images.device)[None, :]
    x = torch.arange(w, device=images.device)[None, :]
    dy, dx = y - top[:, None], x - left[:, None]  # position inside the pasted box
    in_y, in_x = (dy >= 0) & (dy < bh[:, None]), (dx >= 0) & (dx < bw[:, None])
    src_y = torch.where(in_y, boxes[:, 0:1] + dy, y)  # (B, H)
    src_x = torch.where(in_x, boxes[:, 2:3] + dx, x)  # (B, W)
    inside = in_y[:, :, None] & in_x[:, None, :]
    index = torch.where(
        inside, src_y[:, :, None] * w + src_x[:, None, :], (y * w)[:, :, None] + x[:, None, :]
    )  # (B, H, W)
    flat = images.reshape(b, c, h * w)
    return torch.gather(flat, 2, index.reshape(b, 1, h * w).expand(b, c, h * w)).reshape(b, c, h, w)


class AttentionAugment:
    """MAG-SD's three attention-guided views of a batch: mixup (map 0), dimming (map 1), patching (map 2).

    Called as ``augment(images, maps)`` with ``images`` ``(B, C, H, W)`` and ``maps`` ``(B, 3, h, w)``; returns
    the three augmented batches, in that order (e.g. the ``augment`` of
    :class:`~mstl_monai.networks.nets.MultiscaleAttentionNet`).

    Args:
        mixup_theta: threshold range of the mixup box (fractions of the map maximum).
        dim_theta: threshold range of the dimmed region.
        patch_theta: threshold range of the patched box.
        padding: padding of the boxes, fraction of the image size per side.
        mixup_weight: weight of the image in the mixup (the box gets ``1 - mixup_weight``).
        dim_factor: what the dimmed region is multiplied by.
        generator: optional ``torch.Generator`` (on the images' device) for the random draws.
    """

    names = ("mixup", "dim", "patch")

    def __init__(
        self,
        mixup_theta: Sequence[float] = (0.4, 0.6),
        dim_theta: Sequence[float] = (0.2, 0.5),
        patch_theta: Sequence[float] = (0.4, 0.6),
        padding: float = 0.1,
        mixup_weight: float = 0.6,
        dim_factor: float = 0.001,
        generator: torch.Generator | None = None,
    ) -> None:
        for name, th in (("mixup_theta", mixup_theta), ("dim_theta", dim_theta), ("patch_theta", patch_theta)):
            random_thresholds(1, th)  # checks the range
        if not 0.0 <= mixup_weight <= 1.0:
            raise ValueError(f"mixup_weight must be in [0, 1], got {mixup_weight}.")
        self.mixup_theta, self.dim_theta, self.patch_theta = tuple(mixup_theta), tuple(dim_theta), tuple(patch_theta)
        self.padding = float(padding)
        self.mixup_weight = float(mixup_weight)
        self.dim_factor = float(dim_factor)
        self.generator = generator

    def __call__(self, images: torch.Tensor, maps: torch.Tensor) -> list[torch.Tensor]:
        if maps.ndim != 4 or maps.shape[1] < 3:
            raise ValueError(f"maps must hold 3 attention maps per image (B, 3, h, w), got shape {tuple(maps.shape)}.")
        g = self.generator
        return [
            attention_mixup(images, maps[:, 0:1], self.mixup_theta, self.padding, self.mixup_weight, generator=g),
            attention_dimming(images, maps[:, 1:2], self.dim_theta, self.dim_factor, generator=g),
            attention_patching(images, maps[:, 2:3], self.patch_theta, self.padding, generator=g),
        ]
