# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of classification_metrics, binary_roc_auc and bootstrap_classification_metrics."""

from __future__ import annotations

import math
import time
import unittest

import numpy as np
import torch
from monai.metrics import compute_roc_auc
from parameterized import parameterized

from mstl_monai.metrics import binary_roc_auc, bootstrap_classification_metrics, classification_metrics
from mstl_monai.metrics.classification import _metrics_from_counts

# Hand example, 8 images, threshold 0.5 (predicted COVID when p > 0.5):
#   y = [1,   1,   1,   1,   0,   0,   0,   0  ]
#   p = [0.9, 0.7, 0.5, 0.2, 0.6, 0.4, 0.1, 0.3]
#   pred = [1, 1, 0 (0.5 is not > 0.5), 0, 1, 0, 0, 0]
#   TP = 2, FN = 2, FP = 1, TN = 3
#   accuracy = 5/8; sensitivity = 2/4; specificity = 3/4; precision = 2/3; F1 = 2*2 / (2*2 + 1 + 2) = 4/7
#   AUC: positives {0.9, 0.7, 0.5, 0.2} vs negatives {0.6, 0.4, 0.1, 0.3}, count pos > neg:
#     0.9 -> 4, 0.7 -> 4, 0.5 -> 3 (0.4, 0.1, 0.3), 0.2 -> 1 (0.1)  => 12 of 16 pairs => 0.75
HAND_Y = [1, 1, 1, 1, 0, 0, 0, 0]
HAND_P = [0.9, 0.7, 0.5, 0.2, 0.6, 0.4, 0.1, 0.3]
HAND = {
    "accuracy": 5 / 8,
    "sensitivity": 0.5,
    "specificity": 0.75,
    "precision": 2 / 3,
    "f1": 4 / 7,
    "auc": 0.75,
    "n": 8,
    "tp": 2,
    "fn": 2,
    "fp": 1,
    "tn": 3,
}


def random_scores(seed: int, n: int = 203, decimals: int | None = 2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + 0.65 * rng.random(n), 0, 1)
    return y, (np.round(p, decimals) if decimals is not None else p)  # rounding makes ties


class TestClassificationMetrics(unittest.TestCase):
    @parameterized.expand(
        [
            ("lists", HAND_Y, HAND_P),
            ("torch", torch.tensor(HAND_Y), torch.tensor(HAND_P)),
            ("softmax_pairs", np.array(HAND_Y), np.stack([1 - np.array(HAND_P), np.array(HAND_P)], 1)),
            ("one_hot_labels", np.eye(2)[HAND_Y], np.array(HAND_P)),
        ]
    )
    def test_hand_example(self, _, y, p):
        m = classification_metrics(y, p)
        for k, v in HAND.items():
            self.assertAlmostEqual(m[k], v, places=6, msg=k)
        self.assertIsInstance(m["n"], int)

    def test_auc_ties(self):
        # pos {0.5, 0.8}, neg {0.5, 0.2}: pairs (0.5,0.5)=1/2, (0.5,0.2)=1, (0.8,0.5)=1, (0.8,0.2)=1 => 3.5/4
        self.assertAlmostEqual(binary_roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.8]), 0.875)
        self.assertAlmostEqual(binary_roc_auc([0, 1], [0.3, 0.3]), 0.5)

    @parameterized.expand([(0, 2), (1, 1), (2, None)])
    def test_auc_matches_monai(self, seed, decimals):
        y, p = random_scores(seed, decimals=decimals)
        expected = float(compute_roc_auc(torch.tensor(p), torch.tensor(y)))
        self.assertAlmostEqual(binary_roc_auc(y, p), expected, places=10)

    def test_threshold(self):
        # p == threshold is negative (argmax of a 2-class softmax gives class 0 on a tie)
        self.assertEqual(classification_metrics([1, 0], [0.5, 0.2])["tp"], 0)
        m = classification_metrics(HAND_Y, HAND_P, threshold=0.45)  # now 0.5 -> positive
        self.assertEqual((m["tp"], m["fp"]), (3, 1))

    def test_single_class_gives_nan(self):
        m = classification_metrics([1, 1, 1], [0.9, 0.2, 0.7])
        self.assertTrue(math.isnan(m["auc"]))
        self.assertTrue(math.isnan(m["specificity"]))
        self.assertAlmostEqual(m["sensitivity"], 2 / 3)
        with self.assertRaisesRegex(ValueError, "both classes"):
            binary_roc_auc([1, 1, 1], [0.9, 0.2, 0.7])

    @parameterized.expand(
        [
            ("label_2", [0, 2], [0.1, 0.2], "binary"),
            ("prob_above_1", [0, 1], [0.1, 1.2], "softmax"),
            ("mismatch", [0, 1, 1], [0.1, 0.2], "labels"),
            ("empty", [], [], "empty"),
            ("three_columns", [0, 1], np.full((2, 3), 1 / 3), "shape"),
            ("nan", [0, 1], [np.nan, 0.2], "non-finite"),
        ]
    )
    def test_bad_input(self, _, y, p, message):
        with self.assertRaisesRegex(ValueError, message):
            classification_metrics(y, p)

    def test_weighted_counts_equal_repeated_samples(self):
        y, p = random_scores(4, n=30)
        counts = np.random.default_rng(1).integers(0, 4, size=(6, 30))
        counts[:, 0] += 1  # no all-zero row
        res = _metrics_from_counts(counts, y, p, 0.5)
        for b in range(6):
            idx = np.repeat(np.arange(30), counts[b])
            expected = classification_metrics(y[idx], p[idx])
            for k in ("accuracy", "f1", "auc", "sensitivity", "specificity", "precision", "tp", "n"):
                if math.isnan(expected[k]):
                    self.assertTrue(math.isnan(res[k][b]), k)
                else:
                    self.assertAlmostEqual(res[k][b], expected[k], places=10, msg=k)


