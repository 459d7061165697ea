"""Paired comparison of two models over seeds: the two-level bootstrap (test images paired, seeds per arm)."""

from __future__ import annotations

import unittest

import numpy as np
import torch

from mstl_monai.metrics import METRIC_NAMES, classification_metrics, paired_bootstrap_difference, seed_paired_difference


def _model(y: np.ndarray, strength: float, rng: np.random.Generator, noise: float = 0.25) -> np.ndarray:
    """Probabilities of class 1 that lean towards the label by ``strength`` (0: guesses)."""
    return np.clip(0.5 + strength * (2 * y - 1) + rng.normal(0, noise, y.size), 0, 1)


class TestSeedPairedDifference(unittest.TestCase):
    def setUp(self):
        self.rng = np.random.default_rng(4)
        self.y = self.rng.integers(0, 2, 150)
        self.good = np.stack([_model(self.y, 0.3, self.rng) for _ in range(3)])
        self.bad = np.stack([_model(self.y, 0.02, self.rng) for _ in range(3)])

    def assert_same(self, r, ref, keys=("value", "ci_low", "ci_high", "p_le_0")):
        for m in METRIC_NAMES:
            for k in keys:
                np.testing.assert_allclose(r[m][k], ref[m][k], rtol=0, atol=1e-12, err_msg=f"{m} {k}")

    def test_one_seed_equals_paired_bootstrap(self):
        for seed in (0, 7):
            ref = paired_bootstrap_difference(self.y, self.good[0], self.bad[1], n_bootstrap=300, seed=seed)
            r = seed_paired_difference(self.y, self.good[:1], self.bad[1], n_bootstrap=300, seed=seed)
            self.assert_same(r, ref)
            self.assertEqual(r["n_seeds"], [1, 1])
            self.assertEqual(r["bootstrap"]["n_valid"], ref["bootstrap"]["n_valid"])
            self.assertAlmostEqual(r["accuracy"]["a"], classification_metrics(self.y, self.good[0])["accuracy"])
        # at another threshold, with torch inputs, and for the ensemble of several seeds
        ref = paired_bootstrap_difference(self.y, self.good[2], self.bad[0], n_bootstrap=200, seed=3, threshold=0.3)
        y, good = torch.as_tensor(self.y), torch.as_tensor(self.good[2:])
        r = seed_paired_difference(y, good, self.bad[:1], n_bootstrap=200, seed=3, threshold=0.3)
        self.assert_same(r, ref)
        ens = paired_bootstrap_difference(self.y, self.good.mean(0), self.bad.mean(0), n_bootstrap=200, seed=3)
        self.assert_same(seed_paired_difference(self.y, self.good, self.bad, n_bootstrap=200, seed=3)["ensemble"], ens)

    def test_value_is_difference_of_seed_means(self):
        r = seed_paired_difference(self.y, self.good, self.bad[:2], n_bootstrap=50)
        self.assertEqual(r["n_seeds"], [3, 2])
        for m in ("accuracy", "f1", "auc", "sensitivity"):
            a = np.mean([classification_metrics(self.y, p)[m] for p in self.good])
            b = np.mean([classification_metrics(self.y, p)[m] for p in self.bad[:2]])
            self.assertAlmostEqual(r[m]["a"], a)
            self.assertAlmostEqual(r[m]["b"], b)
            self.assertAlmostEqual(r[m]["value"], a - b)

    def test_matches_a_loop(self):
        """The vectorised resampling equals drawing images, then each arm's seeds, and scoring one by one."""
        n, nb, seed = self.y.size, 40, 5
        pb = self.bad[:2]
        r = seed_paired_difference(self.y, self.good, pb, n_bootstrap=nb, seed=seed)
        idx = np.random.default_rng(seed).integers(0, n, size=(nb, n))
        seed_rng = np.random.default_rng(seed + 1)
        drawn_a, drawn_b = seed_rng.integers(0, 3, size=(nb, 3)), seed_rng.integers(0, 2, size=(nb, 2))
        diffs = []
        for i, da, db in zip(idx, drawn_a, drawn_b):
            a = np.mean([classification_metrics(self.y[i], self.good[k][i])["auc"] for k in da])
            b = np.mean([classification_metrics(self.y[i], pb[k][i])["auc"] for k in db])
            diffs.append(a - b)
        lo, hi = np.percentile(diffs, [2.5, 97.5])
        self.assertAlmostEqual(r["auc"]["ci_low"], lo)
        self.assertAlmostEqual(r["auc"]["ci_high"], hi)
        self.assertAlmostEqual(r["auc"]["p_le_0"], float(np.mean(np.array(diffs) <= 0)))

    def test_better_arm(self):
        r = seed_paired_difference(self.y, self.good, self.bad, n_bootstrap=500)
        for m in ("accuracy", "auc", "f1"):
            self.assertGreater(r[m]["value"], 0.1)
            self.assertGreater(r[m]["ci_low"], 0.0, m)
            self.assertLess(r[m]["p_le_0"], 0.025)
            self.assertGreater(r["ensemble"][m]["ci_low"], 0.0, m)
        flipped = seed_paired_difference(self.y, self.bad, self.good, n_bootstrap=500)
        self.assertAlmostEqual(flipped["auc"]["value"], -r["auc"]["value"])
        self.assertGreater(flipped["auc"]["p_le_0"], 0.975)

    def test_identical_arms(self):
        r = seed_paired_difference(self.y, self.good, self.good, n_bootstrap=500)
        for m in ("accuracy", "f1", "auc"):
            self.assertEqual(r[m]["value"], 0.0)
            self.assertEqual(r["ensemble"][m]["value"], 0.0)
            self.assertEqual((r["ensemble"][m]["ci_low"], r["ensemble"][m]["ci_high"]), (0.0, 0.0))
            # the seeds are drawn per arm: the interval spans 0 by what the seeds disagree
            self.assertLess(r[m]["ci_low"], 0.0)
            self.assertGreater(r[m]["ci_high"], 0.0)
            self.assertAlmostEqual(r[m]["ci_low"], -r[m]["ci_high"], delta=0.02)
        # seeds that agree (one model copied) give the one-model answer: exactly 0
        same = np.repeat(self.good[:1], 3, axis=0)
        r = seed_paired_difference(self.y, same, same, n_bootstrap=200)
        self.assertEqual((r["auc"]["value"], r["auc"]["ci_low"], r["auc"]["ci_high"]), (0.0, 0.0, 0.0))

    def test_seed_disagreement_widens_the_ci(self):
        one = _model(self.y, 0.25, self.rng)
        agree = np.repeat(one[None], 3, axis=0)  # three seeds, one model
        disagree = np.stack([_model(self.y, s, self.rng) for s in (0.05, 0.25, 0.45)])  # three seeds, three models
        base = self.bad[0]
        ref = seed_paired_difference(self.y, one, base, n_bootstrap=500)
        copies = seed_paired_difference(self.y, agree, base, n_bootstrap=500)
        spread = seed_paired_difference(self.y, disagree, base, n_bootstrap=500)
        for m in ("accuracy", "auc"):
            width = ref[m]["ci_high"] - ref[m]["ci_low"]
            # copies of one seed: exactly the one-seed interval (the seed draws change nothing)
            self.assertAlmostEqual(copies[m]["ci_high"] - copies[m]["ci_low"], width)
            self.assertGreater(spread[m]["ci_high"] - spread[m]["ci_low"], 1.3 * width, m)

    def test_undefined_resamples_are_skipped(self):
        y = np.array([0, 0, 0, 1])  # many resamples hold no positive: no AUC there
        r = seed_paired_difference(y, [[0.1, 0.2, 0.3, 0.9]], [[0.1, 0.6, 0.3, 0.4]], n_bootstrap=200)
        self.assertLess(r["bootstrap"]["n_valid"]["auc"], 200)
        self.assertEqual(r["bootstrap"]["n_valid"]["accuracy"], 200)
        self.assertTrue(np.isfinite(r["auc"]["ci_low"]))

    def test_bad_input(self):
        y, a, b = self.y, self.good, self.bad
        with self.assertRaisesRegex(ValueError, "probs_b has 149 values per seed but y_true has 150 labels"):
            seed_paired_difference(y, a, b[:, :-1])
        with self.assertRaisesRegex(ValueError, r"probs_a must have shape \(n_seeds, n\) or \(n,\), got \(1, 1, 150\)"):
            seed_paired_difference(y, a[None, :1], b)
        with self.assertRaisesRegex(ValueError, r"probs_a must have shape .* got \(0, 150\)"):
            seed_paired_difference(y, a[:0], b)
        with self.assertRaisesRegex(ValueError, "y_true must be binary .* got the class 2"):
            seed_paired_difference(np.where(y == 1, 2, 0), a, b)
        with self.assertRaisesRegex(ValueError, "empty y_true"):
            seed_paired_difference([], np.zeros((2, 0)), np.zeros((2, 0)))
        with self.assertRaisesRegex(ValueError, r"probs_b must be probabilities .* \[0, 1\]"):
            seed_paired_difference(y, a, b * 3 - 1)
        with self.assertRaisesRegex(ValueError, "probs_a holds non-finite"):
            seed_paired_difference(y, np.where(a > 0.9, np.nan, a), b)
        with self.assertRaisesRegex(ValueError, "n_bootstrap must be a positive integer, got 0"):
            seed_paired_difference(y, a, b, n_bootstrap=0)
        with self.assertRaisesRegex(ValueError, r"ci must be in \(0, 1\), got 95"):
            seed_paired_difference(y, a, b, ci=95)


if __name__ == "__main__":
    unittest.main()
