# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of compute_leep and LEEPMetric."""

from __future__ import annotations

import math
import unittest

import numpy as np
import torch
from parameterized import parameterized

from mstl_monai.metrics import LEEPMetric, compute_leep

# Hand-worked example: n = 4 images, source label set Z = {z0, z1}, target labels y = [0, 0, 1, 1].
#   theta = [[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]]
# Joint P(y, z) = (1/4) * sum of theta rows with that y:
#   P(0, .) = (0.8 + 0.6, 0.2 + 0.4) / 4 = (0.35, 0.15)
#   P(1, .) = (0.3 + 0.1, 0.7 + 0.9) / 4 = (0.10, 0.40)
# Marginal P(z) = (0.45, 0.55). Conditional P(y | z) = P(y, z) / P(z):
#   P(0 | z) = (0.35 / 0.45, 0.15 / 0.55) = (7/9, 3/11)
#   P(1 | z) = (0.10 / 0.45, 0.40 / 0.55) = (2/9, 8/11)
# Expected empirical prediction of each image's own label, sum_z P(y_i | z) theta_iz:
#   i=1: 0.8 * 7/9 + 0.2 * 3/11 = 28/45 + 3/55 = (308 + 27) / 495 = 67/99
#   i=2: 0.6 * 7/9 + 0.4 * 3/11 = 7/15 + 6/55 = (77 + 18) / 165 = 19/33 = 57/99
#   i=3: 0.3 * 2/9 + 0.7 * 8/11 = 1/15 + 28/55 = (11 + 84) / 165 = 19/33 = 57/99
#   i=4: 0.1 * 2/9 + 0.9 * 8/11 = 1/45 + 36/55 = (11 + 324) / 495 = 67/99
# LEEP = (1/4) * (2 log(67/99) + 2 log(57/99)) = (log(67/99) + log(57/99)) / 2 ~= -0.471248
HAND_THETA = [[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.1, 0.9]]
HAND_Y = [0, 0, 1, 1]
HAND_LEEP = 0.5 * (math.log(67 / 99) + math.log(57 / 99))


def naive_leep(theta: np.ndarray, y: np.ndarray) -> float:
    """Eq. 7 written with explicit loops, as a reference."""
    n, nz = theta.shape
    labels = sorted(set(y.tolist()))
    joint = {(yy, z): sum(theta[i, z] for i in range(n) if y[i] == yy) / n for yy in labels for z in range(nz)}
    total = 0.0
    for i in range(n):
        eep = 0.0
        for z in range(nz):
            pz = sum(joint[(yy, z)] for yy in labels)
            eep += joint[(y[i], z)] / pz * theta[i, z]
        total += math.log(eep)
    return total / n


def random_case(seed: int, n: int = 40, nz: int = 7, k: int = 3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, nz)) * 2
    theta = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, k, size=n)
    y[:k] = np.arange(k)  # every class present
    return theta, y


