# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The values the bundle's settings take: backbones, non-local block counts, SSTL-M methods (no torch needed).

One definition shared by the network factory (:func:`mstl_monai.networks.build_network`), the networks
(:data:`mstl_monai.networks.nets.ATTN_STAGE_COUNTS`, :class:`mstl_monai.networks.nets.SSTLNetwork`) and the pipeline
runner, which checks a chain's settings before anything runs and imports neither torch nor MONAI.
"""

from __future__ import annotations

__all__ = ["RESNET_BACKBONES", "VIT_BACKBONES", "BACKBONES", "ATTN_COUNTS", "SSTL_METHODS"]

#: backbone names accepted by :func:`mstl_monai.networks.build_network`
RESNET_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
VIT_BACKBONES = ("vit_tiny", "vit_small", "vit_base")
BACKBONES = RESNET_BACKBONES + VIT_BACKBONES
#: non-local (ATTN) block counts an attentive ResNet takes (Liu & Ji 2021, Sec. 4.1: none, +1 ATTN, +5 ATTNs)
ATTN_COUNTS = (0, 1, 5)
#: the self-supervised methods of the paper's Table 3 comparison (SSTL-M's ``method``)
SSTL_METHODS = ("ours", "moco", "simclr")
