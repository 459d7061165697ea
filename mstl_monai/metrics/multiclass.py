# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Multi-class metrics with bootstrap intervals: accuracy, macro-F1, one-vs-rest AUC per class (e.g. the 3-class
chest X-ray task: normal / pneumonia / COVID-19)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["multiclass_metrics", "bootstrap_multiclass_metrics", "paired_bootstrap_multiclass"]


def _check(labels, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"probs must be (n, C) with n={y.size} labels, got shape {p.shape}.")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"labels must lie in 0..{p.shape[1] - 1}, got {sorted(set(y.tolist()))}.")
    return y, p


def _auc(pos: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC of ``score`` for the boolean ``pos`` (Mann-Whitney with ties counted half); nan for one class."""
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(s.size)
    i = 0
    while i < s.size:  # average ranks of ties
        j = i
        while j + 1 < s.size and s[j + 1] == s[i]:
            j += 1
        ranks[i : j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    r = np.empty(s.size)
    r[order] = ranks
    return float((r[pos].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def multiclass_metrics(labels, probs, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``accuracy`` (argmax), ``macro_f1`` (mean of the per-class F1 over the classes present or predicted),
    ``f1_<class>`` and ``auc_<class>`` (one-vs-rest ROC AUC of that class's probability; nan without both)."""
    y, p = _check(labels, probs)
    c = p.shape[1]
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    if len(names) != c:
        raise ValueError(f"class_names {names} do not name the {c} classes.")
    pred = p.argmax(axis=1)
    out = {"accuracy": float((pred == y).mean()) if y.size else float("nan")}
    f1s = []
    for k in range(c):
        tp = float(((pred == k) & (y == k)).sum())
        fp = float(((pred == k) & (y != k)).sum())
        fn = float(((pred != k) & (y == k)).sum())
        f1s.append(2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else float("nan"))
    out["macro_f1"] = float(np.nanmean(f1s)) if not all(np.isnan(f1s)) else float("nan")
    for k, name in enumerate(names):
        out[f"f1_{name}"] = float(f1s[k])
        out[f"auc_{name}"] = _auc(y == k, p[:, k])
    return out


def bootstrap_multiclass_metrics(
    labels, probs, class_names: Sequence[str] | None = None, n_bootstrap: int = 1000, seed: int = 0, ci: float = 0.95
) -> dict:
    """:func:`multiclass_metrics` with percentile-bootstrap intervals over images (``n_bootstrap`` resamples with
    replacement from ``np.random.default_rng(seed)``; resamples where a metric is undefined are skipped for it).

    Returns:
        ``{metric: {"value", "ci_low", "ci_high"}}``, ``"n"`` and ``"bootstrap"`` settings.
    """
    y, p = _check(labels, probs)
    point = multiclass_metrics(y, p, class_names)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in point}
    for _ in range(int(n_bootstrap)):
        idx = rng.integers(0, y.size, size=y.size)
        for k, v in multiclass_metrics(y[idx], p[idx], class_names).items():
            samples[k].append(v)
    lo_q, hi_q = 100.0 * (1.0 - ci) / 2.0, 100.0 * (1.0 + ci) / 2.0
    out: dict = {}
    for k, v in point.items():
        vals = np.asarray(samples[k])
        vals = vals[np.isfinite(vals)]
        lo, hi = (np.percentile(vals, [lo_q, hi_q]) if vals.size else (float("nan"), float("nan")))
        out[k] = {"value": v, "ci_low": float(lo), "ci_high": float(hi)}
    out["n"] = int(y.size)
    out["bootstrap"] = {"n_bootstrap": int(n_bootstrap), "seed": int(seed), "ci": float(ci)}
    return out


def paired_bootstrap_multiclass(
    labels, probs_a, probs_b, class_names: Sequence[str] | None = None, n_bootstrap: int = 1000, seed: int = 0,
    ci: float = 0.95,
) -> dict:
    """Differences ``b - a`` of every :func:`multiclass_metrics` on the same images, with paired percentile-bootstrap
    intervals (the same resampled images for both)."""
    y, pa = _check(labels, probs_a)
    _, pb = _check(labels, probs_b)
    ma, mb = multiclass_metrics(y, pa, class_names), multiclass_metrics(y, pb, class_names)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in ma}
    for _ in range(int(n_bootstrap)):
        idx = rng.integers(0, y.size, size=y.size)
        a, b = multiclass_metrics(y[idx], pa[idx], class_names), multiclass_metrics(y[idx], pb[idx], class_names)
        for k in ma:
            samples[k].append(b[k] - a[k])
    out: dict = {}
    for k in ma:
        vals = np.asarray(samples[k])
        vals = vals[np.isfinite(vals)]
        q = [100.0 * (1.0 - ci) / 2.0, 100.0 * (1.0 + ci) / 2.0]
        lo, hi = np.percentile(vals, q) if vals.size else (np.nan, np.nan)
        out[k] = {"difference": mb[k] - ma[k], "ci_low": float(lo), "ci_high": float(hi)}
    out["n"] = int(y.size)
    return out
