# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import numpy as np
import pytest
import torch

from mstl_monai.metrics import (
    apply_temperature,
    binary_roc_auc,
    calibrated_softmax,
    classification_metrics,
    expected_calibration_error,
    fit_temperature,
    sensitivity_threshold,
)


def _overconfident(n=4000, true_t=3.0, seed=0):
    """Labels drawn from sigmoid(z), reported as sigmoid(z * true_t): probabilities true_t times too confident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(np.int64)
    return y, 1 / (1 + np.exp(-z * true_t))


def test_fit_temperature_recovers_the_overconfidence():
    y, p = _overconfident()
    t = fit_temperature(y, p)
    assert t == pytest.approx(3.0, rel=0.1)
    q = apply_temperature(p, t)
    assert expected_calibration_error(y, q) < 0.5 * expected_calibration_error(y, p)
    assert binary_roc_auc(y, q) == pytest.approx(binary_roc_auc(y, p))  # one parameter: the ranking stays


def test_apply_temperature_equals_the_softmax_of_scaled_logits():
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-4.0, 5.0]])
    probs = torch.softmax(logits, 1).numpy()
    for t in (0.5, 1.0, 2.5):
        want = torch.stack([calibrated_softmax(z, t) for z in logits]).numpy()
        np.testing.assert_allclose(apply_temperature(probs, t), want, atol=1e-6)
        np.testing.assert_allclose(apply_temperature(probs[:, 1], t), want[:, 1], atol=1e-5)  # 1 - p in float32


def test_ece_of_perfect_and_wrong_predictions():
    y = np.array([0, 1, 1, 0])
    assert expected_calibration_error(y, np.array([0.0, 1.0, 1.0, 0.0])) == pytest.approx(0.0, abs=1e-6)
    assert expected_calibration_error(y, np.array([1.0, 0.0, 0.0, 1.0])) == pytest.approx(1.0, abs=1e-6)


def test_sensitivity_threshold_is_the_most_specific_point_reaching_the_sensitivity():
    y, p = _overconfident(n=500, seed=1)
    t = sensitivity_threshold(y, p, 0.9)
    sens = classification_metrics(y, p, threshold=t)["sensitivity"]
    assert sens >= 0.9
    higher = np.unique(p)[np.unique(p) > t]
    assert classification_metrics(y, p, threshold=float(higher[0]))["sensitivity"] < 0.9
    assert sensitivity_threshold([1, 1], [0.2, 0.3]) is None
    with pytest.raises(ValueError, match="min_sensitivity"):
        sensitivity_threshold(y, p, 1.5)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature([0.2, 0.8], 0.0)
    with pytest.raises(ValueError, match="finite"):
        fit_temperature([0, 1], [0.2, float("nan")])
    with pytest.raises(ValueError, match="class indices"):
        fit_temperature([0, 2], [0.2, 0.4])
