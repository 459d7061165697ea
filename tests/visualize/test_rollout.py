"""Attention rollout (Abnar & Zuidema 2020) for ViT backbones, and the explanation command with a ViT."""

from __future__ import annotations

import csv
import json
import tempfile
import unittest
from pathlib import Path

import torch

from mstl_monai.visualize import attention_rollout, rollout_attentions
from tests.utils import require_real_data


def _tiny_vit(**kw):
    from mstl_monai.networks import build_network

    cfg = dict(img_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=2, n_input_channels=1, num_classes=2)
    cfg.update(kw)
    return build_network("vit_tiny", **cfg)


class TestRolloutAttentions(unittest.TestCase):
    def test_identity_attention(self):
        """Each token attending to itself only: the rollout is the identity, the CLS row puts no weight on any
        patch, so the patch map is uniform (all equal)."""
        eye = torch.eye(5).expand(2, 3, 5, 5)
        r = rollout_attentions([eye, eye, eye])
        torch.testing.assert_close(r, torch.eye(5).expand(2, 5, 5))
        cls_row = r[:, 0, 1:]
        torch.testing.assert_close(cls_row, cls_row[:, :1].expand_as(cls_row))

    def test_uniform_attention(self):
        """Uniform attention: every patch gets the same share; every row of the rollout sums to 1."""
        n = 10
        uni = torch.full((1, 2, n, n), 1.0 / n)
        r = rollout_attentions([uni, uni])
        torch.testing.assert_close(r.sum(-1), torch.ones(1, n))
        cls_row = r[0, 0, 1:]
        torch.testing.assert_close(cls_row, torch.full((n - 1,), float(cls_row[0])))

    def test_formula_and_rows_sum_to_one(self):
        torch.manual_seed(0)
        a1, a2 = (torch.rand(2, 4, 6, 6).softmax(-1) for _ in range(2))
        r = rollout_attentions([a1, a2])
        eye = torch.eye(6)
        want = (0.5 * a2.mean(1) + 0.5 * eye) @ (0.5 * a1.mean(1) + 0.5 * eye)
        torch.testing.assert_close(r, want)
        torch.testing.assert_close(r.sum(-1), torch.ones(2, 6))
        torch.testing.assert_close(rollout_attentions([a1], residual=False), a1.mean(1))
        torch.testing.assert_close(rollout_attentions([a1], head_fusion="max", residual=False).sum(-1) > 0, torch.ones(2, 6, dtype=torch.bool))

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "head_fusion"):
            rollout_attentions([torch.eye(3)[None]], head_fusion="median")
        with self.assertRaisesRegex(ValueError, "at least one"):
            rollout_attentions([])
        with self.assertRaisesRegex(ValueError, "layer 0"):
            rollout_attentions([torch.rand(1, 2, 3, 4)])


class TestAttentionRollout(unittest.TestCase):
    def test_shapes_range_and_state_restored(self):
        torch.manual_seed(0)
        net = _tiny_vit().train()
        x = torch.randn(2, 1, 32, 48)  # a 4 x 6 patch grid, not the 4 x 4 of img_size
        heat = attention_rollout(net, x)
        self.assertEqual(tuple(heat.shape), (2, 1, 32, 48))
        self.assertAlmostEqual(float(heat.min()), 0.0, places=6)
        self.assertAlmostEqual(float(heat.max()), 1.0, places=6)
        self.assertTrue(net.training)
        self.assertFalse(any(a.save_attn for a in net.attention_layers))
        self.assertEqual(net.attention_layers[0].att_mat.numel(), 0)  # the kept maps are freed again

    def test_patch_that_the_cls_token_reads_is_hot(self):
        """Make the CLS token attend to one patch only (in every layer): the rollout map peaks on that patch."""
        net = _tiny_vit(num_layers=1).eval()
        x = torch.randn(1, 1, 32, 32)
        target = 6  # patch (1, 2) of the 4 x 4 grid

        def fixed_attention(module, args, output):
            att = torch.full((1, 2, 17, 17), 0.0)
            att[..., 0, 1 + target] = 1.0
            att[..., 1:, 0] = 1.0
            module.att_mat = att

        h = net.attention_layers[0].register_forward_hook(fixed_attention)
        try:
            heat = attention_rollout(net, x)
        finally:
            h.remove()
        peak = torch.nonzero(heat[0, 0] == heat.max())[0].tolist()
        self.assertEqual((peak[0] // 8, peak[1] // 8), (1, 2))

    def test_not_a_vit(self):
        from mstl_monai.networks import build_network

        with self.assertRaisesRegex(ValueError, "not a Vision Transformer"):
            attention_rollout(build_network("resnet18", n_input_channels=1, num_classes=2), torch.zeros(1, 1, 32, 32))


class TestExplainViT(unittest.TestCase):
    def test_explain_command_with_vit(self):
        """The explanation command with a ViT: the attention column is the rollout, with the lung-mass check."""
        from mstl_monai.visualize.explain import main

        root = require_real_data(self)
        files = sorted((root / "covid-ct" / "CT_COVID").glob("*.png"))[:2]
        with tempfile.TemporaryDirectory() as d:
            torch.manual_seed(0)
            from mstl_monai.networks import build_network

            net = build_network("vit_tiny", n_input_channels=1, num_classes=2, img_size=64)
            ckpt = Path(d, "model.pt")
            torch.save(net.state_dict(), ckpt)
            out = Path(d, "out")
            argv = ["--ckpt", str(ckpt), "--backbone", "vit_tiny", "--image-size", "64", "--resize-size", "72"]
            argv += ["--output-dir", str(out), "--input", *map(str, files)]
            self.assertEqual(main(argv), 0)
            summary = json.loads((out / "summary.json").read_text())
            self.assertEqual(summary["attention_method"], "rollout")
            self.assertEqual(summary["n_images"], 2)
            with open(out / "localization.csv") as f:
                rows = list(csv.DictReader(f))
            for r in rows:
                self.assertEqual(r["attention_method"], "rollout")
                self.assertTrue(0.0 <= float(r["attention_mass_in_lung_box"]) <= 1.0)
            self.assertEqual(len(list(out.glob("*_explain.png"))), 2)


if __name__ == "__main__":
    unittest.main()