class TestBootstrap(unittest.TestCase):
    def test_matches_explicit_resampling(self):
        y, p = random_scores(7, n=50)
        out = bootstrap_classification_metrics(y, p, n_bootstrap=200, seed=3, ci=0.9)
        # the documented draw: one (n_bootstrap, n) integers() call of default_rng(seed) for small problems
        idx = np.random.default_rng(3).integers(0, 50, size=(200, 50))
        per = [classification_metrics(y[i], p[i]) for i in idx]
        for k in ("accuracy", "f1", "auc", "sensitivity", "specificity", "precision"):
            vals = np.array([m[k] for m in per])
            vals = vals[np.isfinite(vals)]
            lo, hi = np.percentile(vals, [5, 95])
            self.assertAlmostEqual(out[k]["ci_low"], lo, places=10, msg=k)
            self.assertAlmostEqual(out[k]["ci_high"], hi, places=10, msg=k)
            self.assertAlmostEqual(out[k]["value"], classification_metrics(y, p)[k], places=12)
            self.assertLessEqual(out[k]["ci_low"], out[k]["ci_high"])
        self.assertEqual(out["n"], 50)
        self.assertEqual(out["bootstrap"]["n_bootstrap"], 200)

    def test_reproducible_and_seeded(self):
        y, p = random_scores(8)
        a = bootstrap_classification_metrics(y, p, n_bootstrap=300, seed=0)
        b = bootstrap_classification_metrics(y, p, n_bootstrap=300, seed=0)
        c = bootstrap_classification_metrics(y, p, n_bootstrap=300, seed=1)
        self.assertEqual(a, b)
        self.assertNotEqual(a["auc"], c["auc"])
        self.assertEqual(a["auc"]["value"], c["auc"]["value"])
        for k in ("accuracy", "auc", "f1"):
            self.assertLess(a[k]["ci_low"], a[k]["value"])
            self.assertGreater(a[k]["ci_high"], a[k]["value"])

    def test_single_class_resamples_are_skipped_and_counted(self):
        y = np.array([1, 0, 0, 0, 0])
        p = np.array([0.9, 0.1, 0.6, 0.3, 0.2])
        out = bootstrap_classification_metrics(y, p, n_bootstrap=500, seed=0)
        idx = np.random.default_rng(0).integers(0, 5, size=(500, 5))
        n_single = int(np.sum(y[idx].sum(1) == 0))  # (1 - 1/5)^5 ~ 33% of resamples lack the positive
        self.assertGreater(n_single, 100)
        self.assertEqual(out["bootstrap"]["n_single_class"], n_single)
        self.assertEqual(out["bootstrap"]["n_valid"]["auc"], 500 - n_single)
        self.assertEqual(out["bootstrap"]["n_valid"]["accuracy"], 500)
        for k in ("auc", "sensitivity", "specificity"):
            self.assertTrue(np.isfinite(out[k]["ci_low"]), k)

    def test_speed_203_images(self):
        y, p = random_scores(9, n=203)
        start = time.perf_counter()
        bootstrap_classification_metrics(y, p, n_bootstrap=1000, seed=0)
        self.assertLess(time.perf_counter() - start, 1.0)

    def test_chunked_draws_cover_all_resamples(self):
        # many images force several chunks; every resample must still be used
        from mstl_monai.metrics import bootstrap as mod

        y, p = random_scores(10, n=40)
        old = mod._MAX_CHUNK_ELEMENTS
        try:
            mod._MAX_CHUNK_ELEMENTS = 40 * 7  # 7 resamples per chunk
            out = bootstrap_classification_metrics(y, p, n_bootstrap=50, seed=0)
        finally:
            mod._MAX_CHUNK_ELEMENTS = old
        self.assertEqual(out["bootstrap"]["n_valid"]["accuracy"], 50)

    @parameterized.expand([({"n_bootstrap": 0},), ({"n_bootstrap": 2.5},), ({"ci": 1.0},), ({"ci": 0.0},)])
    def test_bad_arguments(self, kwargs):
        with self.assertRaises(ValueError):
            bootstrap_classification_metrics(HAND_Y, HAND_P, **kwargs)


if __name__ == "__main__":
    unittest.main()
