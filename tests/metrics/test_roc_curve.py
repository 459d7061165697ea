# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of roc_curve_points and save_roc_curve."""

from __future__ import annotations

import os
import tempfile
import unittest

import numpy as np
from parameterized import parameterized
from PIL import Image

from mstl_monai.metrics import binary_roc_auc, roc_curve_points, save_roc_curve


class TestRocCurvePoints(unittest.TestCase):
    def test_hand_example(self):
        # scores sorted high -> low: 0.9 (pos), 0.6 (neg), 0.6 (pos), 0.2 (neg); 2 pos, 2 neg
        # thresholds inf, 0.9, 0.6 (both tied images at once), 0.2
        fpr, tpr, thr = roc_curve_points([1, 0, 1, 0], [0.9, 0.6, 0.6, 0.2])
        np.testing.assert_allclose(fpr, [0, 0, 0.5, 1])
        np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])
        np.testing.assert_allclose(thr, [np.inf, 0.9, 0.6, 0.2])

    @parameterized.expand([(0, 2), (1, None)])
    def test_trapezoid_area_equals_auc(self, seed, decimals):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 2, 120)
        p = np.clip(0.3 * y + 0.7 * rng.random(120), 0, 1)
        if decimals is not None:
            p = np.round(p, decimals)
        fpr, tpr, thr = roc_curve_points(y, p)
        area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
        self.assertAlmostEqual(area, binary_roc_auc(y, p), places=12)
        self.assertTrue(np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0))
        self.assertEqual((fpr[-1], tpr[-1]), (1.0, 1.0))
        self.assertTrue(np.all(np.diff(thr) < 0))

    def test_one_class(self):
        with self.assertRaisesRegex(ValueError, "both classes"):
            roc_curve_points([0, 0, 0], [0.1, 0.5, 0.7])


class TestSaveRocCurve(unittest.TestCase):
    def test_writes_png(self):
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 60)
        curves = {"model A": (y, np.clip(0.4 * y + 0.6 * rng.random(60), 0, 1)), "model B": (y, rng.random(60))}
        with tempfile.TemporaryDirectory() as d:
            path = save_roc_curve(curves, os.path.join(d, "sub", "roc.png"), title="test ROC")
            self.assertTrue(path.is_file())
            with Image.open(path) as im:
                self.assertEqual(im.format, "PNG")
                self.assertGreater(min(im.size), 300)
                self.assertGreater(len(np.unique(np.asarray(im.convert("L")))), 10)  # something was drawn
            self.assertEqual(os.listdir(os.path.join(d, "sub")), ["roc.png"])  # no temporary file left

    def test_errors_name_the_curve(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaisesRegex(ValueError, "empty"):
                save_roc_curve({}, os.path.join(d, "roc.png"))
            with self.assertRaisesRegex(ValueError, "only-negatives"):
                save_roc_curve({"only-negatives": ([0, 0], [0.1, 0.2])}, os.path.join(d, "roc.png"))
            self.assertFalse(os.path.exists(os.path.join(d, "roc.png")))


if __name__ == "__main__":
    unittest.main()
