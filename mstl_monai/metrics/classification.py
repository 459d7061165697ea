# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Binary classification metrics (COVID = class 1) with percentile-bootstrap confidence intervals, and ROC points."""

from __future__ import annotations

import numpy as np

from monai.config import NdarrayOrTensor

from mstl_monai.metrics.leep import _to_numpy, labels_to_indices

__all__ = [
    "METRIC_NAMES",
    "paired_bootstrap_difference",
    "binary_roc_auc",
    "classification_metrics",
    "bootstrap_classification_metrics",
    "roc_curve_points",
    "seed_bootstrap_metrics",
    "youden_threshold",
]

#: the metrics that :func:`bootstrap_classification_metrics` gives a confidence interval for
METRIC_NAMES = ("accuracy", "f1", "auc", "sensitivity", "specificity", "precision")
#: metrics left out of a resample's statistics when that resample holds one class only
_NEED_BOTH_CLASSES = ("auc", "sensitivity", "specificity")
#: upper bound on resamples x images held in memory at once by the bootstrap
_MAX_CHUNK_ELEMENTS = 4_000_000


def _binary_inputs(y_true: NdarrayOrTensor, prob_pos: NdarrayOrTensor) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to ``(labels int64 (n,), positive-class probabilities float64 (n,))``."""
    y = labels_to_indices(y_true, name="y_true")
    p = _to_numpy(prob_pos, "prob_pos")
    if p.ndim == 2 and p.shape[1] in (1, 2):
        p = p[:, -1]  # (n, 2) softmax output -> class-1 column
    if p.ndim != 1:
        raise ValueError(f"prob_pos must have shape (n,), (n, 1) or (n, 2), got {tuple(p.shape)}.")
    p = p.astype(np.float64)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {y.shape[0]} labels but prob_pos has {p.shape[0]} values.")
    if y.shape[0] == 0:
        raise ValueError("classification metrics need at least one sample, got an empty set.")
    if y.max() > 1:
        raise ValueError(f"y_true must be binary (0 = non-COVID, 1 = COVID), got the class {y.max()}.")
    if not np.all(np.isfinite(p)):
        raise ValueError("prob_pos holds non-finite values (nan or inf).")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(
            f"prob_pos must be probabilities in [0, 1] (softmax of the logits), got values in [{p.min()}, {p.max()}]."
        )
    return y, p


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _metrics_from_counts(counts: np.ndarray, y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """Metrics of ``B`` weighted samples at once.

    Args:
        counts: ``(B, n)`` how many times each of the ``n`` images is in each of the ``B`` samples.
        y: ``(n,)`` binary labels.
        p: ``(n,)`` positive-class probabilities.
        threshold: predicted positive when ``p > threshold``.

    Returns:
        name -> ``(B,)`` float arrays (``nan`` where undefined), plus ``tp, fp, tn, fn, n``.
    """
    counts = np.asarray(counts, dtype=np.float64)
    yf = y.astype(np.float64)
    pred = (p > threshold).astype(np.float64)
    n_b = counts.sum(axis=1)
    npos = counts @ yf
    nneg = n_b - npos
    tp = counts @ (yf * pred)
    fp = counts @ ((1.0 - yf) * pred)
    fn = npos - tp
    tn = nneg - fp

    # rank-based AUC (Mann-Whitney U), ties count 1/2: group equal scores into levels in ascending order
    order = np.argsort(p, kind="stable")
    p_sorted = p[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(p_sorted) != 0) + 1])
    c_sorted = counts[:, order]
    pos_lvl = np.add.reduceat(c_sorted * yf[order], starts, axis=1)  # (B, G) positives per score level
    neg_lvl = np.add.reduceat(c_sorted * (1.0 - yf[order]), starts, axis=1)  # (B, G) negatives per score level
    neg_below = np.cumsum(neg_lvl, axis=1) - neg_lvl
    u_stat = np.sum(pos_lvl * (neg_below + 0.5 * neg_lvl), axis=1)

    return {
        "accuracy": _safe_div(tp + tn, n_b),
        "f1": _safe_div(2.0 * tp, 2.0 * tp + fp + fn),
        "auc": _safe_div(u_stat, npos * nneg),
        "sensitivity": _safe_div(tp, npos),
        "specificity": _safe_div(tn, nneg),
        "precision": _safe_div(tp, tp + fp),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "n": n_b,
    }


def binary_roc_auc(y_true: NdarrayOrTensor, prob_pos: NdarrayOrTensor) -> float:
    """ROC AUC of a binary classifier, rank-based (Mann-Whitney U), tied scores counted 1/2.

    Raises:
        ValueError: when ``y_true`` holds one class only (the AUC is undefined), or for invalid input.
    """
    y, p = _binary_inputs(y_true, prob_pos)
    if y.min() == y.max():
        raise ValueError(f"ROC AUC needs both classes in y_true, got only class {int(y[0])} ({y.size} samples).")
    return float(_metrics_from_counts(np.ones((1, y.size)), y, p, 0.5)["auc"][0])


def classification_metrics(
    y_true: NdarrayOrTensor, prob_pos: NdarrayOrTensor, threshold: float = 0.5
) -> dict[str, float | int]:
    """Accuracy, F1, ROC AUC, sensitivity, specificity and precision of a binary classifier, COVID = class 1.

    A sample is predicted positive when ``prob_pos > threshold``; with the default ``0.5`` this equals the
    ``argmax`` of a 2-class softmax (a tie goes to class 0), as MONAI's ``AsDiscrete(argmax=True)`` does.

    .. code-block:: python

        m = classification_metrics([0, 1, 1, 0], [0.1, 0.8, 0.4, 0.3])
        # m["accuracy"] == 0.75, m["sensitivity"] == 0.5, m["auc"] == 1.0

    Args:
        y_true: ``(n,)`` labels in {0, 1} (or ``(n, 1)``, or one-hot ``(n, 2)``).
        prob_pos: ``(n,)`` probability of class 1 (or ``(n, 2)`` softmax output; column 1 is used).
        threshold: decision threshold on ``prob_pos``.

    Returns:
        dict with ``accuracy, f1, auc, sensitivity, specificity, precision`` (floats, ``nan`` where undefined,
        e.g. the AUC when ``y_true`` holds one class) and the integer counts ``n, tp, fp, tn, fn``.

    Raises:
        ValueError: for empty or mismatched input, labels outside {0, 1}, or probabilities outside [0, 1].
    """
    y, p = _binary_inputs(y_true, prob_pos)
    res = _metrics_from_counts(np.ones((1, y.size)), y, p, float(threshold))
    out: dict[str, float | int] = {k: float(res[k][0]) for k in METRIC_NAMES}
    out.update({k: int(round(float(res[k][0]))) for k in ("n", "tp", "fp", "tn", "fn")})
    return out


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


def roc_curve_points(y_true: NdarrayOrTensor, prob_pos: NdarrayOrTensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points of the ROC curve, one per distinct score (tied scores make one diagonal step).

    Args:
        y_true: ``(n,)`` labels in {0, 1}, both present.
        prob_pos: ``(n,)`` probability of class 1.

    Returns:
        ``(fpr, tpr, thresholds)`` float64 arrays, from ``(0, 0)`` at threshold ``inf`` to ``(1, 1)``;
        point ``j`` predicts positive when ``prob_pos >= thresholds[j]``. The trapezoid area under them equals
        :func:`binary_roc_auc`.

    Raises:
        ValueError: when ``y_true`` holds one class only, or for invalid input.
    """
    y, p = _binary_inputs(y_true, prob_pos)
    npos = int(y.sum())
    nneg = y.size - npos
    if npos == 0 or nneg == 0:
        raise ValueError(f"a ROC curve needs both classes in y_true, got {npos} positives and {nneg} negatives.")
    order = np.argsort(-p, kind="stable")
    p_desc, y_desc = p[order], y[order].astype(np.float64)
    last = np.concatenate([np.flatnonzero(np.diff(p_desc) != 0), [p_desc.size - 1]])  # last index of each level
    tps = np.cumsum(y_desc)[last]
    fps = (last + 1) - tps
    fpr = np.concatenate([[0.0], fps / nneg])
    tpr = np.concatenate([[0.0], tps / npos])
    thresholds = np.concatenate([[np.inf], p_desc[last]])
    return fpr, tpr, thresholds


