# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Enums of the plugin (as ``monai.utils.enums`` holds ``CommonKeys``, ``GanKeys``): the SSTL-M batch and output keys."""

from __future__ import annotations

from monai.utils import StrEnum

__all__ = ["SSTLKeys"]


class SSTLKeys(StrEnum):
    """Batch and ``engine.state.output`` keys of the SSTL-M stage."""

    VIEW1 = "view1"
    VIEW2 = "view2"
    REGIONS = "regions"
    REGION_LABELS = "regions_labels"
    REGION_FALLBACK = "regions_fallback"
    LOSS = "loss"
    LOSS_CONS = "loss_cons"
    LOSS_REGION = "loss_region"
    INSTANCE_ACC = "instance_acc"
    REGION_ACC = "region_acc"
    FALLBACK_RATE = "region_fallback_rate"
    CONS_LOGITS = "cons_logits"
    CONS_LABELS = "cons_labels"
    REGION_LOGITS = "region_logits"
