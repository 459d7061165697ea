# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Paired comparison of two models each trained with several seeds: a bootstrap over test images and seeds."""

from __future__ import annotations

import numpy as np

from monai.config import NdarrayOrTensor

from mstl_monai.metrics.classification import METRIC_NAMES, _metrics_from_counts
from mstl_monai.metrics.leep import labels_to_indices
from mstl_monai.utils.type_conversion import to_numpy

__all__ = ["seed_paired_difference"]

#: upper bound on resamples x images held in memory at once (the image draws come in chunks of this many elements)
_MAX_CHUNK_ELEMENTS = 4_000_000


def _labels(y_true: NdarrayOrTensor) -> np.ndarray:
    y = labels_to_indices(y_true, name="y_true")
    if y.size == 0:
        raise ValueError("seed_paired_difference needs at least one test image, got an empty y_true.")
    if y.max() > 1:
        raise ValueError(f"y_true must be binary (0 = non-COVID, 1 = COVID), got the class {y.max()}.")
    return y


def _seed_probs(probs: NdarrayOrTensor, name: str, n: int) -> np.ndarray:
    """``(K, n)`` float64 positive-class probabilities; a ``(n,)`` array is one seed."""
    p = to_numpy(probs, name)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[0] < 1:
        raise ValueError(f"{name} must have shape (n_seeds, n) or (n,), got {tuple(p.shape)}.")
    if p.shape[1] != n:
        raise ValueError(f"{name} has {p.shape[1]} values per seed but y_true has {n} labels.")
    p = p.astype(np.float64)
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} holds non-finite values (nan or inf).")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"{name} must be probabilities of class 1 in [0, 1], got values in [{p.min()}, {p.max()}].")
    return p


