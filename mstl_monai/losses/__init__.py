# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.losses."""

from __future__ import annotations

from .contrastive import InfoNCELoss
from .region import RegionLoss
from .sstl import SSTLLoss

__all__ = ["InfoNCELoss", "RegionLoss", "SSTLLoss"]
