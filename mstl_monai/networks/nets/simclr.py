# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""SimCLR (Chen et al. 2020), the other self-supervised method of Liu & Ji's Table 3 comparison."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import ContrastiveLoss

from mstl_monai.networks.nets.moco import check_backbone, projection_head

__all__ = ["SimCLR", "simclr_logits"]


class SimCLR(nn.Module):
    """
    SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020):
    two augmented views go through the same backbone and MLP projection head, and the NT-Xent loss
    (:class:`monai.losses.ContrastiveLoss`, cosine similarity over the ``2N`` projections) pulls the two views
    of an image together against the other ``2N - 2`` projections of the batch. No queue and no momentum encoder:
    the negatives are the other images of this process's batch.

    Args:
        base_encoder: the backbone (an :class:`~mstl_monai.networks.nets.AttentiveResNet`); its classifier is removed
            (``reset_classifier(0)``) and it becomes ``backbone``.
        dim: dimension of the projected features.
        temperature: NT-Xent temperature.
        mlp: MLP projection head (``Linear -> ReLU -> Linear``), else one linear layer.

    Example:

    .. code-block:: python

        simclr = SimCLR(attentive_resnet50(n_attn=1))
        loss = simclr(view1, view2)
        loss.backward()
    """

    def __init__(self, base_encoder: nn.Module, dim: int = 128, temperature: float = 0.1, mlp: bool = True) -> None:
        super().__init__()
        check_backbone(base_encoder)
        if dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}.")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if hasattr(base_encoder, "reset_classifier"):
            base_encoder.reset_classifier(0)
        ref = next(base_encoder.parameters())
        self.backbone = base_encoder
        self.projector = projection_head(int(base_encoder.feature_dim), dim, mlp).to(device=ref.device, dtype=ref.dtype)
        self.temperature = temperature
        self.loss = ContrastiveLoss(temperature=temperature)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Projections ``(N, dim)`` of a batch of images."""
        return self.projector(self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x1: first view ``(N, C, *spatial)``.
            x2: second view of the same images, same shape.

        Returns:
            the NT-Xent loss (a scalar, float32).
        """
        if x1.shape != x2.shape:
            raise ValueError(f"the two views must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}.")
        if x1.shape[0] < 2:
            raise ValueError(f"NT-Xent needs at least 2 images per batch for negatives, got {x1.shape[0]}.")
        z = self.project(torch.cat([x1, x2], dim=0)).float()
        z1, z2 = z.chunk(2, dim=0)
        return self.loss(z1, z2)


def simclr_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent written as a cross-entropy: logits ``(2N, 2N)`` of the cosine similarities of the ``2N``
    projections divided by ``temperature`` (each one's similarity with itself masked out) and the index of each
    projection's other view. ``cross_entropy(logits, labels)`` equals ``monai.losses.ContrastiveLoss`` and
    ``argmax(logits) == labels`` is the instance-discrimination top-1 accuracy."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"projections must both have shape (N, dim), got {tuple(z1.shape)} and {tuple(z2.shape)}.")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return logits, labels
