# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""A collate function that batches slices of any kind: metadata that cannot be batched stays out of the batch."""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.data import MetaTensor, list_data_collate
from torch.utils.data._utils.collate import default_collate

__all__ = ["meta_safe_collate"]

logger = logging.getLogger(__name__)


def _batches(values: list) -> bool:
    """Whether ``default_collate`` (what MONAI uses for metadata) can batch these per-item values."""
    try:
        default_collate(values)
    except (TypeError, RuntimeError, ValueError):
        return False
    return True


def _unbatchable_meta(items: Sequence[Mapping], key: Hashable) -> set[str]:
    """The metadata keys shared by the items' MetaTensors under ``key`` whose values do not batch."""
    metas = [items[i][key].meta for i in range(len(items))]
    shared = set.intersection(*(set(m) for m in metas))  # MONAI itself drops the keys not shared by all
    return {k for k in shared if not _batches([m[k] for m in metas])}


def meta_safe_collate(batch: Sequence) -> Any:
    """MONAI's :func:`~monai.data.list_data_collate`, leaving out of the batch the metadata that does not batch.

    Slices of different kinds carry different per-file metadata: a DICOM stored flipped needs
    ``orientation_ops=["flip-cols"]`` where another needs ``[]``, a 2D NIfTI slice has ``slice_axis=None``, a 3D
    volume's ``original_shape`` has three numbers and a PNG's two. MONAI batches each metadata key shared by all
    items, which fails on such values (``each element in list of batch should be of equal size``). Here those
    keys are left out of the batch's metadata (the images, the other keys and the metadata that does batch are
    collated as MONAI does; each item keeps its full metadata where it was made), so any mix of readable slices
    forms a batch at any batch size.

    Args:
        batch: the dataset items of one batch (dicts, or lists of dicts as ``list_data_collate`` takes them).

    .. code-block:: python

        DataLoader(dataset, batch_size=16, collate_fn=meta_safe_collate)
    """
    items = [i for b in batch for i in b] if batch and isinstance(batch[0], list) else list(batch)
    if items and all(isinstance(i, Mapping) for i in items):
        for key in items[0]:
            if not all(isinstance(i.get(key), MetaTensor) for i in items):
                continue
            drop = _unbatchable_meta(items, key)
            if not drop:
                continue
            logger.debug(f"metadata of {key!r} left out of the batch (values differ in shape or type): {sorted(drop)}")
            items = [dict(i) for i in items]
            for i in items:
                t = i[key]
                i[key] = MetaTensor(
                    t.as_tensor(),
                    meta={k: v for k, v in t.meta.items() if k not in drop},
                    applied_operations=list(t.applied_operations),
                )
    return list_data_collate(items)
