# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.transforms: CT-slice loading, the boundary map, the lung quantiser and the lobe Generator."""

from __future__ import annotations

from .io import (
    CT_SLICE_FORMATS,
    DEFAULT_LUNG_WINDOW,
    LoadCTSeries,
    LoadCTSeriesD,
    LoadCTSeriesd,
    LoadCTSeriesDict,
    LoadCTSlice,
    LoadCTSliceD,
    LoadCTSliced,
    LoadCTSliceDict,
    lung_window,
    sniff_ct_format,
)
from .views import moco_v2_augmentations
from .lobe import *  # noqa: F401,F403
from .lobe import __all__ as _lobe_all

__all__ = [
    "CT_SLICE_FORMATS",
    "DEFAULT_LUNG_WINDOW",
    "LoadCTSeries",
    "LoadCTSeriesD",
    "LoadCTSeriesDict",
    "LoadCTSeriesd",
    "LoadCTSlice",
    "LoadCTSliceD",
    "LoadCTSliceDict",
    "LoadCTSliced",
    "lung_window",
    "moco_v2_augmentations",
    "sniff_ct_format",
]
__all__ += list(_lobe_all)

from .attention_aug import (  # noqa: E402
    AttentionAugment,
    attention_boxes,
    attention_dimming,
    attention_mask,
    attention_mixup,
    attention_patching,
    random_thresholds,
)

__all__ += [
    "AttentionAugment",
    "attention_boxes",
    "attention_dimming",
    "attention_mask",
    "attention_mixup",
    "attention_patching",
    "random_thresholds",
]
