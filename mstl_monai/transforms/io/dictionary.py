# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Dictionary version of the CT-slice loader."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import DtypeLike, KeysCollection
from monai.transforms import MapTransform

from .array import DEFAULT_LUNG_WINDOW, LoadCTSlice

__all__ = ["LoadCTSliced", "LoadCTSliceD", "LoadCTSliceDict"]


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
