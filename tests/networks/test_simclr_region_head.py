# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from monai.networks import eval_mode
from parameterized import parameterized

from mstl_monai.networks.nets import AttentiveResNet, RegionHead, SimCLR

TINY = {"block": "basic", "layers": [1, 2, 1, 1], "block_inplanes": [4, 8, 8, 16], "n_attn": 1}


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """NT-Xent written out: for each of the 2N projections, -log softmax over the 2N - 1 others at its pair."""
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n = z1.shape[0]
    sim = z @ z.t() / t
    sim.fill_diagonal_(float("-inf"))
    pair = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(sim, pair)


class TestSimCLR(unittest.TestCase):
    def test_loss_and_gradients(self):
        torch.manual_seed(0)
        model = SimCLR(AttentiveResNet(**TINY), dim=8, temperature=0.1)
        x1, x2 = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
        with eval_mode(model):
            loss = model(x1, x2)
            z = model.project(torch.cat([x1, x2]))
        torch.testing.assert_close(loss, nt_xent(z[:4], z[4:], 0.1), rtol=1e-5, atol=1e-5)
        model.train()
        model(x1, x2).backward()
        self.assertGreater(model.backbone.conv1.weight.grad.abs().sum().item(), 0)
        self.assertFalse(any(k.startswith("fc.") for k in model.backbone.state_dict()))

    def test_bad_input(self):
        model = SimCLR(AttentiveResNet(**TINY), dim=8)
        with self.assertRaisesRegex(ValueError, "same shape"):
            model(torch.randn(2, 3, 32, 32), torch.randn(2, 3, 16, 16))
        with self.assertRaisesRegex(ValueError, "at least 2"):
            model(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32))
        with self.assertRaises(TypeError):
            SimCLR(torch.nn.Linear(2, 2))


class TestRegionHead(unittest.TestCase):
    @parameterized.expand([[None, (6, 16)], [32, (6, 16)], [None, (6, 16, 3, 3)]])
    def test_shapes(self, hidden, in_shape):
        head = RegionHead(16, hidden=hidden)
        x = torch.randn(in_shape)
        out = head(x)
        self.assertEqual(tuple(out.shape), (6, 5))
        if len(in_shape) > 2:
            torch.testing.assert_close(out, head(x.mean(dim=(2, 3))))

    def test_on_shared_backbone(self):
        backbone = AttentiveResNet(**TINY, num_classes=0)
        head = RegionHead(backbone.feature_dim)
        crops = torch.randn(10, 3, 32, 32)
        logits = head(backbone.forward_head(backbone.forward_features(crops), pre_logits=True))
        self.assertEqual(tuple(logits.shape), (10, 5))
        F.cross_entropy(logits, torch.arange(5).repeat(2)).backward()
        self.assertIsNotNone(backbone.conv1.weight.grad)

    def test_bad(self):
        with self.assertRaisesRegex(ValueError, "16"):
            RegionHead(16)(torch.randn(2, 8))
        for kwargs in ({"in_features": 0}, {"in_features": 4, "num_regions": 1}, {"in_features": 4, "hidden": 0}):
            with self.assertRaises(ValueError):
                RegionHead(**kwargs)


if __name__ == "__main__":
    unittest.main()
