# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The loss of the self-supervised stage SSTL-M (Liu & Ji 2021, Eq. 6): contrastive + lung-lobe region terms."""

from __future__ import annotations

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

from mstl_monai.losses.contrastive import InfoNCELoss
from mstl_monai.losses.region import RegionLoss
from mstl_monai.utils.enums import SSTLKeys

__all__ = ["SSTLLoss"]


class SSTLLoss(_Loss):
    """
    The SSTL-M loss of Liu & Ji (2021), Eq. 6:

    .. math::

        L = \\alpha_1 L_{cons} + \\alpha_2 \\Big(L_{ra} + \\sum_i L_{ra}^i\\Big)

    ``Lcons`` is the InfoNCE loss of the image-scale branch (Eq. 2; a cross-entropy over the contrastive logits,
    averaged over the queries). ``Lra`` is the region loss of Eq. 5 of one image, the sum of the cross-entropies of
    its five lobe crops; the bracket takes it over the query image and every image serving as its negative: in a
    batch every image is a negative of the others (the queue's negatives were batch images of earlier
    iterations, where their own region loss was taken), so it is the region loss over all images of the batch,
    reduced with ``image_reduction`` (``"mean"`` keeps its scale independent of the batch size; ``"sum"`` is the
    literal sum). With no region logits (the MoCo / SimCLR baselines) ``L = alpha1 * Lcons``.

    Args:
        alpha1: weight of the contrastive term (paper: 0.8).
        alpha2: weight of the region term (paper: 0.8).
        region_reduction: ``"sum"`` (Eq. 5) or ``"mean"`` over the five crops of an image.
        image_reduction: ``"mean"`` or ``"sum"`` over the images of the batch.
    """

    def __init__(
        self,
        alpha1: float = 0.8,
        alpha2: float = 0.8,
        region_reduction: LossReduction | str = LossReduction.SUM,
        image_reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction.MEAN.value)
        if alpha1 < 0 or alpha2 < 0:
            raise ValueError(f"alpha1 and alpha2 must be >= 0, got alpha1={alpha1}, alpha2={alpha2}.")
        image_reduction = LossReduction(image_reduction).value
        if image_reduction == LossReduction.NONE.value:
            raise ValueError(f"image_reduction must be 'mean' or 'sum', got {image_reduction!r}.")
        self.alpha1 = float(alpha1)
        self.alpha2 = float(alpha2)
        self.cons_loss = InfoNCELoss()
        self.region_loss = RegionLoss(region_reduction=region_reduction, reduction=image_reduction)

    def terms(
        self,
        cons_logits: torch.Tensor,
        cons_labels: torch.Tensor | None = None,
        region_logits: torch.Tensor | None = None,
        region_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every term of Eq. 6: ``loss`` (the total), ``loss_cons`` and, with region logits, ``loss_region``
        (the bracket, before ``alpha2``).

        Args:
            cons_logits: contrastive logits ``(N, M)`` divided by the temperature.
            cons_labels: index of each query's positive ``(N,)`` (zeros for MoCo's layout when ``None``).
            region_logits: lobe logits ``(B, 5, 5)`` (crop-major per image) or ``(B * 5, 5)``; ``None`` for baselines.
            region_labels: lobe labels ``(B, 5)`` or ``(B * 5,)``; ``None``: crop ``r`` is lobe ``r``.
        """
        loss_cons = self.cons_loss(cons_logits, cons_labels)
        out = {SSTLKeys.LOSS_CONS.value: loss_cons}
        total = self.alpha1 * loss_cons
        if region_logits is not None:
            if region_labels is not None and region_logits.ndim == 2:
                region_labels = region_labels.reshape(-1)
            loss_region = self.region_loss(region_logits, region_labels)
            out[SSTLKeys.LOSS_REGION.value] = loss_region
            total = total + self.alpha2 * loss_region
        out[SSTLKeys.LOSS.value] = total
        return out

    def forward(
        self,
        cons_logits: torch.Tensor,
        cons_labels: torch.Tensor | None = None,
        region_logits: torch.Tensor | None = None,
        region_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The total loss ``L`` of Eq. 6 (see :meth:`terms`)."""
        return self.terms(cons_logits, cons_labels, region_logits, region_labels)[SSTLKeys.LOSS.value]
