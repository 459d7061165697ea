"""The val decision-threshold rule (issue 15 item 2): max Youden J, ties to the threshold closest to 0.5, midpoints."""

from __future__ import annotations

import unittest

import numpy as np

from mstl_monai.networks.checkpoint import decision_threshold
from mstl_monai.metrics import thresholded_class
from mstl_monai.metrics import classification_metrics, youden_threshold


class TestYoudenThreshold(unittest.TestCase):
    def test_perfect_separation_is_the_midpoint_of_the_gap(self):
        self.assertAlmostEqual(youden_threshold([0, 0, 1, 1], [0.1, 0.3, 0.35, 0.9]), 0.325)

    def test_maximises_j_on_hand_made_probabilities(self):
        y = [0, 0, 0, 1, 0, 1, 1, 1]
        p = [0.05, 0.10, 0.15, 0.20, 0.30, 0.40, 0.45, 0.60]
        # candidates: 0.175 (tp 4, fp 1 -> J = 1 + 3/4 - 1 = 0.75), 0.35 (tp 3, fp 0 -> J 0.75): a tie -> 0.35
        t = youden_threshold(y, p)
        self.assertAlmostEqual(t, 0.35)
        m = classification_metrics(y, p, threshold=t)
        self.assertEqual((m["sensitivity"], m["specificity"]), (0.75, 1.0))
        # brute force: no threshold has a higher J
        grid = np.linspace(0.0, 1.0, 2001)
        best = max(classification_metrics(y, p, threshold=g)["sensitivity"] + classification_metrics(y, p, threshold=g)["specificity"] - 1 for g in grid)
        self.assertAlmostEqual(m["sensitivity"] + m["specificity"] - 1, best)

    def test_ties_go_to_the_candidate_closest_to_half(self):
        # J = 0.5 at 0.15 and at 0.75 (each misses one image of four): 0.75 is closer to 0.5
        self.assertAlmostEqual(youden_threshold([0, 1, 0, 1], [0.1, 0.2, 0.7, 0.8]), 0.75)

    def test_undefined_cases_give_none(self):
        self.assertIsNone(youden_threshold([1, 1, 1], [0.2, 0.4, 0.9]))  # one class
        self.assertIsNone(youden_threshold([0, 1], [0.5, 0.5]))  # nothing to separate
        self.assertIsNone(youden_threshold([1, 0], [0.2, 0.8]))  # only J < 0 (inverted)


class TestThresholdSetting(unittest.TestCase):
    def test_source_and_bad_values(self):
        stored = {"decision_threshold": 0.3}
        self.assertEqual(decision_threshold(0.3, stored), {"value": 0.3, "source": "checkpoint"})
        self.assertEqual(decision_threshold(0.5, stored), {"value": 0.5, "source": "override"})
        self.assertEqual(decision_threshold(None, {"decision_threshold": None}), {"value": 0.5, "source": "default"})
        for bad in (1.5, 0, "abc"):
            with self.assertRaisesRegex(ValueError, "threshold="):
                decision_threshold(bad, stored)

    def test_label_app_class(self):
        scores = {"non-COVID": 0.7, "COVID": 0.3}
        self.assertEqual(thresholded_class(scores), "non-COVID")
        self.assertEqual(thresholded_class(scores, 0.25), "COVID")
        self.assertEqual(thresholded_class({"a": 0.2, "b": 0.5, "c": 0.3}, 0.1), "b")


if __name__ == "__main__":
    unittest.main()
