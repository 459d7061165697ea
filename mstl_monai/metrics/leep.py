# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Log Expected Empirical Prediction (LEEP), a transferability score of a source model for a target task."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from monai.config import NdarrayOrTensor
from monai.metrics import CumulativeIterationMetric

from mstl_monai.utils.type_conversion import to_numpy

__all__ = ["compute_leep", "LEEPMetric", "labels_to_indices"]

#: tolerance on ``|sum_z theta(x)_z - 1|`` accepted by :func:`compute_leep`
PROB_SUM_TOL = 1e-3


def labels_to_indices(labels: NdarrayOrTensor, name: str = "target_labels") -> np.ndarray:
    """Convert integer labels of shape ``(n,)``/``(n, 1)`` or one-hot labels ``(n, K)`` to an int64 ``(n,)`` array.

    Args:
        labels: integer class indices (any integer or integral float dtype), or a one-hot matrix with ``K > 1``
            columns holding exactly one 1 per row.
        name: the argument's name, used in error messages.

    Raises:
        ValueError: for other shapes, non-integral or negative values, or rows of a one-hot matrix that are not one-hot.
    """
    y = to_numpy(labels, name)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2:
        if y.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        ok = np.all((y == 0) | (y == 1), axis=1) & (y.sum(axis=1) == 1)
        if not np.all(ok):
            bad = int(np.flatnonzero(~ok)[0])
            raise ValueError(
                f"{name} of shape {tuple(y.shape)} is read as one-hot, but row {bad} is not one-hot: {y[bad].tolist()}."
            )
        return np.argmax(y, axis=1).astype(np.int64)
    if y.ndim != 1:
        raise ValueError(f"{name} must have shape (n,), (n, 1) or one-hot (n, K), got {tuple(y.shape)}.")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}.")
    if y.size and not np.all(np.isfinite(y)):
        raise ValueError(f"{name} holds non-finite values.")
    if y.size and not np.all(np.equal(np.round(y), y)):
        bad = y[np.not_equal(np.round(y), y)][0]
        raise ValueError(f"{name} must hold integer class indices, got the value {bad}.")
    if y.size and y.min() < 0:
        raise ValueError(f"{name} must be non-negative class indices, got the value {y.min()}.")
    return y.astype(np.int64)


