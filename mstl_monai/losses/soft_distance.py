# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""MAG-SD's soft-distance regularisation (Li et al. 2021)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.utils import LossReduction
from torch.nn.modules.loss import _Loss

__all__ = ["SoftDistanceLoss", "soft_distance_target"]


def soft_distance_target(
    logits: torch.Tensor, target: torch.Tensor, confidence: float = 0.7, smoothing: float = 0.01
) -> torch.Tensor:
    """The soft-distance target of MAG-SD: the original image's softmax, detached; where it predicts the wrong class
    or its top probability is below ``confidence``, a smoothed one-hot of the true class instead (``smoothing`` on
    every other class, ``1 - (C - 1) * smoothing`` on the true one).

    Args:
        logits: ``(B, C)`` logits of the original images.
        target: ``(B,)`` class indices (or ``(B, 1)``).
        confidence: predictions below this top probability are replaced.
        smoothing: probability of each wrong class in the replacement.

    Returns:
        ``(B, C)`` float target distributions (no gradient).
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be (B, C), got shape {tuple(logits.shape)}.")
    n, c = logits.shape
    target = target.reshape(-1).long()
    if target.numel() != n:
        raise ValueError(f"target has {target.numel()} labels for {n} predictions.")
    if not 0.0 <= smoothing * (c - 1) < 1.0:
        raise ValueError(f"smoothing={smoothing} leaves no probability for the true class of {c} classes.")
    with torch.no_grad():
        prob = torch.softmax(logits.detach().float(), dim=1)
        top, pred = prob.max(dim=1)
        replace = (pred != target) | (top < confidence)
        smooth = torch.full_like(prob, float(smoothing))
        smooth.scatter_(1, target[:, None], 1.0 - (c - 1) * float(smoothing))
        return torch.where(replace[:, None], smooth, prob)


class SoftDistanceLoss(_Loss):
    """
    Soft distance of Li et al. (2021), "Multiscale attention guided network for COVID-19 diagnosis using chest X-ray
    images" (MAG-SD): for each augmented view ``v``, the L1 distance (mean over images and classes) between the
    view's softmax and the original image's softmax, detached, or the smoothed one-hot of the true class where the
    original prediction is wrong or below ``confidence`` (:func:`soft_distance_target`); summed over the views.
    The training loss of MAG-SD is cross-entropy on the original images plus this.

    Args:
        confidence: top probability below which the original prediction is replaced as the target.
        smoothing: probability of each wrong class in the replacement target.
        reduction: over the views: ``"sum"`` (MAG-SD), ``"mean"`` or ``"none"`` (the ``(V,)`` distances).

    Example:

    .. code-block:: python

        loss = SoftDistanceLoss()
        sd = loss(views_logits, logits, labels)   # views_logits (V, B, C), logits (B, C), labels (B,)
    """

    def __init__(
        self, confidence: float = 0.7, smoothing: float = 0.01, reduction: LossReduction | str = LossReduction.SUM
    ) -> None:
        super().__init__(reduction=LossReduction(reduction).value)
        if not 0.0 <= confidence <= 1.0:
            raise ValueError(f"confidence must be a probability in [0, 1], got {confidence}.")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {smoothing}.")
        self.confidence = float(confidence)
        self.smoothing = float(smoothing)

    def distances(
        self, input: torch.Tensor | Sequence[torch.Tensor], logits: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The ``(V,)`` soft distances of the views ``input`` ``(V, B, C)`` to the target of ``logits`` ``(B, C)``."""
        views = torch.stack(list(input)) if not isinstance(input, torch.Tensor) else input
        if views.ndim == 2:
            views = views[None]
        if views.ndim != 3 or views.shape[1:] != logits.shape:
            raise ValueError(
                f"views must be (V, B, C) with (B, C) = {tuple(logits.shape)} as the original logits, "
                f"got shape {tuple(views.shape)}."
            )
        goal = soft_distance_target(logits, target, self.confidence, self.smoothing)
        prob = torch.softmax(views.float(), dim=-1)
        return (prob - goal[None]).abs().mean(dim=(1, 2))

    def forward(
        self, input: torch.Tensor | Sequence[torch.Tensor], logits: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """
        Args:
            input: logits of the augmented views, ``(V, B, C)`` or a sequence of ``(B, C)``.
            logits: logits of the original images ``(B, C)`` (only used as a target: no gradient).
            target: ``(B,)`` class indices.
        """
        d = self.distances(input, logits, target)
        if self.reduction == LossReduction.SUM.value:
            return d.sum()
        if self.reduction == LossReduction.MEAN.value:
            return d.mean()
        return d
