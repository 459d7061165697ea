# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Dictionary versions of the lobe transforms of :mod:`.array`: the boundary map, the lung quantiser, the lung
locator and the lung-lobe Generator (per slice, with random jitter, and for a collated batch)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import ensure_tuple

from .array import (
    BatchLungLobeGenerator,
    BoundaryMap,
    LocateLung,
    LungLobeGenerator,
    QuantizeLung,
    RandLungLobeGenerator,
)
from .functional import LobeRegions

__all__ = [
    "BoundaryMapd",
    "BoundaryMapD",
    "BoundaryMapDict",
    "QuantizeLungd",
    "QuantizeLungD",
    "QuantizeLungDict",
    "LungQuantized",
    "LungLobeGeneratord",
    "LungLobeGeneratorD",
    "LungLobeGeneratorDict",
    "RandLungLobeGeneratord",
    "RandLungLobeGeneratorD",
    "RandLungLobeGeneratorDict",
    "LocateLungd",
    "LocateLungD",
    "LocateLungDict",
    "BatchLungLobeGeneratord",
    "BatchLungLobeGeneratorD",
    "BatchLungLobeGeneratorDict",
]


def _output_keys(keys: tuple, output_keys: KeysCollection | None, name: str) -> tuple:
    if output_keys is None:
        return keys
    out = ensure_tuple(output_keys)
    if len(out) != len(keys):
        raise ValueError(f"{name}: output_keys {out} must match keys {keys} one to one.")
    return out


