# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.networks.blocks."""

from __future__ import annotations

from .nonlocal_block import NonLocalBlock

__all__ = ["NonLocalBlock"]