def youden_threshold(y_true: NdarrayOrTensor, prob_pos: NdarrayOrTensor) -> float | None:
    """The decision threshold of maximum Youden index ``J = sensitivity + specificity - 1``.

    The rule the finetune stage applies to the **val** probabilities of its best checkpoint: the candidates are
    the midpoints between adjacent distinct values of ``prob_pos`` (a sample is predicted positive when
    ``prob_pos > threshold``, as in :func:`classification_metrics`); the one with the highest ``J`` wins, and among
    equal ``J`` the one closest to 0.5.

    .. code-block:: python

        youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.9])  # 0.325: all four right (J = 1)

    Returns:
        the threshold, or ``None`` when no threshold separates anything (one class only, all probabilities
        equal, or no candidate with ``J > 0``): the caller keeps 0.5.

    Raises:
        ValueError: as :func:`classification_metrics` for invalid input.
    """
    y, p = _binary_inputs(y_true, prob_pos)
    npos = int(y.sum())
    nneg = y.size - npos
    values = np.unique(p)
    if npos == 0 or nneg == 0 or values.size < 2:
        return None
    cand = (values[:-1] + values[1:]) / 2.0
    # positives / negatives above each candidate, from the sorted probabilities of each class
    tp = npos - np.searchsorted(np.sort(p[y == 1]), cand, side="right")
    fp = nneg - np.searchsorted(np.sort(p[y == 0]), cand, side="right")
    j = tp / npos + (nneg - fp) / nneg - 1.0
    best = j.max()
    if not best > 1e-12:
        return None
    ties = np.flatnonzero(np.isclose(j, best, rtol=0.0, atol=1e-12))
    return float(cand[ties[np.argmin(np.abs(cand[ties] - 0.5))]])


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
    probs = _to_numpy(prob_pos_per_seed, "prob_pos_per_seed").astype(np.float64)
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
