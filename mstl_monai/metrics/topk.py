# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Top-k accuracy of a many-class evaluator (STL-N's natural-image source, Table 1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import TopKCategoricalAccuracy

__all__ = ["TopKAccuracy", "pred_and_class_index", "bootstrap_topk_accuracy"]


def pred_and_class_index(output: Any, pred_key: str = "pred", label_key: str = "label") -> tuple[torch.Tensor, torch.Tensor]:
    """A MONAI engine's (decollated) output -> ``(scores (N, C), class indices (N,))``.

    Labels may be class indices or one-hot vectors (what ``AsDiscreted(to_onehot=...)`` makes).
    """
    items = output if isinstance(output, (list, tuple)) else [output]
    preds, labels = [], []
    for item in items:
        p, y = torch.as_tensor(item[pred_key]).reshape(-1), torch.as_tensor(item[label_key]).reshape(-1)
        preds.append(p.float())
        labels.append(y.argmax() if y.numel() > 1 else y[0].long())
    return torch.stack(preds), torch.stack(labels).long()


class TopKAccuracy(TopKCategoricalAccuracy):
    """Ignite's top-k accuracy reading a MONAI evaluator's decollated ``pred``/``label`` (one-hot or index) output."""

    def __init__(self, k: int = 1, output_transform: Callable | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(k=k, output_transform=output_transform or pred_and_class_index, device=device)


def bootstrap_topk_accuracy(
    labels: Sequence[int], scores: np.ndarray, ks: Sequence[int] = (1, 5), n_bootstrap: int = 1000, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Top-k accuracies with 95 % percentile-bootstrap intervals over images: ``{"top1": {"value", "low", "high"}}``."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    if s.ndim != 2 or len(y) != len(s):
        raise ValueError(f"scores must be (N, C) for N={len(y)} labels, got shape {s.shape}.")
    order = np.argsort(-s, axis=1)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y), size=(n_bootstrap, len(y)))
    out = {}
    for k in ks:
        hit = (order[:, :k] == y[:, None]).any(axis=1).astype(float)
        boot = hit[idx].mean(axis=1)
        out[f"top{k}"] = {"value": float(hit.mean()), "low": float(np.percentile(boot, 2.5)),
                          "high": float(np.percentile(boot, 97.5))}
    return out
