# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""A ROC AUC for choosing checkpoints that cannot pick a model predicting (almost) one class.

AUC only ranks the images. A model can rank them well and still send nearly all of them to one class at the
decision threshold. On the CPU-scale +5-from-scratch run, epoch 8 had val AUC 0.79 but called every image
non-COVID, and selection by plain AUC chose it (test F1 0). :class:`GuardedROCAUC` reports AUC − 1 for such
epochs, so any epoch that predicts every class for at least ``min_class_fraction`` of the validation images
ranks above them. If every epoch is collapsed, the order among them is still by AUC.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.handlers.utils import from_engine
from monai.metrics import ROCAUCMetric

__all__ = ["GuardedROCAUC", "GuardedROCAUCMetric", "predicted_class_fractions"]

logger = logging.getLogger(__name__)


def predicted_class_fractions(y_pred: torch.Tensor) -> torch.Tensor:
    """Share of the rows of ``y_pred`` ``(N, C)`` (scores or probabilities) whose argmax is each class."""
    if y_pred.ndim != 2 or y_pred.shape[0] == 0:
        raise ValueError(f"expected scores of shape (N, C) with N > 0, got {tuple(y_pred.shape)}.")
    counts = torch.bincount(y_pred.argmax(dim=1), minlength=y_pred.shape[1])
    return counts.float() / y_pred.shape[0]


class GuardedROCAUCMetric(ROCAUCMetric):
    """:class:`monai.metrics.ROCAUCMetric` that returns ``AUC - 1`` when a class is (almost) never predicted.

    Args:
        min_class_fraction: each class must be the argmax of at least this share of the rows; ``0`` turns the
            guard off (plain AUC).
        average: as for :class:`~monai.metrics.ROCAUCMetric`.
    """

    def __init__(self, min_class_fraction: float = 0.1, average: str = "macro") -> None:
        if not 0.0 <= float(min_class_fraction) < 1.0:
            raise ValueError(f"min_class_fraction must be in [0, 1), got {min_class_fraction}.")
        super().__init__(average=average)
        self.min_class_fraction = float(min_class_fraction)
        self.last_fractions: list[float] | None = None

    def aggregate(self, average=None):  # type: ignore[override]
        auc = super().aggregate(average)
        if self.min_class_fraction <= 0:
            return auc
        y_pred, _ = self.get_buffer()
        fractions = predicted_class_fractions(torch.as_tensor(y_pred))
        self.last_fractions = [round(float(f), 4) for f in fractions]
        if float(fractions.min()) < self.min_class_fraction:
            worst = int(fractions.argmin())
            logger.warning(
                f"class {worst} is predicted for {100 * float(fractions[worst]):.1f}% of the validation images "
                f"(< {100 * self.min_class_fraction:.0f}%): AUC {float(auc):.4f}, checkpoint-selection score "
                f"AUC - 1 = {float(auc) - 1:.4f} so that this epoch is not chosen as the best checkpoint."
            )
            return auc - 1.0
        return auc


class GuardedROCAUC(IgniteMetricHandler):
    """Ignite handler for :class:`GuardedROCAUCMetric`, a drop-in for ``monai.handlers.ROCAUC`` as a key metric.

    .. code-block:: yaml

        key_metric:
          val_score:
            _target_: mstl_monai.metrics.GuardedROCAUC
            min_class_fraction: 0.1
            output_transform: "$monai.handlers.from_engine(['pred', 'label'])"

    Args:
        min_class_fraction: see :class:`GuardedROCAUCMetric` (``0``: plain ROC AUC).
        average: see :class:`~monai.metrics.ROCAUCMetric`.
        output_transform: extracts ``(pred, label)`` from ``engine.state.output`` (default ``pred``, ``label``).
    """

    def __init__(
        self, min_class_fraction: float = 0.1, average: str = "macro", output_transform: Callable | None = None
    ) -> None:
        super().__init__(
            metric_fn=GuardedROCAUCMetric(min_class_fraction=min_class_fraction, average=average),
            output_transform=output_transform or from_engine(["pred", "label"]),
            save_details=False,
        )
