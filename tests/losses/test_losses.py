# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import math
import unittest

import torch
from parameterized import parameterized

from mstl_monai.losses import InfoNCELoss, RegionLoss


class TestInfoNCELoss(unittest.TestCase):
    def test_equation_2(self):
        """L = -log exp(q·k+/τ) / (exp(q·k+/τ) + Σ exp(q·k-/τ)) on hand-made vectors."""
        tau = 0.07
        q = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
        k_pos = torch.tensor([[0.8, 0.6], [0.6, 0.8]])
        k_neg = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.6, -0.8]])  # queue of 3 keys
        logits = torch.cat([(q * k_pos).sum(1, keepdim=True), q @ k_neg.t()], dim=1) / tau
        expected = []
        for i in range(2):
            pos = math.exp(float(q[i] @ k_pos[i]) / tau)
            neg = sum(math.exp(float(q[i] @ k) / tau) for k in k_neg)
            expected.append(-math.log(pos / (pos + neg)))
        loss = InfoNCELoss(reduction="none")(logits)
        torch.testing.assert_close(loss, torch.tensor(expected), rtol=1e-5, atol=1e-5)
        mean = InfoNCELoss()(logits, torch.zeros(2, dtype=torch.long))
        torch.testing.assert_close(mean, torch.tensor(expected).mean())
        self.assertEqual(InfoNCELoss(reduction="sum")(logits.bfloat16()).dtype, torch.float32)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "1 \\+ K"):
            InfoNCELoss()(torch.zeros(3, 1))
        with self.assertRaisesRegex(ValueError, "target"):
            InfoNCELoss()(torch.zeros(3, 4), torch.zeros(2, dtype=torch.long))


class TestRegionLoss(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.logits = torch.randn(3, 5, 5)

    def _manual(self):
        per_image = []
        for b in range(3):
            total = 0.0
            for i in range(5):
                total += -torch.log_softmax(self.logits[b, i], 0)[i].item()  # crop i is lobe i (Eq. 5)
            per_image.append(total)
        return torch.tensor(per_image)

    def test_equation_5(self):
        expected = self._manual()
        torch.testing.assert_close(RegionLoss(reduction="none")(self.logits), expected)
        torch.testing.assert_close(RegionLoss()(self.logits), expected.mean())
        torch.testing.assert_close(RegionLoss(reduction="sum")(self.logits), expected.sum())
        torch.testing.assert_close(RegionLoss(region_reduction="mean", reduction="none")(self.logits), expected / 5)
        # flat (B * 5, 5) logits, image-major, with an explicit target
        target = torch.arange(5).repeat(3)
        torch.testing.assert_close(RegionLoss()(self.logits.reshape(15, 5), target), expected.mean())

    def test_explicit_target(self):
        target = torch.tensor([[4, 3, 2, 1, 0]] * 3)
        out = RegionLoss(reduction="none")(self.logits, target)
        manual = torch.stack(
            [sum(-torch.log_softmax(self.logits[b, i], 0)[target[b, i]] for i in range(5)) for b in range(3)]
        )
        torch.testing.assert_close(out, manual)

    @parameterized.expand(
        [
            [torch.zeros(7, 5), None, "multiple of C=5"],
            [torch.zeros(2, 4, 5), None, "R=4"],
            [torch.zeros(2, 5, 5), torch.zeros(2, 4, dtype=torch.long), "target"],
            [torch.zeros(10, 5), torch.zeros(9, dtype=torch.long), "target"],
            [torch.zeros(2, 5, 5, 1), None, "shape"],
        ]
    )
    def test_bad_input(self, logits, target, message):
        with self.assertRaisesRegex(ValueError, message):
            RegionLoss()(logits, target)
        with self.assertRaises(ValueError):
            RegionLoss(region_reduction="none")


if __name__ == "__main__":
    unittest.main()
