# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Percentile-bootstrap confidence intervals of the binary classification metrics: over images, paired differences
between two models on the same images, and over images and seeds."""

from __future__ import annotations

import numpy as np

from monai.config import NdarrayOrTensor

from mstl_monai.metrics.classification import (
    _NEED_BOTH_CLASSES,
    METRIC_NAMES,
    _binary_inputs,
    _metrics_from_counts,
    classification_metrics,
)
from mstl_monai.utils.type_conversion import to_numpy

__all__ = ["bootstrap_classification_metrics", "paired_bootstrap_difference", "seed_bootstrap_metrics"]

#: upper bound on resamples x images held in memory at once by the bootstrap
_MAX_CHUNK_ELEMENTS = 4_000_000


def _check_bootstrap_args(n_bootstrap: int, ci: float) -> int:
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap}.")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}.")
    return int(n_bootstrap)


def _resample_counts(n: int, n_bootstrap: int, seed: int):
    """Yield ``(B, n)`` arrays: how often each of ``n`` images is drawn in each of ``B`` resamples (in chunks)."""
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // n)
    done = 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        idx = rng.integers(0, n, size=(b, n))
        flat = (np.arange(b)[:, None] * n + idx).ravel()
        yield np.bincount(flat, minlength=b * n).reshape(b, n)
        done += b


def _percentile_ci(chunks: list[np.ndarray], ci: float) -> tuple[float, float, np.ndarray]:
    """``(low, high, finite values)`` of the pooled resampled values (``nan`` bounds when none is finite)."""
    vals = np.concatenate(chunks)
    vals = vals[np.isfinite(vals)]
    if not vals.size:
        return float("nan"), float("nan"), vals
    lo, hi = np.percentile(vals, [100.0 * (1.0 - ci) / 2.0, 100.0 * (1.0 + ci) / 2.0])
    return float(lo), float(hi), vals


def bootstrap_classification_metrics(
    y_true: NdarrayOrTensor,
    prob_pos: NdarrayOrTensor,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    threshold: float = 0.5,
) -> dict:
    """:func:`classification_metrics` with percentile-bootstrap confidence intervals over images.

    ``n_bootstrap`` resamples of the ``n`` images are drawn with replacement from ``np.random.default_rng(seed)``
    (same seed, same intervals); each metric's interval is the ``(1 - ci) / 2`` and ``(1 + ci) / 2`` percentiles
    of its resampled values. Resamples that hold one class only give no AUC, sensitivity or specificity; they
    are skipped for those metrics and counted (``bootstrap.n_single_class``). Likewise a resample where F1 or
    precision is undefined (no predicted or true positives) is skipped for that metric. Vectorised: 1000
    resamples of 203 images take a few milliseconds.

    Args:
        y_true: ``(n,)`` labels in {0, 1} (see :func:`classification_metrics`).
        prob_pos: ``(n,)`` probability of class 1.
        n_bootstrap: number of resamples (>= 1).
        seed: seed of the numpy ``Generator``.
        ci: confidence level in (0, 1).
        threshold: decision threshold on ``prob_pos``.

    Returns:
        ``{name: {"value", "ci_low", "ci_high"}}`` for each of ``METRIC_NAMES`` (``value`` on all images),
        ``"n"``: the number of images, and ``"bootstrap"``: ``{"n_bootstrap", "seed", "ci", "threshold",
        "n_single_class", "n_valid": {name: resamples used}}``.

    Raises:
        ValueError: for invalid ``n_bootstrap`` or ``ci``, and as :func:`classification_metrics`.
    """
    n_bootstrap = _check_bootstrap_args(n_bootstrap, ci)
    y, p = _binary_inputs(y_true, prob_pos)
    n = y.size
    point = classification_metrics(y, p, threshold=threshold)

    samples: dict[str, list[np.ndarray]] = {k: [] for k in METRIC_NAMES}
    n_single = 0
    for counts in _resample_counts(n, n_bootstrap, seed):
        res = _metrics_from_counts(counts, y, p, float(threshold))
        single = (res["tp"] + res["fn"] == 0) | (res["tn"] + res["fp"] == 0)
        n_single += int(single.sum())
        for k in METRIC_NAMES:
            vals = res[k]
            if k in _NEED_BOTH_CLASSES:
                vals = np.where(single, np.nan, vals)
            samples[k].append(vals)

    out: dict = {}
    n_valid: dict[str, int] = {}
    for k in METRIC_NAMES:
        lo, hi, vals = _percentile_ci(samples[k], ci)
        n_valid[k] = int(vals.size)
        out[k] = {"value": float(point[k]), "ci_low": lo, "ci_high": hi}
    out["n"] = n
    out["bootstrap"] = {
        "n_bootstrap": n_bootstrap,
        "seed": seed,
        "ci": ci,
        "threshold": float(threshold),
        "n_single_class": n_single,
        "n_valid": n_valid,
    }
    return out


def paired_bootstrap_difference(
    y_true: NdarrayOrTensor,
    prob_a: NdarrayOrTensor,
    prob_b: NdarrayOrTensor,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    threshold: float = 0.5,
) -> dict:
    """Difference ``metric(a) - metric(b)`` of two models scored on the same images, with a paired bootstrap CI.

    Each resample draws the images once and scores both models on it, so the interval reflects the difference
    itself (the models share the hard and easy images), not two independent intervals. An interval that
    excludes 0 says the difference is unlikely to be resampling noise of this test set; it says nothing about
    training noise (another seed may give another model).

    Args:
        y_true: ``(n,)`` labels in {0, 1}.
        prob_a: ``(n,)`` probability of class 1 from model a.
        prob_b: ``(n,)`` probability of class 1 from model b, for the same images in the same order.
        n_bootstrap: number of resamples (>= 1).
        seed: seed of the numpy ``Generator``.
        ci: confidence level in (0, 1).
        threshold: decision threshold on both models' probabilities.

    Returns:
        ``{name: {"value", "ci_low", "ci_high", "p_le_0"}}`` for each of ``METRIC_NAMES``, where ``p_le_0`` is the
        share of resampled differences <= 0 (near 0: a is better; near 1: b is better), plus ``"n"`` and
        ``"bootstrap"`` as :func:`bootstrap_classification_metrics`.

    Raises:
        ValueError: when the inputs differ in length, and as :func:`bootstrap_classification_metrics`.
    """
    n_bootstrap = _check_bootstrap_args(n_bootstrap, ci)
    y, pa = _binary_inputs(y_true, prob_a)
    _, pb = _binary_inputs(y_true, prob_b)
    if pa.shape != pb.shape:
        raise ValueError(f"prob_a and prob_b must score the same images, got {pa.shape} and {pb.shape}.")
    n = y.size
    point_a = classification_metrics(y, pa, threshold=threshold)
    point_b = classification_metrics(y, pb, threshold=threshold)
    diffs: dict[str, list[np.ndarray]] = {k: [] for k in METRIC_NAMES}
    for counts in _resample_counts(n, n_bootstrap, seed):
        ra = _metrics_from_counts(counts, y, pa, float(threshold))
        rb = _metrics_from_counts(counts, y, pb, float(threshold))
        for k in METRIC_NAMES:
            diffs[k].append(ra[k] - rb[k])
    out: dict = {}
    n_valid: dict[str, int] = {}
    for k in METRIC_NAMES:
        lo, hi, vals = _percentile_ci(diffs[k], ci)
        n_valid[k] = int(vals.size)
        p_le_0 = float((vals <= 0).mean()) if vals.size else float("nan")
        out[k] = {"value": float(point_a[k]) - float(point_b[k]), "ci_low": lo, "ci_high": hi, "p_le_0": p_le_0}
    out["n"] = n
    out["bootstrap"] = {"n_bootstrap": int(n_bootstrap), "seed": seed, "ci": ci, "threshold": float(threshold), "n_valid": n_valid}
    return out


def seed_bootstrap_metrics(
    y_true: NdarrayOrTensor,
    prob_pos_per_seed: NdarrayOrTensor,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    threshold: float = 0.5,
) -> dict:
    """Metrics of the same model trained with ``K`` seeds, averaged over the seeds, with a CI over images and seeds.

    ``value`` is the mean over the seeds of each seed's metric on all images (``sd`` their spread). The interval is a
    two-level bootstrap: each resample draws the ``n`` test images with replacement (the same images for every
    seed: paired) and ``K`` seeds with replacement, and averages the drawn seeds' metrics on the drawn images; so it
    is wider than one seed's image-only interval by what the seeds disagree. The seed ensemble (the seeds' mean
    probability, one model) is ``ensemble``: :func:`bootstrap_classification_metrics` of it.

    Args:
        y_true: ``(n,)`` labels in {0, 1}.
        prob_pos_per_seed: ``(K, n)`` probability of class 1 from each seed's model, on the same images in order.
        n_bootstrap, seed, ci, threshold: as :func:`bootstrap_classification_metrics`.

    Returns:
        ``{name: {"value", "ci_low", "ci_high", "sd", "per_seed"}}`` for each of ``METRIC_NAMES``, ``"n"``,
        ``"n_seeds"`` and ``"ensemble"``.
    """
    n_bootstrap = _check_bootstrap_args(n_bootstrap, ci)
    probs = to_numpy(prob_pos_per_seed, "prob_pos_per_seed").astype(np.float64)
    if probs.ndim != 2 or probs.shape[0] < 1:
        raise ValueError(f"prob_pos_per_seed must have shape (n_seeds, n), got {tuple(probs.shape)}.")
    per_seed = [_binary_inputs(y_true, p) for p in probs]
    y = per_seed[0][0]
    k = probs.shape[0]
    point = [classification_metrics(y, p, threshold=threshold) for _, p in per_seed]
    rng = np.random.default_rng(seed + 1)
    samples: dict[str, list[np.ndarray]] = {m: [] for m in METRIC_NAMES}
    for counts in _resample_counts(y.size, n_bootstrap, seed):
        res = [_metrics_from_counts(counts, y, p, float(threshold)) for _, p in per_seed]
        single = (res[0]["tp"] + res[0]["fn"] == 0) | (res[0]["tn"] + res[0]["fp"] == 0)
        drawn = rng.integers(0, k, size=(counts.shape[0], k))
        for m in METRIC_NAMES:
            vals = np.stack([r[m] for r in res])  # (K, B)
            mean = np.take_along_axis(vals, drawn.T, axis=0).mean(0)
            samples[m].append(np.where(single, np.nan, mean) if m in _NEED_BOTH_CLASSES else mean)
    out: dict = {}
    for m in METRIC_NAMES:
        lo, hi, _ = _percentile_ci(samples[m], ci)
        vals = np.array([pt[m] for pt in point], dtype=np.float64)
        out[m] = {
            "value": float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan"),
            "ci_low": lo,
            "ci_high": hi,
            "sd": float(np.nanstd(vals, ddof=1)) if k > 1 and np.isfinite(vals).sum() > 1 else 0.0,
            "per_seed": [float(v) for v in vals],
        }
    out["n"] = int(y.size)
    out["n_seeds"] = k
    out["ensemble"] = bootstrap_classification_metrics(y, probs.mean(0), n_bootstrap, seed, ci, threshold)
    return out
