# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Binary classification metrics (COVID = class 1), ROC points and the decision threshold; their bootstrap
confidence intervals: :mod:`mstl_monai.metrics.bootstrap`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from monai.config import NdarrayOrTensor

from mstl_monai.metrics.leep import labels_to_indices
from mstl_monai.utils.type_conversion import to_numpy

__all__ = [
    "METRIC_NAMES",
    "binary_roc_auc",
    "classification_metrics",
    "roc_curve_points",
    "thresholded_class",
    "thresholded_index",
    "youden_threshold",
]

#: the metrics that :func:`bootstrap_classification_metrics` gives a confidence interval for
METRIC_NAMES = ("accuracy", "f1", "auc", "sensitivity", "specificity", "precision")
#: metrics left out of a resample's statistics when that resample holds one class only
_NEED_BOTH_CLASSES = ("auc", "sensitivity", "specificity")


def _binary_inputs(y_true: NdarrayOrTensor, prob_pos: NdarrayOrTensor) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to ``(labels int64 (n,), positive-class probabilities float64 (n,))``."""
    y = labels_to_indices(y_true, name="y_true")
    p = to_numpy(prob_pos, "prob_pos")
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


def thresholded_index(probs: Sequence[float] | np.ndarray, threshold: float = 0.5, positive_class: int = 1) -> int:
    """The class a prediction decides for: with two classes the positive one when its probability is above
    ``threshold`` (the other one otherwise); with more classes the most probable one (the first of ties)."""
    p = np.asarray(probs).reshape(-1)  # its own dtype: float32 scores compare with the threshold in float32, as always
    if p.size != 2:
        return int(p.argmax())
    return int(positive_class) if p[positive_class] > threshold else 1 - int(positive_class)


def thresholded_class(scores: Mapping[str, float], threshold: float = 0.5, positive_class: int = 1) -> str:
    """The predicted class of a binary classifier's ``{class name: probability}`` (in output order): the positive
    class when its probability is above ``threshold``; more classes: the most probable one."""
    names = list(scores)
    return names[thresholded_index([scores[n] for n in names], threshold, positive_class)]