def _resampled_metrics(counts: np.ndarray, y: np.ndarray, probs: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Each seed's metrics on ``B`` weighted resamples of the images.

    Args:
        counts: ``(B, n)`` how many times each image is in each resample.
        y: ``(n,)`` binary labels.
        probs: ``(K, n)`` positive-class probabilities of the ``K`` seeds.
        threshold: predicted positive when ``p > threshold``.

    Returns:
        name -> ``(K, B)`` float64 (``nan`` where undefined, e.g. the AUC of a one-class resample).
    """
    per_seed = [_metrics_from_counts(counts, y, p, threshold) for p in probs]
    return {m: np.stack([r[m] for r in per_seed]) for m in METRIC_NAMES}


def _seed_mean(vals: np.ndarray, drawn: np.ndarray | None = None) -> np.ndarray:
    """Mean over the seeds (axis 0) of the finite values (``nan`` where none is); ``drawn`` ``(B, K)`` picks seeds."""
    if drawn is not None:
        vals = np.take_along_axis(vals, drawn.T, axis=0)
    ok = np.isfinite(vals)
    total, count = np.where(ok, vals, 0.0).sum(0), ok.sum(0)
    return np.divide(total, count, out=np.full(total.shape, np.nan), where=count > 0)


def _difference(y, pa, pb, n_bootstrap: int, seed: int, ci: float, threshold: float) -> dict:
    n = y.size
    ones = np.ones((1, n))
    point_a, point_b = _resampled_metrics(ones, y, pa, threshold), _resampled_metrics(ones, y, pb, threshold)
    img_rng, seed_rng = np.random.default_rng(seed), np.random.default_rng(seed + 1)
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in METRIC_NAMES}
    chunk, done = max(1, _MAX_CHUNK_ELEMENTS // n), 0
    while done < n_bootstrap:
        b = min(chunk, n_bootstrap - done)
        idx = img_rng.integers(0, n, size=(b, n))  # the same images for both arms: paired
        counts = np.bincount((np.arange(b)[:, None] * n + idx).ravel(), minlength=b * n).reshape(b, n)
        drawn_a = seed_rng.integers(0, pa.shape[0], size=(b, pa.shape[0]))  # each arm's seeds, independently
        drawn_b = seed_rng.integers(0, pb.shape[0], size=(b, pb.shape[0]))
        ra, rb = _resampled_metrics(counts, y, pa, threshold), _resampled_metrics(counts, y, pb, threshold)
        for m in METRIC_NAMES:
            diffs[m].append(_seed_mean(ra[m], drawn_a) - _seed_mean(rb[m], drawn_b))
        done += b
    lo_q, hi_q = 100.0 * (1.0 - ci) / 2.0, 100.0 * (1.0 + ci) / 2.0
    out: dict = {}
    n_valid: dict[str, int] = {}
    for m in METRIC_NAMES:
        vals = np.concatenate(diffs[m])
        vals = vals[np.isfinite(vals)]
        n_valid[m] = int(vals.size)
        lo, hi = (float(v) for v in np.percentile(vals, [lo_q, hi_q])) if vals.size else (float("nan"),) * 2
        a, b_ = float(_seed_mean(point_a[m])[0]), float(_seed_mean(point_b[m])[0])
        out[m] = {
            "value": a - b_,
            "ci_low": lo,
            "ci_high": hi,
            "p_le_0": float((vals <= 0).mean()) if vals.size else float("nan"),
            "a": a,
            "b": b_,
        }
    out["n"] = int(n)
    out["n_seeds"] = [int(pa.shape[0]), int(pb.shape[0])]
    out["bootstrap"] = {
        "n_bootstrap": int(n_bootstrap),
        "seed": seed,
        "ci": ci,
        "threshold": float(threshold),
        "n_valid": n_valid,
    }
    return out


def seed_paired_difference(
    y_true: NdarrayOrTensor,
    probs_a: NdarrayOrTensor,
    probs_b: NdarrayOrTensor,
    n_bootstrap: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    threshold: float = 0.5,
) -> dict:
    """Difference of the seed-mean metric of model a minus model b, each trained with several seeds, scored on the
    same test images, with a two-level paired bootstrap CI.

    ``value`` is the mean over a's seeds of each seed's metric on all images minus the same mean for b. Each of the
    ``n_bootstrap`` resamples draws the ``n`` test images with replacement (the same images for both arms: paired)
    and, independently for each arm, ``Ka`` (``Kb``) of its seeds with replacement, and takes the difference of the
    drawn seeds' mean metrics on the drawn images; the interval is the ``(1 - ci) / 2`` and ``(1 + ci) / 2``
    percentiles of those differences. So it holds both the test-set noise (shared by the arms) and the training
    noise (what another set of seeds would give). With one seed per arm it equals
    :func:`~mstl_monai.metrics.paired_bootstrap_difference` (same ``seed``, same resamples). A seed whose metric is
    undefined on a resample (e.g. no predicted positives: no precision) is left out of its arm's mean there; a
    resample where an arm has no defined value (e.g. a one-class resample: no AUC) is skipped for that metric.

    ``ensemble`` compares the seed ensembles (each arm's mean probability over its seeds, one model per arm) with
    the image-paired bootstrap alone.

    .. code-block:: python

        d = seed_paired_difference(y, probs_ours, probs_scratch)  # (3, n) and (3, n): 3 seeds each
        d["auc"]["value"], d["auc"]["ci_low"], d["auc"]["ci_high"]  # seed-mean AUC gain and its 95% CI
        d["ensemble"]["auc"]["value"]  # AUC of ours' 3-seed ensemble minus scratch's

    Args:
        y_true: ``(n,)`` labels in {0, 1} (or ``(n, 1)``, or one-hot ``(n, 2)``).
        probs_a: ``(Ka, n)`` probability of class 1 from each of a's seeds (``(n,)``: one seed), images in the
            order of ``y_true``.
        probs_b: ``(Kb, n)`` the same for b (``Kb`` may differ from ``Ka``).
        n_bootstrap: number of resamples (>= 1).
        seed: seed of the numpy ``Generator`` of the image draws (the seed draws use ``seed + 1``).
        ci: confidence level in (0, 1).
        threshold: decision threshold on every probability (predicted positive when ``p > threshold``).

    Returns:
        ``{name: {"value", "ci_low", "ci_high", "p_le_0", "a", "b"}}`` for each of ``METRIC_NAMES``: ``a``/``b``
        the arms' seed-mean metrics, ``p_le_0`` the share of resampled differences <= 0 (near 0: a is better);
        ``"n"``, ``"n_seeds"`` (``[Ka, Kb]``), ``"bootstrap"`` (``n_bootstrap, seed, ci, threshold, n_valid``) and
        ``"ensemble"`` (the same keys for the two seed ensembles, ``n_seeds`` ``[1, 1]``).

    Raises:
        ValueError: for labels that are not binary or empty, probabilities that are not ``(K, n)`` in [0, 1] for
            the ``n`` labels, ``n_bootstrap < 1`` or ``ci`` outside (0, 1).
    """
    if int(n_bootstrap) != n_bootstrap or n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be a positive integer, got {n_bootstrap}.")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci}.")
    y = _labels(y_true)
    pa, pb = _seed_probs(probs_a, "probs_a", y.size), _seed_probs(probs_b, "probs_b", y.size)
    args = (int(n_bootstrap), int(seed), float(ci), float(threshold))
    out = _difference(y, pa, pb, *args)
    out["ensemble"] = _difference(y, pa.mean(0, keepdims=True), pb.mean(0, keepdims=True), *args)
    return out
