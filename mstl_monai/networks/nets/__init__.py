# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.networks.nets."""

from __future__ import annotations

from .attentive_resnet import (
    ATTENTIVE_RESNETS,
    ATTN_STAGE_COUNTS,
    AttentiveResNet,
    attention_positions,
    attentive_resnet18,
    attentive_resnet34,
    attentive_resnet50,
    attentive_resnet101,
    attentive_resnet152,
)
from .moco import MoCo, ProjectedEncoder, projection_head
from .region_head import RegionHead
from .simclr import SimCLR, simclr_logits
from .sstl import SSTL_METHODS, SSTLNetwork
from .vit import VITS, VisionTransformer, resample_position_embeddings, vit_base, vit_small, vit_tiny

__all__ = [
    "ATTENTIVE_RESNETS",
    "ATTN_STAGE_COUNTS",
    "AttentiveResNet",
    "MoCo",
    "ProjectedEncoder",
    "RegionHead",
    "SSTL_METHODS",
    "SSTLNetwork",
    "SimCLR",
    "VITS",
    "VisionTransformer",
    "attention_positions",
    "attentive_resnet18",
    "attentive_resnet34",
    "attentive_resnet50",
    "attentive_resnet101",
    "attentive_resnet152",
    "projection_head",
    "resample_position_embeddings",
    "simclr_logits",
    "vit_base",
    "vit_small",
    "vit_tiny",
]
