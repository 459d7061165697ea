# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import unittest

import numpy as np

from mstl_monai.metrics.multiclass import bootstrap_multiclass_metrics, multiclass_metrics, paired_bootstrap_multiclass


class TestMulticlassMetrics(unittest.TestCase):
    def test_hand_made(self):
        y = np.array([0, 0, 1, 1, 2, 2])
        p = np.array(
            [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [0.5, 0.1, 0.4]]
        )
        m = multiclass_metrics(y, p, ["a", "b", "c"])
        self.assertAlmostEqual(m["accuracy"], 4 / 6)
        # class a: tp 1 fp 1 fn 1 -> 0.5; b: tp 2 fp 1 fn 0 -> 0.8; c: tp 1 fp 0 fn 1 -> 2/3
        self.assertAlmostEqual(m["macro_f1"], (0.5 + 0.8 + 2 / 3) / 3)
        # AUC of a: positives scores 0.7, 0.3 vs negatives 0.1, 0.2, 0.1, 0.5 -> pairs won: 4 + 3 = 7 of 8
        self.assertAlmostEqual(m["auc_a"], 7 / 8)
        self.assertAlmostEqual(m["auc_c"], 1.0)  # 0.8, 0.4 above 0.1, 0.1, 0.1, 0.3
        ties = multiclass_metrics(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]]))
        self.assertAlmostEqual(ties["auc_0"], 0.5)

    def test_bootstrap_intervals_cover_value_and_pairing(self):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 3, 200)
        p = rng.dirichlet([1, 1, 1], 200)
        p[np.arange(200), y] += 0.5
        p /= p.sum(1, keepdims=True)
        b = bootstrap_multiclass_metrics(y, p, ["n", "p", "c"], n_bootstrap=200, seed=1)
        for k in ("accuracy", "macro_f1", "auc_n", "auc_p", "auc_c"):
            self.assertLessEqual(b[k]["ci_low"], b[k]["value"])
            self.assertGreaterEqual(b[k]["ci_high"], b[k]["value"])
        same = paired_bootstrap_multiclass(y, p, p, ["n", "p", "c"], n_bootstrap=50)
        self.assertEqual(same["accuracy"]["difference"], 0.0)
        self.assertEqual((same["auc_c"]["ci_low"], same["auc_c"]["ci_high"]), (0.0, 0.0))
        with self.assertRaisesRegex(ValueError, "labels"):
            multiclass_metrics(np.array([0, 3]), np.ones((2, 3)) / 3)


if __name__ == "__main__":
    unittest.main()
