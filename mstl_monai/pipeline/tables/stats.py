# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Paired differences between chains scored on the same test images, from their ``predictions.csv``: one chain
against another (paired bootstrap over the images), or the seeds of one cell against those of another."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from mstl_monai.metrics import paired_bootstrap_difference, seed_paired_difference
from mstl_monai.metrics.compare import aligned_probs, image_keys, match_rows
from mstl_monai.metrics.io import read_predictions_csv

from .cells import metric_value
from .load import cell_key

__all__ = [
    "SEED_MARK",
    "SEED_NOTE",
    "image_keys",
    "match_rows",
    "aligned_probs",
    "paired_difference",
    "seed_paired",
    "PairedDifferences",
]

SEED_MARK = "‡"
SEED_NOTE = (
    f"\n{SEED_MARK} Δ over seeds: the mean over all seeds of the one cell minus that of the other (the Seeds table"
    " lists them; acc / F1 / AUC columns show seed 0's chain), 95% CI from a bootstrap over the test images (the same"
    " for both) and over each cell's seeds."
)


def paired_difference(
    file_a: str | os.PathLike, file_b: str | os.PathLike, n_bootstrap: int = 1000, seed: int = 0
) -> dict | None:
    """Paired bootstrap of the differences a - b of two predictions files
    (:func:`~mstl_monai.metrics.paired_bootstrap_difference`) on a's test images, each paired with b's row of the same
    name and label; ``None`` when b did not score one of them."""
    na, ya, pa, _ = read_predictions_csv(file_a)
    nb, yb, pb, _ = read_predictions_csv(file_b)
    order = match_rows(image_keys(na, ya), image_keys(nb, yb))
    if order is None:
        return None
    return paired_bootstrap_difference(ya, pa[:, 1], pb[order, 1], n_bootstrap=n_bootstrap, seed=seed)


def seed_paired(
    files_a: Sequence[str | os.PathLike], files_b: Sequence[str | os.PathLike], n_bootstrap: int = 1000, seed: int = 0
) -> dict | None:
    """Seed-mean differences a - b (:func:`~mstl_monai.metrics.seed_paired_difference`) of two cells' seeds, one
    predictions file each, on the images of ``files_a[0]`` in its order; ``None`` when a file scored other images."""
    names, y, _, _ = read_predictions_csv(files_a[0])
    ref = image_keys(names, y)
    pa, pb = aligned_probs(files_a, ref), aligned_probs(files_b, ref)
    if pa is None or pb is None:
        return None
    return seed_paired_difference(y, pa, pb, n_bootstrap=n_bootstrap, seed=seed)


class PairedDifferences:
    """The Δ cells of the result tables: ``a - b`` of two chains (rows of
    :func:`~mstl_monai.pipeline.tables.load.load_results`) with its 95% CI, paired over the test images, computed
    once per pair.

    Where both chains' cells ran 2+ seeds (``groups``: :func:`~mstl_monai.pipeline.tables.load.seed_groups`) the Δ
    is over all seeds of each cell, marked :data:`SEED_MARK`; :meth:`seed_note` then puts :data:`SEED_NOTE` under the
    table being written.

    Args:
        groups: ``cell_key -> rows`` of each cell, one per seed.
        n_bootstrap: bootstrap resamples.
        seed: the bootstrap's random seed.
    """

    def __init__(self, groups: dict[tuple, list[dict]], n_bootstrap: int = 1000, seed: int = 0) -> None:
        self.groups = groups
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self._paired: dict[tuple, dict | None] = {}
        self._seed_paired: dict[tuple, dict | None] = {}
        self.seed_used = False  # a Δ of the table being written was taken over seeds (its note is due)

    def paired(self, ra: dict | None, rb: dict | None) -> dict | None:
        """Paired bootstrap of a - b on a's test images (``None`` without both predictions or on other images)."""
        if not ra or not rb or not ra.get("predictions") or not rb.get("predictions"):
            return None
        key = (str(ra["predictions"]), str(rb["predictions"]))
        if key not in self._paired:
            self._paired[key] = paired_difference(*key, n_bootstrap=self.n_bootstrap, seed=self.seed)
        return self._paired[key]

    def seed_group(self, r: dict | None) -> list[dict] | None:
        """The seeds of ``r``'s cell, ``None`` unless there are 2+."""
        group = self.groups.get(cell_key(r)) if r else None
        return group if group and len(group) > 1 else None

    def seed_paired(self, ra: dict | None, rb: dict | None) -> dict | None:
        """Seed-mean differences a - b over all seeds of each cell (``None`` unless both cells ran 2+ seeds on the
        same test images)."""
        ga, gb = self.seed_group(ra), self.seed_group(rb)
        if ga is None or gb is None:
            return None
        key = (tuple(str(r["predictions"]) for r in ga), tuple(str(r["predictions"]) for r in gb))
        if key not in self._seed_paired:
            self._seed_paired[key] = seed_paired(*key, n_bootstrap=self.n_bootstrap, seed=self.seed)
        return self._seed_paired[key]

    def delta(self, ra: dict | None, rb: dict | None, key: str) -> str:
        """``a - b`` in points with its paired 95% CI when both chains saved their predictions; over seeds (‡) when
        both cells ran 2+ seeds; ``"-"`` when one has no value."""
        a, b = metric_value(ra["metrics"] if ra else None, key), metric_value(rb["metrics"] if rb else None, key)
        if a is None or b is None:
            return "-"
        s = self.seed_paired(ra, rb)
        if s is not None:
            self.seed_used = True
            d = s[key]
            ci = f" [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]" if np.isfinite(d["ci_low"]) else ""
            return f"{100 * d['value']:+.1f}{ci} {SEED_MARK}"
        d = self.paired(ra, rb)
        if d is None or not np.isfinite(d[key]["ci_low"]):
            return f"{a - b:+.1f}"
        return f"{a - b:+.1f} [{100 * d[key]['ci_low']:+.1f}, {100 * d[key]['ci_high']:+.1f}]"

    def seed_note(self, md: list[str]) -> None:
        """Put the ‡ note under the table just written (``md``) when one of its Δ was taken over seeds."""
        if self.seed_used:
            md.append(SEED_NOTE)
            self.seed_used = False
