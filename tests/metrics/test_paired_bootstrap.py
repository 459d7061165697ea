"""Paired bootstrap of a metric difference between two models on the same test images."""

from __future__ import annotations

import unittest

import numpy as np

from mstl_monai.metrics import classification_metrics, paired_bootstrap_difference


class TestPairedBootstrap(unittest.TestCase):
    def setUp(self):
        rng = np.random.default_rng(1)
        self.y = rng.integers(0, 2, 120)
        noise = rng.normal(0, 0.25, 120)
        self.good = np.clip(0.5 + 0.35 * (2 * self.y - 1) + noise, 0, 1)  # mostly right
        self.bad = np.clip(0.5 + rng.normal(0, 0.25, 120), 0, 1)  # guesses

    def test_same_model_gives_zero(self):
        r = paired_bootstrap_difference(self.y, self.good, self.good, n_bootstrap=200)
        for k in ("accuracy", "f1", "auc"):
            self.assertEqual((r[k]["value"], r[k]["ci_low"], r[k]["ci_high"]), (0.0, 0.0, 0.0))
            self.assertEqual(r[k]["p_le_0"], 1.0)

    def test_better_model(self):
        r = paired_bootstrap_difference(self.y, self.good, self.bad, n_bootstrap=500)
        ma, mb = classification_metrics(self.y, self.good), classification_metrics(self.y, self.bad)
        for k in ("accuracy", "auc"):
            self.assertAlmostEqual(r[k]["value"], ma[k] - mb[k])
            self.assertGreater(r[k]["ci_low"], 0.0)
            self.assertLess(r[k]["p_le_0"], 0.025)
        flipped = paired_bootstrap_difference(self.y, self.bad, self.good, n_bootstrap=500)
        self.assertAlmostEqual(flipped["auc"]["ci_high"], -r["auc"]["ci_low"])

    def test_matches_a_loop(self):
        """The vectorised resampling equals scoring each resample of indices one by one."""
        n, b, seed = self.y.size, 50, 3
        r = paired_bootstrap_difference(self.y, self.good, self.bad, n_bootstrap=b, seed=seed)
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(b, n))
        diffs = []
        for i in idx:
            a = classification_metrics(self.y[i], self.good[i])["accuracy"]
            c = classification_metrics(self.y[i], self.bad[i])["accuracy"]
            diffs.append(a - c)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        self.assertAlmostEqual(r["accuracy"]["ci_low"], lo)
        self.assertAlmostEqual(r["accuracy"]["ci_high"], hi)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "120 labels but prob_pos has 119"):
            paired_bootstrap_difference(self.y, self.good, self.bad[:-1])
        with self.assertRaisesRegex(ValueError, "n_bootstrap"):
            paired_bootstrap_difference(self.y, self.good, self.bad, n_bootstrap=0)


if __name__ == "__main__":
    unittest.main()
