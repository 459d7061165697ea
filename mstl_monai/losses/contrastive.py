# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The contrastive (InfoNCE) loss of MoCo, Liu & Ji (2021) Eq. 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["InfoNCELoss"]


class InfoNCELoss(_Loss):
    """
    InfoNCE loss (Oord et al. 2018) as used by MoCo (He et al. 2020, Eq. 1) and Liu & Ji (2021, Eq. 2):

    .. math::

        L_{cons} = -\\log \\frac{\\exp(q \\cdot k_+ / \\tau)}
            {\\exp(q \\cdot k_+ / \\tau) + \\sum_{k_-} \\exp(q \\cdot k_- / \\tau)}

    i.e. a cross-entropy over the logits ``[q·k+, q·k-...] / τ`` returned by
    :class:`~mstl_monai.networks.nets.MoCo`, whose target is the positive's column (0 by default).
    Computed in float32 whatever the logits' dtype (bf16 autocast).

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` over the queries.
    """

    def __init__(self, reduction: LossReduction | str = LossReduction.MEAN) -> None:
        super().__init__(reduction=LossReduction(reduction).value)

    def forward(self, input: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """
        Args:
            input: logits ``(N, 1 + K)`` already divided by the temperature.
            target: index of the positive for each query ``(N,)``; zeros (MoCo's layout) when ``None``.
        """
        if input.ndim != 2 or input.shape[1] < 2:
            raise ValueError(f"logits must have shape (N, 1 + K) with K >= 1, got {tuple(input.shape)}.")
        if target is None:
            target = torch.zeros(input.shape[0], dtype=torch.long, device=input.device)
        if target.shape != input.shape[:1]:
            raise ValueError(f"target must have shape ({input.shape[0]},), got {tuple(target.shape)}.")
        loss = F.cross_entropy(input.float(), target.long(), reduction="none")
        if self.reduction == LossReduction.MEAN.value:
            return loss.mean()
        if self.reduction == LossReduction.SUM.value:
            return loss.sum()
        return loss
