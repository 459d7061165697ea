# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Dictionary versions of the CT loaders: one slice, and a whole scan."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import DtypeLike, KeysCollection
from monai.transforms import MapTransform

from .array import LoadCTSeries, LoadCTSlice
from .functional import DEFAULT_LUNG_WINDOW

__all__ = ["LoadCTSliced", "LoadCTSliceD", "LoadCTSliceDict", "LoadCTSeriesd", "LoadCTSeriesD", "LoadCTSeriesDict"]


class LoadCTSliced(MapTransform):
    """Dictionary wrapper of :class:`LoadCTSlice`: replaces the path under each key by the loaded (1, H, W) slice.

    Args:
        keys: keys holding file paths.
        a_min: lower end of the lung window in HU (DICOM/NIfTI).
        a_max: upper end of the lung window in HU.
        slice_index: NIfTI axial slice index (``None``: middle).
        hu: NIfTI values are HU (``None``: guess).
        dtype: output dtype.
        allow_missing_keys: do not raise if a key is missing.

    .. code-block:: python

        d = LoadCTSliced(keys="image")({"image": "slice.png", "label": 1})  # d["image"]: MetaTensor (1, H, W)
    """

    backend = LoadCTSlice.backend

    def __init__(
        self,
        keys: KeysCollection,
        a_min: float = DEFAULT_LUNG_WINDOW[0],
        a_max: float = DEFAULT_LUNG_WINDOW[1],
        slice_index: int | None = None,
        hu: bool | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCTSlice(a_min=a_min, a_max=a_max, slice_index=slice_index, hu=hu, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])  # type: ignore[arg-type]
        return d


LoadCTSliceD = LoadCTSliceDict = LoadCTSliced


class LoadCTSeriesd(MapTransform):
    """Dictionary wrapper of :class:`LoadCTSeries`: replaces the path under each key by the (N, 1, H, W) stack.

    Args:
        keys: keys holding a DICOM series folder or a NIfTI file.
        a_min: lower end of the lung window in HU.
        a_max: upper end of the lung window in HU.
        series_uid: the series to read when a folder holds several.
        hu: NIfTI values are HU (``None``: guess).
        dtype: output dtype.
        allow_non_ct: read DICOM series whose Modality is not CT.
        allow_missing_keys: do not raise if a key is missing.

    .. code-block:: python

        d = LoadCTSeriesd(keys="image")({"image": "scan.nii.gz"})  # d["image"]: MetaTensor (N, 1, H, W)
    """

    backend = LoadCTSeries.backend

    def __init__(
        self,
        keys: KeysCollection,
        a_min: float = DEFAULT_LUNG_WINDOW[0],
        a_max: float = DEFAULT_LUNG_WINDOW[1],
        series_uid: str | None = None,
        hu: bool | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_non_ct: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCTSeries(a_min=a_min, a_max=a_max, series_uid=series_uid, hu=hu, dtype=dtype,
                                   allow_non_ct=allow_non_ct)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


LoadCTSeriesD = LoadCTSeriesDict = LoadCTSeriesd