class BoundaryMapd(MapTransform):
    """Dictionary wrapper of :class:`BoundaryMap`.

    Args:
        keys: keys of label images (C, H, W) or (B, C, H, W).
        output_keys: where to write the maps (one per key); ``None`` replaces the labels in place. An output key
            that already exists (and is not its own input key) raises ``KeyError``.
        dtype: output dtype (default bool).
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = BoundaryMap.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None = None,
        dtype: torch.dtype | np.dtype | type | None = torch.bool,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_keys, "BoundaryMapd")
        self.converter = BoundaryMap(dtype=dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            if out != key and out in d:
                raise KeyError(f"BoundaryMapd: output key {out!r} already exists in the data.")
            d[out] = self.converter(d[key])
        return d


class QuantizeLungd(MapTransform):
    """Dictionary wrapper of :class:`QuantizeLung` (air 0 / body 1 / lung 2 labels).

    Args:
        keys: keys of images (C, H, W).
        output_keys: where to write the labels (one per key); ``None`` replaces the images. An existing output
            key raises ``KeyError``.
        threshold: see :class:`QuantizeLung`.
        hu: the images hold Hounsfield units.
        allow_missing_keys: do not raise if a key is missing.
    """

    backend = QuantizeLung.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_keys: KeysCollection | None = None,
        threshold: float | None = None,
        hu: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_keys, "QuantizeLungd")
        self.quantizer = QuantizeLung(threshold=threshold, hu=hu)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            if out != key and out in d:
                raise KeyError(f"QuantizeLungd: output key {out!r} already exists in the data.")
            d[out] = self.quantizer(d[key])
        return d


def _write_regions(d: dict, out: Hashable, res: LobeRegions) -> None:
    names = [out, f"{out}_boxes", f"{out}_labels", f"{out}_fallback", f"{out}_lung_box"]
    existing = [n for n in names if n in d]
    if existing:
        raise KeyError(f"output keys {existing} already exist in the data; choose another output_key.")
    d[out] = res.regions
    d[f"{out}_boxes"] = res.boxes
    d[f"{out}_labels"] = res.labels
    d[f"{out}_fallback"] = res.fallback
    d[f"{out}_lung_box"] = res.lung_box


class LungLobeGeneratord(MapTransform):
    """Dictionary wrapper of :class:`LungLobeGenerator`.

    For each key it writes ``d[output_key]`` (5, C, S, S) float regions, ``d[f"{output_key}_boxes"]`` (5, 4)
    int64 boxes (x, y, w, h) in the input image's pixels, ``d[f"{output_key}_labels"]`` = ``[0, 1, 2, 3, 4]``,
    ``d[f"{output_key}_fallback"]`` (bool: no lung found) and ``d[f"{output_key}_lung_box"]`` (4,). With several
    keys, give one output key per key. The input image is kept. Existing output keys raise ``KeyError``.

    Args:
        keys: keys of (C, H, W) slices in [0, 1].
        output_key: output key(s), one per key.
        spatial_size: output size of each region.
        allow_missing_keys: do not raise if a key is missing.
        kwargs: the other arguments of :class:`LungLobeGenerator` (``lobe_boxes``, ``fallback_box``, ...).

    .. code-block:: python

        Compose([LoadCTSliced("img"), LungLobeGeneratord("img", output_key="lobes", spatial_size=224)])
    """

    backend = LungLobeGenerator.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_key: KeysCollection = "regions",
        spatial_size: int | Sequence[int] = 224,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_key, "LungLobeGeneratord")
        self.generator = LungLobeGenerator(spatial_size=spatial_size, **kwargs)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            _write_regions(d, out, self.generator(d[key]))
        return d


class RandLungLobeGeneratord(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`RandLungLobeGenerator` (box jitter drawn once per call, shared by all keys).

    Writes the same keys as :class:`LungLobeGeneratord`.

    Args:
        keys: keys of (C, H, W) slices in [0, 1].
        output_key: output key(s), one per key.
        spatial_size: output size of each region.
        prob: probability of jittering the boxes.
        jitter: maximal relative jitter of box position and size.
        allow_missing_keys: do not raise if a key is missing.
        kwargs: the other arguments of :class:`LungLobeGenerator`.
    """

    backend = RandLungLobeGenerator.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_key: KeysCollection = "regions",
        spatial_size: int | Sequence[int] = 224,
        prob: float = 1.0,
        jitter: float = 0.1,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        self.output_keys = _output_keys(self.keys, output_key, "RandLungLobeGeneratord")
        self.generator = RandLungLobeGenerator(spatial_size=spatial_size, prob=1.0, jitter=jitter, **kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.generator.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.generator.randomize()
        else:
            self.generator._offsets = self.generator._lung_offsets = None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        for key, out in self.key_iterator(d, self.output_keys):
            _write_regions(d, out, self.generator(d[key], randomize=False))
        return d


class LocateLungd(MapTransform):
    """Dictionary wrapper of :class:`LocateLung`: record whether the lobe Generator finds a lung in each slice, and
    how much of the slice its box covers.

    Writes ``d[f"{output_key}_found"]`` (bool; ``False`` when no lung was found and the Generator would fall back to
    ``fallback_box``, e.g. on a constant image; ``True`` is no proof of a CT slice: a chest X-ray or a photo can show
    a dark region inside a brighter one) and ``d[f"{output_key}_box_fraction"]`` (float: area of
    the located lung box / image area; ``nan`` when no lung was found). The image is kept unchanged, so the transform
    can sit in a classifier's preprocessing to flag predictions made without a lung. Locate on the loaded slice,
    before any resizing or padding. Existing output keys raise ``KeyError``.

    Args:
        keys: keys of (C, H, W) slices in [0, 1].
        output_key: prefix of the output keys, one per key.
        allow_missing_keys: do not raise if a key is missing.
        kwargs: the locator's arguments of :class:`LungLobeGenerator` (``locate_size``, ``threshold``, ...).

    .. code-block:: python

        d = Compose([LoadCTSliced("image"), LocateLungd("image")])({"image": "slice.png"})
        d["lung_found"], d["lung_box_fraction"]  # True, 0.41
    """

    backend = LocateLung.backend

    def __init__(
        self, keys: KeysCollection, output_key: KeysCollection = "lung", allow_missing_keys: bool = False, **kwargs
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.output_keys = _output_keys(self.keys, output_key, "LocateLungd")
        self.locator = LocateLung(**kwargs)

    def locate(self, img: Any) -> tuple[bool, float]:
        """``(found, box_fraction)`` of one (C, H, W) slice (``(False, nan)`` when no lung is found)."""
        if img.ndim != 3:
            raise ValueError(f"LocateLungd expects a (C, H, W) image, got shape {tuple(img.shape)}.")
        out = self.locator(img)
        return out.found, out.box_fraction

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, out in self.key_iterator(d, self.output_keys):
            names = (f"{out}_found", f"{out}_box_fraction")
            existing = [n for n in names if n in d]
            if existing:
                raise KeyError(f"LocateLungd: output keys {existing} already exist; give another output_key.")
            d[names[0]], d[names[1]] = self.locate(d[key])
        return d


class BatchLungLobeGeneratord(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`BatchLungLobeGenerator`, for a collated batch (e.g. in a trainer, on its device).

    Writes the keys of :class:`RandLungLobeGeneratord` with a batch dimension: ``d[output_key]``
    (B, 5, C, S, S), ``_boxes`` (B, 5, 4), ``_labels`` (B, 5), ``_fallback`` (B,) and ``_lung_box`` (B, 4). One jitter
    draw per call (``prob`` is applied per image). Existing output keys raise ``KeyError``.

    Args:
        keys: keys of (B, C, H, W) batches of slices in [0, 1].
        output_key: output key(s), one per key.
        spatial_size: output size of each region.
        prob: probability of jittering an image's boxes.
        jitter: maximal relative jitter of box position and size.
        allow_missing_keys: do not raise if a key is missing.
        kwargs: the other arguments of :class:`LungLobeGenerator`.
    """

    backend = BatchLungLobeGenerator.backend

    def __init__(
        self,
        keys: KeysCollection,
        output_key: KeysCollection = "regions",
        spatial_size: int | Sequence[int] = 224,
        prob: float = 1.0,
        jitter: float = 0.0,
        allow_missing_keys: bool = False,
        **kwargs,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, 1.0)
        self.output_keys = _output_keys(self.keys, output_key, "BatchLungLobeGeneratord")
        self.generator = BatchLungLobeGenerator(spatial_size=spatial_size, prob=prob, jitter=jitter, **kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        super().set_random_state(seed, state)
        self.generator.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        first = self.first_key(d)
        if first == ():
            return d
        self.generator.randomize(d[first].shape[0])
        for key, out in self.key_iterator(d, self.output_keys):
            _write_regions(d, out, self.generator(d[key], randomize=False))
        return d


BoundaryMapD = BoundaryMapDict = BoundaryMapd
QuantizeLungD = QuantizeLungDict = LungQuantized = QuantizeLungd
LungLobeGeneratorD = LungLobeGeneratorDict = LungLobeGeneratord
RandLungLobeGeneratorD = RandLungLobeGeneratorDict = RandLungLobeGeneratord
LocateLungD = LocateLungDict = LocateLungd
BatchLungLobeGeneratorD = BatchLungLobeGeneratorDict = BatchLungLobeGeneratord
