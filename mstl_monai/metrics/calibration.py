# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Probability calibration: temperature scaling (Guo et al. 2017), expected calibration error, operating points.

Everything here works on class **probabilities** (what the bundle's post-processing writes), not logits: the
log-probabilities are the logits up to a per-image constant, which the softmax ignores, so
``softmax(log(p) / T) == softmax(z / T)`` for the network's logits ``z``. A checkpoint's ``temperature`` (chosen on
val, stored in ``model.pt.json``) is applied to the logits before the softmax by every reader
(:func:`calibrated_softmax`); its thresholds are thresholds of the calibrated probability.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.config import NdarrayOrTensor

from .classification import _binary_inputs

__all__ = [
    "OPERATING_POINTS",
    "apply_temperature",
    "calibrated_softmax",
    "expected_calibration_error",
    "fit_temperature",
    "sensitivity_threshold",
]

#: the operating points a finetuned checkpoint stores: the val threshold of maximum Youden J, and the highest val
#: threshold whose sensitivity is at least 90 % (a screening point)
OPERATING_POINTS = ("youden", "sensitivity_90")

_EPS = 1e-7


def _as_probs(probs: NdarrayOrTensor) -> np.ndarray:
    p = np.asarray(probs.detach().cpu().float() if isinstance(probs, torch.Tensor) else probs, dtype=np.float64)
    if p.ndim == 1:  # positive-class probabilities of a binary task
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (N,) or (N, C>=2), got shape {p.shape}.")
    if not np.isfinite(p).all() or (p < -1e-6).any() or (p > 1 + 1e-6).any():
        raise ValueError("probabilities must be finite and in [0, 1].")
    return np.clip(p, _EPS, 1.0)


def apply_temperature(probs: NdarrayOrTensor, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)`` row by row; ``(N,)`` input = positive-class probabilities, same out."""
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}.")
    p = _as_probs(probs)
    z = np.log(p) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    q = np.exp(z)
    q /= q.sum(axis=1, keepdims=True)
    return q[:, 1] if np.ndim(probs) == 1 else q


def calibrated_softmax(logits: torch.Tensor, temperature: float = 1.0, dim: int = 0) -> torch.Tensor:
    """``softmax(logits / temperature)`` along ``dim`` (the post-processing of one image: ``dim=0``)."""
    return torch.softmax(logits.float() / float(temperature), dim=dim)


def _nll(log_p: np.ndarray, y: np.ndarray, t: float) -> float:
    z = log_p / t
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(y.size), y]))


def fit_temperature(y_true: NdarrayOrTensor, probs: NdarrayOrTensor, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """The temperature that minimises the negative log-likelihood of ``y_true`` under ``softmax(log(probs) / T)``.

    A one-parameter fit (bounded search over ``log T``), so it cannot change the ranking of the images (AUC) nor the
    predicted class at 0.5 for two classes; it only makes the probabilities mean what they say.

    Args:
        y_true: class indices ``(N,)``.
        probs: ``(N, C)`` class probabilities, or ``(N,)`` positive-class probabilities of a binary task.
        bounds: the search range of ``T``.

    Raises:
        ValueError: fewer than 2 images, labels outside the classes, or invalid probabilities.
    """
    from scipy.optimize import minimize_scalar

    p = _as_probs(probs)
    y = np.asarray(y_true.detach().cpu() if isinstance(y_true, torch.Tensor) else y_true).reshape(-1)
    if y.size != p.shape[0] or y.size < 2:
        raise ValueError(f"need at least 2 labels matching the {p.shape[0]} probabilities, got {y.size}.")
    if not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must be class indices in [0, {p.shape[1] - 1}].")
    y = y.astype(np.int64)
    log_p = np.log(p)
    res = minimize_scalar(
        lambda s: _nll(log_p, y, float(np.exp(s))), bounds=tuple(np.log(bounds)), method="bounded", options={"xatol": 1e-4}
    )
    return float(np.exp(res.x))


def expected_calibration_error(y_true: NdarrayOrTensor, probs: NdarrayOrTensor, n_bins: int = 15) -> float:
    """Top-label expected calibration error: ``sum_b |B_b|/N * |accuracy(B_b) - confidence(B_b)|`` over ``n_bins``
    equal-width confidence bins (Guo et al. 2017).

    Args:
        y_true: class indices ``(N,)``.
        probs: ``(N, C)`` class probabilities, or ``(N,)`` positive-class probabilities of a binary task.
        n_bins: number of bins on ``[0, 1]``.
    """
    p = _as_probs(probs)
    y = np.asarray(y_true.detach().cpu() if isinstance(y_true, torch.Tensor) else y_true).reshape(-1).astype(np.int64)
    if y.size != p.shape[0] or y.size == 0:
        raise ValueError(f"need one label per probability row, got {y.size} labels for {p.shape[0]} rows.")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    ece = 0.0
    for b in np.unique(bins):
        m = bins == b
        ece += m.mean() * abs(correct[m].mean() - conf[m].mean())
    return float(ece)


def sensitivity_threshold(y_true: NdarrayOrTensor, prob_pos: NdarrayOrTensor, min_sensitivity: float = 0.9) -> float | None:
    """The highest threshold (best specificity) whose sensitivity on ``(y_true, prob_pos)`` is at least
    ``min_sensitivity``; a sample is positive when ``prob_pos > threshold``. Candidates are midpoints between adjacent
    distinct probabilities (and just below the smallest one), as :func:`~mstl_monai.metrics.youden_threshold`'s.

    Returns:
        the threshold, or ``None`` without positives or negatives (nothing to choose from).
    """
    if not 0.0 < float(min_sensitivity) <= 1.0:
        raise ValueError(f"min_sensitivity must be in (0, 1], got {min_sensitivity!r}.")
    y, p = _binary_inputs(y_true, prob_pos)
    npos = int(y.sum())
    if npos == 0 or npos == y.size:
        return None
    values = np.unique(p)
    cand = np.concatenate([[max(values[0] - 1e-6, 0.0)], (values[:-1] + values[1:]) / 2.0])
    pos = np.sort(p[y == 1])
    sens = (npos - np.searchsorted(pos, cand, side="right")) / npos
    ok = np.flatnonzero(sens >= float(min_sensitivity) - 1e-12)
    return float(cand[ok].max())
