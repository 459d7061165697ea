# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Engines, handlers and helpers used by the bundle's stages."""

from __future__ import annotations

from .handlers import AtomicCheckpointSaver, EpochSeedHandler, ResumeFromLatest, latest_checkpoint
from .inferers import AutocastInferer, resolve_amp_dtype
from .utils import BACKBONES, build_network, check_datalist, load_pretrained

__all__ = [
    "BACKBONES",
    "build_network",
    "check_datalist",
    "load_pretrained",
    "AtomicCheckpointSaver",
    "AutocastInferer",
    "EpochSeedHandler",
    "ResumeFromLatest",
    "latest_checkpoint",
    "resolve_amp_dtype",
]
