# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.networks: non-local block, attentive ResNets, self-supervised wrappers, weight loading, networks by name."""

from __future__ import annotations

from . import blocks, nets
from .complexity import count_macs, count_parameters
from .checkpoint import checkpoint_settings, load_network, read_checkpoint_file
from .factory import BACKBONES, build_network, network_config_from_state_dict
from .sidecar import NORMALIZE
from .vit_weights import convert_vit_state_dict, detect_vit_format, load_vit_weights
from .weights import extract_state_dict, load_pretrained, load_stage_checkpoint, load_torchvision_weights, read_checkpoint

__all__ = [
    "BACKBONES",
    "NORMALIZE",
    "checkpoint_settings",
    "load_network",
    "read_checkpoint_file",
    "blocks",
    "build_network",
    "nets",
    "count_macs",
    "convert_vit_state_dict",
    "count_parameters",
    "detect_vit_format",
    "extract_state_dict",
    "load_stage_checkpoint",
    "load_pretrained",
    "load_torchvision_weights",
    "load_vit_weights",
    "network_config_from_state_dict",
    "read_checkpoint",
]