class TestComputeLEEP(unittest.TestCase):
    @parameterized.expand(
        [
            ("numpy", np.asarray(HAND_THETA), np.asarray(HAND_Y)),
            ("torch", torch.tensor(HAND_THETA), torch.tensor(HAND_Y)),
            ("torch_f32_col", torch.tensor(HAND_THETA, dtype=torch.float32), torch.tensor([[0.0], [0], [1], [1]])),
            ("one_hot", np.asarray(HAND_THETA), np.eye(2)[HAND_Y]),
            ("lists", HAND_THETA, HAND_Y),
        ]
    )
    def test_hand_example(self, _, theta, y):
        self.assertAlmostEqual(compute_leep(theta, y), HAND_LEEP, places=6)
        self.assertAlmostEqual(HAND_LEEP, -0.471248, places=6)

    @parameterized.expand([(0,), (1,), (2,)])
    def test_matches_naive_loops(self, seed):
        theta, y = random_case(seed)
        self.assertAlmostEqual(compute_leep(theta, y), naive_leep(theta, y), places=10)

    def test_constant_source_gives_negative_label_entropy(self):
        # theta the same for every image => P(y | z) = P(y) => LEEP = sum_y P(y) log P(y)
        y = np.array([0] * 6 + [1] * 3 + [2] * 1)
        theta = np.tile([[0.2, 0.5, 0.3]], (10, 1))
        prior = np.array([0.6, 0.3, 0.1])
        self.assertAlmostEqual(compute_leep(theta, y), float(np.sum(prior * np.log(prior))), places=12)

    def test_perfect_source_is_zero(self):
        # one-hot source predictions that determine the target label (z0 -> y0; z1, z2 -> y1): LEEP = log 1 = 0
        theta = np.eye(3)[[0, 1, 2, 0, 2]]
        y = np.array([0, 1, 1, 0, 1])
        self.assertAlmostEqual(compute_leep(theta, y), 0.0, places=12)

    def test_better_source_scores_higher_and_invariances(self):
        theta, y = random_case(3, n=60, nz=5, k=2)
        informative = 0.5 * theta + 0.5 * np.eye(5)[y]  # predictions that carry the target label
        self.assertGreater(compute_leep(informative, y), compute_leep(theta, y))
        perm = np.random.default_rng(0).permutation(len(y))
        self.assertAlmostEqual(compute_leep(theta[perm], y[perm]), compute_leep(theta, y), places=12)
        # label values only name the classes: {0, 1} and {3, 7} give the same LEEP
        self.assertAlmostEqual(compute_leep(theta, np.where(y == 0, 3, 7)), compute_leep(theta, y), places=12)
        self.assertLessEqual(compute_leep(theta, y), 0.0)

    @parameterized.expand(
        [
            ("empty", np.zeros((0, 3)), np.zeros(0, dtype=int), "empty"),
            ("one_class", np.asarray(HAND_THETA), [1, 1, 1, 1], "two classes"),
            ("logits", np.asarray(HAND_THETA) * 3, HAND_Y, "softmax"),
            ("negative_prob", np.array([[1.2, -0.2], [0.5, 0.5]]), [0, 1], "negative"),
            ("length_mismatch", np.asarray(HAND_THETA), [0, 1, 1], "same samples"),
            ("negative_label", np.asarray(HAND_THETA), [0, -1, 1, 1], "non-negative"),
            ("fractional_label", np.asarray(HAND_THETA), [0, 0.5, 1, 1], "integer"),
            ("1d_probs", np.array([0.2, 0.3]), [0, 1], "shape"),
            ("bad_one_hot", np.asarray(HAND_THETA), np.array([[1, 0], [1, 1], [0, 1], [0, 1]]), "one-hot"),
            ("nan", np.array([[np.nan, 1.0], [0.5, 0.5]]), [0, 1], "non-finite"),
        ]
    )
    def test_degenerate_input(self, _, theta, y, message):
        with self.assertRaises(ValueError) as ctx:
            compute_leep(theta, y)
        self.assertIn(message, str(ctx.exception))


class TestLEEPMetric(unittest.TestCase):
    def test_accumulates_batches(self):
        theta, y = random_case(5, n=30)
        metric = LEEPMetric()
        for start in range(0, 30, 8):
            metric(y_pred=torch.tensor(theta[start : start + 8]), y=torch.tensor(y[start : start + 8]))
        self.assertAlmostEqual(metric.aggregate(), compute_leep(theta, y), places=5)
        metric.reset()
        with self.assertRaises(ValueError):
            metric.aggregate()

    def test_list_of_channel_first_and_one_hot(self):
        theta, y = random_case(6, n=12, k=2)
        metric = LEEPMetric()
        metric(y_pred=[torch.tensor(t) for t in theta], y=[torch.tensor(np.eye(2)[v]) for v in y])
        self.assertAlmostEqual(metric.aggregate(), compute_leep(theta, y), places=5)

    def test_apply_softmax(self):
        logits = torch.randn(20, 4, generator=torch.Generator().manual_seed(0))
        y = torch.arange(20) % 2
        metric = LEEPMetric(apply_softmax=True)
        metric(y_pred=logits, y=y)
        self.assertAlmostEqual(metric.aggregate(), compute_leep(torch.softmax(logits, 1), y), places=5)
        raw = LEEPMetric()
        raw(y_pred=logits, y=y)
        with self.assertRaisesRegex(ValueError, "softmax"):
            raw.aggregate()

    def test_bad_shapes(self):
        with self.assertRaises(ValueError):
            LEEPMetric()(y_pred=torch.rand(4, 3, 2), y=torch.zeros(4))
        with self.assertRaises(ValueError):
            LEEPMetric()(y_pred=torch.rand(4, 3), y=torch.zeros(5))


if __name__ == "__main__":
    unittest.main()
