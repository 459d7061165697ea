# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.networks: non-local block, attentive ResNets, self-supervised wrappers, weight loading."""

from __future__ import annotations

from . import blocks, nets
from .complexity import count_macs, count_parameters
from .weights import extract_state_dict, load_stage_checkpoint, load_torchvision_weights, read_checkpoint

__all__ = [
    "blocks",
    "nets",
    "count_macs",
    "count_parameters",
    "extract_state_dict",
    "load_stage_checkpoint",
    "load_torchvision_weights",
    "read_checkpoint",
]
