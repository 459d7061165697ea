# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Seeded, stratified label-fraction subsets of a training datalist (the label-fraction study)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["label_fraction_subset"]


def label_fraction_subset(
    datalist: Sequence[dict], fraction: float = 1.0, seed: int = 0, label_key: str = "label"
) -> list[dict]:
    """Keep ``fraction`` of each class of ``datalist``: a seeded, stratified subset, in the datalist's order.

    The subsets of one seed are nested: the images kept at 10 % are among those kept at 25 %, and so on (each
    class is permuted once per seed and its first ``round(n * fraction)`` images are kept, at least one), so a
    label-fraction curve measures more labels, not other images.

    Args:
        datalist: items with a ``label_key``.
        fraction: share of each class to keep, in ``(0, 1]``; 1 returns the whole datalist.
        seed: the subset depends only on the seed, the fraction and the datalist's order.

    Raises:
        ValueError: ``fraction`` outside ``(0, 1]``.
        KeyError: an item without ``label_key`` (named).
    """
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"label fraction must lie in (0, 1], got {fraction!r}.")
    by_class: dict[Any, list[int]] = {}
    for i, item in enumerate(datalist):
        if label_key not in item:
            raise KeyError(f"datalist item {i} has no {label_key!r} key: {item}")
        by_class.setdefault(item[label_key], []).append(i)
    if fraction == 1.0:
        return [dict(item) for item in datalist]
    rng = np.random.default_rng(seed)
    keep: set[int] = set()
    for _, idx in sorted(by_class.items(), key=lambda kv: str(kv[0])):
        n = max(1, int(round(len(idx) * fraction)))
        keep.update(rng.permutation(idx)[:n].tolist())
    return [dict(item) for i, item in enumerate(datalist) if i in keep]
