# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The region (lung lobe) classification loss of Liu & Ji (2021) Eq. 5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["RegionLoss"]


class RegionLoss(_Loss):
    """
    Region-scale loss of Liu & Ji (2021), Eq. 5: :math:`L_{ra} = \\sum_{i=1}^{5} CE(x_i, y_i)` over the five lobe
    crops ``x_i`` of an image and their region labels ``y_i`` (``ru, rm, rl, lu, ll`` = 0..4), then reduced over the
    images of the batch (Eq. 6 sums it over the query image and every negative image: ``reduction="sum"``;
    ``"mean"``, the default, averages it over the images so that its scale does not grow with the batch).

    Args:
        region_reduction: ``"sum"`` (Eq. 5) or ``"mean"`` over the crops of one image.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` over the images.
    """

    def __init__(
        self,
        region_reduction: LossReduction | str = LossReduction.SUM,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        region_reduction = LossReduction(region_reduction).value
        if region_reduction == LossReduction.NONE.value:
            raise ValueError(f"region_reduction must be 'sum' or 'mean', got {region_reduction!r}.")
        self.region_reduction = region_reduction

    def forward(self, input: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input: region logits ``(B, R, C)`` for ``R`` crops of each of ``B`` images, or ``(B * R, C)`` with the
                crops image-major and ``R = C`` (one crop per region).
            target: region labels ``(B, R)`` (or ``(B * R,)``); when ``None`` crop ``r`` is region ``r``
                (the generator's lobe order), which needs ``R = C``.

        Returns:
            the loss (a scalar, or ``(B,)`` with ``reduction="none"``), computed in float32.
        """
        if input.ndim == 2:
            n, c = input.shape
            if n % c != 0:
                raise ValueError(
                    f"flat region logits (N, C) need N to be a multiple of C={c} (C crops per image), got N={n}."
                )
            input = input.reshape(n // c, c, c)
            if target is not None:
                if target.shape != (n,):
                    raise ValueError(
                        f"region target must have shape ({n},) for flat logits, got {tuple(target.shape)}."
                    )
                target = target.reshape(n // c, c)
        if input.ndim != 3:
            raise ValueError(f"region logits must have shape (B, R, C) or (B * R, C), got {tuple(input.shape)}.")
        b, r, c = input.shape
        if target is None:
            if r != c:
                raise ValueError(f"without a target, crop r is region r: R={r} crops must equal C={c} classes.")
            target = torch.arange(r, device=input.device).expand(b, r)
        if target.shape != (b, r):
            raise ValueError(f"region target must have shape ({b}, {r}), got {tuple(target.shape)}.")
        ce = F.cross_entropy(input.float().reshape(b * r, c), target.reshape(-1).long(), reduction="none").view(b, r)
        per_image = ce.sum(dim=1) if self.region_reduction == LossReduction.SUM.value else ce.mean(dim=1)
        if self.reduction == LossReduction.MEAN.value:
            return per_image.mean()
        if self.reduction == LossReduction.SUM.value:
            return per_image.sum()
        return per_image
