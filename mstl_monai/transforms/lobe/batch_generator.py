# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The lobe Generator for a whole batch on the training device (locate -> lobe boxes -> crop and resize, batched)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection, NdarrayOrTensor
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends, convert_to_tensor

from .batched import batched_crop_resize, batched_lobe_boxes, batched_locate, clip_boxes
from .dictionary import _output_keys, _write_regions
from .functional import cpu_single_thread
from .generator import LOBE_NAMES, LobeRegions, LungLobeGenerator, check_jitter

__all__ = ["BatchLungLobeGenerator", "BatchLungLobeGeneratord", "BatchLungLobeGeneratorD", "BatchLungLobeGeneratorDict"]


class BatchLungLobeGenerator(RandomizableTransform):
    """:class:`~.generator.RandLungLobeGenerator` for a batch (B, C, H, W) at once, on the batch's device.

    Locate (content box, quantise, lung components, boundary map, lung box), the lobe boxes and the crops run as
    batched tensor ops (:mod:`.batched`), so a training loop can take the batch of full slices and make the lobe
    crops on its device instead of in the data-loader workers. For every image it finds **the same lung box, lobe
    boxes and fallback** as the per-image transform with the same arguments and the same jitter offsets; the crops
    are sampled with one ``grid_sample`` (bilinear, at the points ``interpolate`` uses on each crop), equal to the
    per-image crops within float rounding (about 1e-6 for images in [0, 1]).

    Jitter: as :class:`~.generator.RandLungLobeGenerator`, with probability ``prob`` an image's lung box and each of its
    lobe boxes get offsets drawn uniformly from ``[-jitter, jitter]`` (position in box sizes, size as a relative
    scale); the draws are independent per image and come from ``self.R`` in the calling process (``B`` flags, then
    (B, 4) lung offsets, then (B, 5, 4) lobe offsets). Same distribution as the per-image transform, but not the
    same numbers for the same seed: the per-image transform draws image by image in each loader worker. Given the
    same offsets (``lung_offsets`` / ``offsets`` arguments), the boxes are identical.

    Args:
        spatial_size: output size of each region.
        prob: probability of jittering an image's boxes.
        jitter: maximal relative jitter (>= 0, < 1; 0: the deterministic boxes of :class:`~.generator.LungLobeGenerator`).
        kwargs: the other arguments of :class:`~.generator.LungLobeGenerator` (``mode`` must be ``"bilinear"``).

    .. code-block:: python

        gen = BatchLungLobeGenerator(spatial_size=64, jitter=0.1).set_random_state(0)
        out = gen(images)  # images (B, 1, H, W) in [0, 1] on any device
        out.regions.shape  # (B, 5, 1, 64, 64); out.boxes (B, 5, 4); out.fallback (B,) bool
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self, spatial_size: int | Sequence[int] = 224, prob: float = 1.0, jitter: float = 0.0, **kwargs
    ) -> None:
        RandomizableTransform.__init__(self, prob)
        self.jitter = check_jitter(jitter)
        self.generator = LungLobeGenerator(spatial_size=spatial_size, **kwargs)  # the settings, checked once
        if self.generator.mode != "bilinear":
            raise ValueError(f"BatchLungLobeGenerator resizes bilinearly only, got mode={self.generator.mode!r}.")
        self._lung_offsets: np.ndarray | None = None
        self._offsets: np.ndarray | None = None

    def randomize(self, data: Any = None) -> None:
        """Draw the jitter of a batch of ``data`` (an int) images."""
        b = int(data)
        if self.jitter == 0.0:
            self._lung_offsets = self._offsets = None
            return
        do = self.R.rand(b) < self.prob
        self._lung_offsets = self.R.uniform(-self.jitter, self.jitter, size=(b, 4)) * do[:, None]
        self._offsets = self.R.uniform(-self.jitter, self.jitter, size=(b, len(LOBE_NAMES), 4)) * do[:, None, None]

    def locate(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4) lung boxes and (B,) fallback flags of a (B, C, H, W) batch (see :func:`.batched.batched_locate`)."""
        g = self.generator
        return batched_locate(
            img,
            threshold=g.threshold,
            locate_size=g.locate_size,
            fallback_box=g.fallback_box,
            min_box_fraction=g.min_box_fraction,
            trim=g.trim,
            open_size=g.open_size,
            open_walls=g.open_walls,
            method=g.method,
            min_component_ratio=g.min_component_ratio,
            ignore_padding=g.ignore_padding,
        )

    def __call__(
        self,
        img: NdarrayOrTensor,
        randomize: bool = True,
        lung_offsets: NdarrayOrTensor | None = None,
        offsets: NdarrayOrTensor | None = None,
    ) -> LobeRegions:
        """The five regions of every slice of a (B, C, H, W) batch: a :class:`~.generator.LobeRegions` of batched
        tensors (regions (B, 5, C, S, S), boxes (B, 5, 4), labels (B, 5), fallback (B,) bool, lung_box (B, 4)).

        ``lung_offsets`` (B, 4) and ``offsets`` (B, 5, 4) replace the drawn jitter when given."""
        if img.ndim != 4 or img.shape[-2] < 2 or img.shape[-1] < 2:
            raise ValueError(f"BatchLungLobeGenerator expects a (B, C, H, W) batch of >= 2x2 images, got {tuple(img.shape)}.")
        t = convert_to_tensor(img, track_meta=False)
        b, _, h, w = t.shape
        if randomize and lung_offsets is None and offsets is None:
            self.randomize(b)
        lung_offsets = self._lung_offsets if lung_offsets is None else lung_offsets
        offsets = self._offsets if offsets is None else offsets
        gen = self.generator
        with cpu_single_thread(gen.single_thread and t.device.type == "cpu"):
            lung, fallback = self.locate(t)
            if lung_offsets is not None:
                o = torch.as_tensor(lung_offsets, dtype=torch.float64, device=t.device)
                lx, ly, lw, lh = lung.double().unbind(1)
                lung = clip_boxes(lx + o[:, 0] * lw, ly + o[:, 1] * lh, lw * (1 + o[:, 2]), lh * (1 + o[:, 3]), w, h)
            table = torch.as_tensor(gen.table, dtype=torch.float64)
            off = None if offsets is None else torch.as_tensor(offsets, dtype=torch.float64, device=t.device)
            boxes = batched_lobe_boxes(lung, table, h, w, off)
            regions = batched_crop_resize(t, boxes, gen.spatial_size)
        labels = torch.arange(len(LOBE_NAMES), dtype=torch.int64, device=t.device).expand(b, -1)
        return LobeRegions(regions=regions, boxes=boxes, labels=labels, fallback=fallback, lung_box=lung)


class BatchLungLobeGeneratord(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :class:`BatchLungLobeGenerator`, for a collated batch (e.g. in a trainer, on its device).

    Writes the keys of :class:`~.dictionary.RandLungLobeGeneratord` with a batch dimension: ``d[output_key]``
    (B, 5, C, S, S), ``_boxes`` (B, 5, 4), ``_labels`` (B, 5), ``_fallback`` (B,) and ``_lung_box`` (B, 4). One jitter
    draw per call (``prob`` is applied per image). Existing output keys raise ``KeyError``.

    Args:
        keys: keys of (B, C, H, W) batches of slices in [0, 1].
        output_key: output key(s), one per key.
        spatial_size: output size of each region.
        prob: probability of jittering an image's boxes.
        jitter: maximal relative jitter of box position and size.
        allow_missing_keys: do not raise if a key is missing.
        kwargs: the other arguments of :class:`~.generator.LungLobeGenerator`.
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


BatchLungLobeGeneratorD = BatchLungLobeGeneratorDict = BatchLungLobeGeneratord
