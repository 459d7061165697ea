# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import math
import unittest

import torch

from mstl_monai.losses import SoftDistanceLoss, soft_distance_target


def _logits_for(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs).log()


class TestSoftDistanceTarget(unittest.TestCase):
    def test_replacement_rule(self):
        logits = _logits_for(
            [
                [0.8, 0.1, 0.1],  # right and confident: kept
                [0.6, 0.3, 0.1],  # right but below 0.7: replaced
                [0.1, 0.85, 0.05],  # confident but wrong (label 0): replaced
                [0.05, 0.05, 0.9],  # right and confident: kept
            ]
        )
        labels = torch.tensor([0, 0, 0, 2])
        t = soft_distance_target(logits, labels, confidence=0.7, smoothing=0.01)
        torch.testing.assert_close(t[0], torch.tensor([0.8, 0.1, 0.1]))
        torch.testing.assert_close(t[1], torch.tensor([0.98, 0.01, 0.01]))
        torch.testing.assert_close(t[2], torch.tensor([0.98, 0.01, 0.01]))
        torch.testing.assert_close(t[3], torch.tensor([0.05, 0.05, 0.9]))
        self.assertFalse(t.requires_grad)

    def test_exactly_at_confidence_is_kept(self):
        logits = _logits_for([[0.7, 0.3]])
        t = soft_distance_target(logits, torch.tensor([0]), confidence=0.7)
        torch.testing.assert_close(t, torch.tensor([[0.7, 0.3]]))

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "labels"):
            soft_distance_target(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
        with self.assertRaisesRegex(ValueError, "smoothing"):
            soft_distance_target(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), smoothing=1.0)


class TestSoftDistanceLoss(unittest.TestCase):
    def test_l1_to_target_summed_over_views(self):
        logits = _logits_for([[0.8, 0.2], [0.5, 0.5]])  # image 1 below 0.7: target [0.01, 0.99] (label 1)
        labels = torch.tensor([0, 1])
        views = torch.stack([_logits_for([[0.6, 0.4], [0.3, 0.7]]), _logits_for([[0.8, 0.2], [0.01, 0.99]])])
        d = SoftDistanceLoss(reduction="none")(views, logits, labels)
        # view 0: |0.6-0.8|+|0.4-0.2|+|0.3-0.01|+|0.7-0.99| over 4 entries; view 1: 0
        torch.testing.assert_close(d, torch.tensor([(0.2 + 0.2 + 0.29 + 0.29) / 4, 0.0]), atol=1e-6, rtol=1e-5)
        total = SoftDistanceLoss()(views, logits, labels)
        torch.testing.assert_close(total, d.sum())
        torch.testing.assert_close(SoftDistanceLoss(reduction="mean")(list(views), logits, labels), d.mean())

    def test_original_logits_are_detached(self):
        logits = torch.randn(4, 3, requires_grad=True)
        views = torch.randn(3, 4, 3, requires_grad=True)
        loss = SoftDistanceLoss()(views, logits, torch.tensor([0, 1, 2, 0]))
        loss.backward()
        self.assertIsNone(logits.grad)
        self.assertGreater(float(views.grad.abs().sum()), 0.0)

    def test_bf16_views_give_float32(self):
        logits = torch.randn(2, 3)
        out = SoftDistanceLoss()(torch.randn(3, 2, 3).bfloat16(), logits.bfloat16(), torch.tensor([1, 2]))
        self.assertEqual(out.dtype, torch.float32)
        self.assertTrue(math.isfinite(float(out)))

    def test_shape_errors(self):
        with self.assertRaisesRegex(ValueError, "views must be"):
            SoftDistanceLoss()(torch.zeros(3, 2, 4), torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))
        with self.assertRaisesRegex(ValueError, "confidence"):
            SoftDistanceLoss(confidence=1.5)


if __name__ == "__main__":
    unittest.main()
