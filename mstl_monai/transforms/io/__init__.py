# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Loading of CT slices."""

from __future__ import annotations

from .array import CT_SLICE_FORMATS, DEFAULT_LUNG_WINDOW, LoadCTSlice, lung_window, sniff_ct_format
from .dictionary import LoadCTSliceD, LoadCTSliced, LoadCTSliceDict

__all__ = [
    "CT_SLICE_FORMATS",
    "DEFAULT_LUNG_WINDOW",
    "LoadCTSlice",
    "LoadCTSliceD",
    "LoadCTSliceDict",
    "LoadCTSliced",
    "lung_window",
    "sniff_ct_format",
]

from .series import LoadCTSeries, LoadCTSeriesD, LoadCTSeriesd, LoadCTSeriesDict  # noqa: E402

__all__ += ["LoadCTSeries", "LoadCTSeriesD", "LoadCTSeriesDict", "LoadCTSeriesd"]