def compute_leep(source_probs: NdarrayOrTensor, target_labels: NdarrayOrTensor) -> float:
    """Compute LEEP (Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of Learned Representations",
    ICML 2020), Eq. 7 of Liu & Ji (2021).

    With :math:`\\theta(x)` the source model's softmax over its label set :math:`Z` and target data
    :math:`(x_i, y_i)_{i=1..n}`:

    - :math:`\\hat P(y, z) = \\frac{1}{n} \\sum_{i: y_i = y} \\theta(x_i)_z` (empirical joint),
    - :math:`\\hat P(y | z) = \\hat P(y, z) / \\sum_{y'} \\hat P(y', z)` (empirical conditional),
    - :math:`LEEP = \\frac{1}{n} \\sum_i \\log \\sum_z \\hat P(y_i | z)\\, \\theta(x_i)_z`.

    LEEP is at most 0; higher means the source model transfers better to the target task.
    Computed in float64 on CPU.

    .. code-block:: python

        probs = torch.softmax(source_net(images), dim=1)  # (n, |Z|), the *source* head
        score = compute_leep(probs, labels)  # labels: (n,) target class indices

    Args:
        source_probs: ``(n, |Z|)`` source-model probabilities (softmax outputs, rows sum to 1).
        target_labels: ``(n,)`` or ``(n, 1)`` target class indices, or a one-hot ``(n, K)`` matrix.

    Raises:
        ValueError: on an empty set, mismatched lengths, rows that are not probability vectors (apply softmax
            to logits first), negative or non-integer labels, or target labels with a single class.
    """
    theta = to_numpy(source_probs, "source_probs")
    if theta.ndim != 2:
        raise ValueError(f"source_probs must have shape (n, num_source_classes), got {tuple(theta.shape)}.")
    theta = theta.astype(np.float64)
    y = labels_to_indices(target_labels)
    n = theta.shape[0]
    if n == 0:
        raise ValueError("LEEP needs at least one target sample, got an empty set (source_probs has 0 rows).")
    if y.shape[0] != n:
        raise ValueError(
            f"source_probs has {n} rows but target_labels has {y.shape[0]} entries; "
            "they must describe the same samples."
        )
    if not np.all(np.isfinite(theta)):
        raise ValueError("source_probs holds non-finite values (nan or inf).")
    if theta.min() < 0:
        raise ValueError(
            f"source_probs must be probabilities (softmax of the source logits), got a negative value {theta.min()}."
        )
    sums = theta.sum(axis=1)
    bad = np.abs(sums - 1.0) > PROB_SUM_TOL
    if np.any(bad):
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"source_probs rows must sum to 1 (tolerance {PROB_SUM_TOL}); row {i} sums to {sums[i]:.6g}. "
            "Pass softmax probabilities of the source head, not logits (apply torch.softmax(logits, dim=1))."
        )
    classes, y_idx = np.unique(y, return_inverse=True)
    if classes.size < 2:
        raise ValueError(
            f"LEEP needs target labels of at least two classes, got only class {classes.tolist()} in {n} samples."
        )
    onehot = np.zeros((n, classes.size), dtype=np.float64)
    onehot[np.arange(n), y_idx] = 1.0
    joint = onehot.T @ theta / n  # (K, |Z|): P(y, z)
    marginal = joint.sum(axis=0, keepdims=True)  # (1, |Z|): P(z)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)  # P(y | z)
    # (n,): sum_z P(y_i | z) theta(x_i)_z; > 0 because theta(x_i)_z > 0 implies P(y_i | z) >= theta(x_i)_z / n > 0
    eep = np.sum(cond[y_idx] * theta, axis=1)
    return float(np.mean(np.log(eep)))


class LEEPMetric(CumulativeIterationMetric):
    """Cumulative LEEP metric in MONAI's metric pattern.

    Each call stores a batch of source-model probabilities and target labels; :meth:`aggregate` computes
    :func:`compute_leep` over everything stored (gathered across ranks in distributed runs).

    .. code-block:: python

        metric = LEEPMetric()
        for batch in loader:
            metric(y_pred=torch.softmax(source_net(batch["image"]), 1), y=batch["label"])
        score = metric.aggregate()
        metric.reset()

    Args:
        apply_softmax: apply a softmax over the channel dim of ``y_pred`` first (for logits). Default ``False``:
            ``y_pred`` must already be probabilities.
    """

    def __init__(self, apply_softmax: bool = False) -> None:
        super().__init__()
        self.apply_softmax = apply_softmax

    def _compute_tensor(  # type: ignore[override]
        self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if y is None:
            raise ValueError("LEEPMetric needs target labels y, got None.")
        if y_pred.ndim != 2:
            raise ValueError(f"y_pred must have shape (batch, num_source_classes), got {tuple(y_pred.shape)}.")
        probs = torch.softmax(y_pred.float(), dim=1) if self.apply_softmax else y_pred.float()
        idx = labels_to_indices(y, name="y")
        if idx.shape[0] != probs.shape[0]:
            raise ValueError(f"y_pred has {probs.shape[0]} rows but y has {idx.shape[0]} labels.")
        return probs, torch.as_tensor(idx, device=probs.device)

    def aggregate(self) -> float:  # type: ignore[override]
        """Return the LEEP of all stored samples.

        Raises:
            ValueError: when nothing was stored, or for the degenerate inputs listed in :func:`compute_leep`.
        """
        buf = self.get_buffer()
        if buf is None:
            raise ValueError("LEEPMetric.aggregate() called before any data was added.")
        probs, labels = buf
        return compute_leep(probs, labels)
