# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The boundary map, the lung quantiser and the lung-lobe Generator."""

from __future__ import annotations

from .array import (
    AIR,
    BODY,
    DEFAULT_LOBE_BOXES,
    LOBE_NAMES,
    LUNG,
    BoundaryMap,
    LobeRegions,
    LungLobeGenerator,
    LungQuantize,
    QuantizeLung,
    RandLungLobeGenerator,
)
from .dictionary import (
    BoundaryMapD,
    BoundaryMapd,
    BoundaryMapDict,
    LungLobeGeneratorD,
    LungLobeGeneratord,
    LungLobeGeneratorDict,
    LungQuantized,
    QuantizeLungD,
    QuantizeLungd,
    QuantizeLungDict,
    RandLungLobeGeneratorD,
    RandLungLobeGeneratord,
    RandLungLobeGeneratorDict,
)
from .functional import (
    boundary_map,
    content_box,
    filter_lung_components,
    lung_box_from_boundary,
    otsu_threshold,
    quantize_lung,
    sliding_window_boundary_map,
)

__all__ = [
    "AIR",
    "BODY",
    "boundary_map",
    "BoundaryMap",
    "BoundaryMapD",
    "BoundaryMapd",
    "BoundaryMapDict",
    "content_box",
    "DEFAULT_LOBE_BOXES",
    "filter_lung_components",
    "LOBE_NAMES",
    "LobeRegions",
    "LUNG",
    "lung_box_from_boundary",
    "LungLobeGenerator",
    "LungLobeGeneratorD",
    "LungLobeGeneratord",
    "LungLobeGeneratorDict",
    "LungQuantize",
    "LungQuantized",
    "otsu_threshold",
    "quantize_lung",
    "QuantizeLung",
    "QuantizeLungD",
    "QuantizeLungd",
    "QuantizeLungDict",
    "RandLungLobeGenerator",
    "RandLungLobeGeneratorD",
    "RandLungLobeGeneratord",
    "RandLungLobeGeneratorDict",
    "sliding_window_boundary_map",
]
