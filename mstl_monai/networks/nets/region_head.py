# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The region head of the self-supervised stage: which lung lobe does a crop show (Liu & Ji 2021, Eq. 5)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["RegionHead"]


class RegionHead(nn.Module):
    """
    The region-scale branch's classifier (Liu & Ji 2021, Sec. 3.3): a ``num_regions``-way classifier (the five
    lobes ``ru, rm, rl, lu, ll``) on the pooled features of the backbone shared with MoCo.

    Args:
        in_features: number of features of the backbone (``AttentiveResNet.feature_dim``).
        num_regions: number of regions (5 lung lobes).
        hidden: width of a hidden layer (``Linear -> ReLU -> Linear``); ``None`` for one linear layer.
        dropout: drop probability before the classifier.

    Example:

    .. code-block:: python

        head = RegionHead(backbone.feature_dim)
        logits = head(backbone.forward_head(backbone.forward_features(crops), pre_logits=True))  # (B, 5)
    """

    def __init__(self, in_features: int, num_regions: int = 5, hidden: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"in_features must be a positive integer, got {in_features}.")
        if num_regions < 2:
            raise ValueError(f"num_regions must be >= 2, got {num_regions}.")
        if hidden is not None and hidden < 1:
            raise ValueError(f"hidden must be a positive integer or None, got {hidden}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout is a drop probability in [0, 1), got {dropout}.")
        self.in_features = in_features
        self.num_regions = num_regions
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        if hidden is None:
            layers.append(nn.Linear(in_features, num_regions))
        else:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_regions)]
        self.classifier = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: pooled features ``(B, in_features)``, or feature maps ``(B, in_features, *spatial)`` (average-pooled).

        Returns:
            region logits ``(B, num_regions)``.
        """
        if x.ndim > 2:
            x = x.flatten(2).mean(dim=2)
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"RegionHead expects features (B, {self.in_features}), got shape {tuple(x.shape)}.")
        return self.classifier(x)
