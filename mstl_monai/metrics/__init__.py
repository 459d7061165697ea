# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.metrics: LEEP transferability, binary classification metrics, their bootstrap CIs, ROC, report writers."""

from __future__ import annotations

from .bootstrap import bootstrap_classification_metrics, paired_bootstrap_difference, seed_bootstrap_metrics
from .calibration import (
    OPERATING_POINTS,
    apply_temperature,
    calibrated_softmax,
    expected_calibration_error,
    fit_temperature,
    sensitivity_threshold,
)
from .classification import (
    METRIC_NAMES,
    binary_roc_auc,
    classification_metrics,
    roc_curve_points,
    thresholded_class,
    thresholded_index,
    youden_threshold,
)
from .io import read_predictions_csv, write_metrics_json, write_predictions_csv
from .leep import LEEPMetric, compute_leep, labels_to_indices
from .leep_handler import LEEP
from .plots import save_roc_curve
from .seeds import seed_paired_difference
from .selection import GuardedROCAUC, GuardedROCAUCMetric, predicted_class_fractions
from .topk import TopKAccuracy, bootstrap_topk_accuracy, pred_and_class_index

__all__ = [
    "OPERATING_POINTS",
    "apply_temperature",
    "calibrated_softmax",
    "expected_calibration_error",
    "fit_temperature",
    "sensitivity_threshold",
    "GuardedROCAUC",
    "GuardedROCAUCMetric",
    "LEEP",
    "LEEPMetric",
    "METRIC_NAMES",
    "TopKAccuracy",
    "binary_roc_auc",
    "bootstrap_topk_accuracy",
    "bootstrap_classification_metrics",
    "classification_metrics",
    "compute_leep",
    "labels_to_indices",
    "paired_bootstrap_difference",
    "pred_and_class_index",
    "predicted_class_fractions",
    "read_predictions_csv",
    "roc_curve_points",
    "save_roc_curve",
    "seed_bootstrap_metrics",
    "seed_paired_difference",
    "thresholded_class",
    "thresholded_index",
    "write_metrics_json",
    "write_predictions_csv",
    "youden_threshold",
]


def __getattr__(name: str):
    """``atomic_write`` and ``to_jsonable`` moved to :mod:`mstl_monai.utils.io`: the old names warn, one release."""
    if name in ("atomic_write", "to_jsonable"):
        from . import io

        return getattr(io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
