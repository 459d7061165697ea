# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Loading of CT slices and whole CT scans, in MONAI's layout: array transforms in :mod:`.array`, their dictionary
versions in :mod:`.dictionary`, the functional core in :mod:`.functional` (and :mod:`.dicom_folder` for reading a
folder of DICOM files)."""

from __future__ import annotations

from .array import CT_SLICE_FORMATS, DEFAULT_LUNG_WINDOW, LoadCTSeries, LoadCTSlice, lung_window, sniff_ct_format
from .dictionary import (
    LoadCTSeriesD,
    LoadCTSeriesd,
    LoadCTSeriesDict,
    LoadCTSliceD,
    LoadCTSliced,
    LoadCTSliceDict,
)

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
    "sniff_ct_format",
]
