# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import unittest

import torch
from monai.networks import eval_mode
from parameterized import parameterized

from mstl_monai.networks import count_macs, count_parameters
from mstl_monai.networks.blocks import NonLocalBlock
from mstl_monai.networks.nets import (
    AttentiveResNet,
    attention_positions,
    attentive_resnet18,
    attentive_resnet34,
    attentive_resnet50,
    attentive_resnet101,
    attentive_resnet152,
)

R50_5 = ["layer2_1", "layer2_3", "layer3_3", "layer3_5", "layer4_2"]
POSITION_CASES = [
    [attentive_resnet50, 0, []],
    [attentive_resnet50, 1, ["layer2_3"]],
    [attentive_resnet50, 5, R50_5],
    [attentive_resnet101, 1, ["layer2_3"]],
    [attentive_resnet101, 5, ["layer2_1", "layer2_3", "layer3_20", "layer3_22", "layer4_2"]],
    [attentive_resnet152, 5, ["layer2_5", "layer2_7", "layer3_33", "layer3_35", "layer4_2"]],
    [attentive_resnet34, 5, ["layer2_1", "layer2_3", "layer3_3", "layer3_5", "layer4_2"]],
    [attentive_resnet18, 5, ["layer2_0", "layer2_1", "layer3_0", "layer3_1", "layer4_1"]],
]


def _copy_backbone(dst: AttentiveResNet, src: AttentiveResNet) -> None:
    missing, unexpected = dst.load_state_dict(src.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("attn.") for k in missing), (missing, unexpected)


class TestPlacement(unittest.TestCase):
    @parameterized.expand(POSITION_CASES)
    def test_positions(self, factory, n_attn, names):
        net = factory(n_attn=n_attn)
        self.assertEqual(list(net.attention_blocks), names)
        self.assertEqual(net.n_attn, n_attn)
        for name, blk in net.attention_blocks.items():
            stage = int(name[5])
            self.assertIsInstance(blk, NonLocalBlock)
            width = getattr(net, f"layer{stage}")[0].bn1.num_features * net.block_type.expansion
            self.assertEqual(blk.in_channels, width)

    def test_spec_rule_one_based(self):
        # SPEC §2: +5 = after res3 blocks 4 and 2, res4 blocks 6 and 4 (R-50) / 23 and 21, res5 block 3
        self.assertEqual(attention_positions([3, 4, 6, 3], 5), [(2, 1), (2, 3), (3, 3), (3, 5), (4, 2)])
        self.assertEqual(attention_positions([3, 4, 23, 3], 5), [(2, 1), (2, 3), (3, 20), (3, 22), (4, 2)])
        self.assertEqual(attention_positions([3, 4, 6, 3], 1), [(2, 3)])

    @parameterized.expand([[[1, 1, 1, 1], 5], [[3, 4, 6, 3], 2], [[3, 4, 6, 3], -1], [[3, 4, 6], 0]])
    def test_bad_placement(self, layers, n_attn):
        with self.assertRaises(ValueError):
            attention_positions(layers, n_attn)

    def test_bad_args(self):
        with self.assertRaisesRegex(ValueError, "dropout"):
            attentive_resnet18(dropout=1.0)
        with self.assertRaisesRegex(ValueError, "block"):
            AttentiveResNet("wide", [1, 1, 1, 1])
        with self.assertRaisesRegex(ValueError, "n_attn"):
            attentive_resnet50(n_attn=3)


class TestAttentiveResNet(unittest.TestCase):
    def test_torchvision_names_unshifted(self):
        base, attn = attentive_resnet50(n_attn=0), attentive_resnet50(n_attn=5)
        keys0 = set(base.state_dict())
        keys5 = set(attn.state_dict())
        self.assertEqual({k for k in keys5 if not k.startswith("attn.")}, keys0)
        tv_names = {"conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"}
        self.assertTrue(all(k.split(".")[0] in tv_names for k in keys0))
        self.assertFalse(any("downsample.0.bias" in k for k in keys0))
        self.assertEqual(base.conv1.stride, (2, 2))
        self.assertEqual(sum(p.numel() for p in base.parameters()), 25_557_032)  # torchvision's resnet50

    @parameterized.expand([[attentive_resnet50, 5], [attentive_resnet50, 1], [attentive_resnet18, 5]])
    def test_identity_at_init(self, factory, n_attn):
        torch.manual_seed(0)
        base, attn = factory(n_attn=0, num_classes=4), factory(n_attn=n_attn, num_classes=4)
        _copy_backbone(attn, base)
        x = torch.randn(2, 3, 64, 64)
        with eval_mode(base, attn):
            torch.testing.assert_close(attn(x), base(x), rtol=0, atol=0)
        base.train(), attn.train()
        torch.testing.assert_close(attn(x), base(x), rtol=0, atol=0)

    def test_gradients_reach_every_block(self):
        torch.manual_seed(0)
        net = attentive_resnet50(n_attn=5, num_classes=3).train()
        x = torch.randn(2, 3, 64, 64)
        torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 2])).backward()
        for name, blk in net.attention_blocks.items():
            self.assertGreater(blk.out_norm.weight.grad.abs().sum().item(), 0, name)
        for name, p in net.named_parameters():
            self.assertIsNotNone(p.grad, name)
        # once the blocks have left the identity, their embeddings learn too
        net.zero_grad()
        with torch.no_grad():
            for blk in net.attention_blocks.values():
                blk.out_norm.weight.fill_(0.1)
        torch.nn.functional.cross_entropy(net(x), torch.tensor([0, 2])).backward()
        for name, blk in net.attention_blocks.items():
            for pname in ("theta.weight", "phi.weight", "g.weight"):
                self.assertGreater(blk.get_parameter(pname).grad.abs().sum().item(), 0, f"{name}.{pname}")

    @parameterized.expand([[False, [(2, 64, 64), (2, 64, 64), (2, 16, 16), (2, 16, 16), (2, 4, 4)]],
                           [True, [(2, 64, 16), (2, 64, 16), (2, 16, 4), (2, 16, 4), (2, 4, 1)]]])
    def test_attention_maps(self, sub_sample, shapes):
        net = attentive_resnet50(n_attn=5, attn_sub_sample=sub_sample, keep_attn=True)
        with eval_mode(net):
            net(torch.randn(2, 3, 64, 64))
        self.assertEqual([tuple(b.attn_map.shape) for b in net.attention_blocks.values()], shapes)
        self.assertIs(net.last_attention_block, net.attn["layer4_2"])
        self.assertEqual(net.last_attention_block.attn_spatial_shape, (2, 2))
        net.set_keep_attention(False)
        self.assertTrue(all(b.attn_map is None for b in net.attention_blocks.values()))
        with eval_mode(net):
            net(torch.randn(1, 3, 64, 64))
        self.assertIsNone(net.last_attention_block.attn_map)
        self.assertIsNone(attentive_resnet50().last_attention_block)

    def test_features_and_head(self):
        net = attentive_resnet18(n_attn=1, num_classes=3, dropout=0.5)
        self.assertEqual(net.feature_dim, 512)
        self.assertEqual(attentive_resnet50().feature_dim, 2048)
        x = torch.randn(2, 3, 64, 64)
        with eval_mode(net):
            feats = net.forward_features(x)
            self.assertEqual(tuple(feats.shape), (2, 512, 2, 2))
            pooled = net.forward_head(feats, pre_logits=True)
            torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)))
            torch.testing.assert_close(net(x), net.fc(pooled))
        # dropout (a drop probability) before fc: active in training only
        net.train()
        torch.manual_seed(1)
        a = net.forward_head(feats)
        torch.manual_seed(2)
        b = net.forward_head(feats)
        self.assertFalse(torch.allclose(a, b))
        self.assertEqual(net.dropout.p, 0.5)

    def test_reset_classifier(self):
        net = attentive_resnet18(num_classes=1000).to(torch.float64)
        net.reset_classifier(2, dropout=0.2)
        self.assertEqual(net.fc.out_features, 2)
        self.assertEqual(net.fc.weight.dtype, torch.float64)
        self.assertEqual(net.dropout.p, 0.2)
        net.reset_classifier(0)
        with eval_mode(net):
            out = net(torch.randn(2, 3, 32, 32, dtype=torch.float64))
        self.assertEqual(tuple(out.shape), (2, 512))
        self.assertFalse(any(k.startswith("fc.") for k in net.state_dict()))
        headless = attentive_resnet18(num_classes=0)
        self.assertFalse(any(k.startswith("fc.") for k in headless.state_dict()))

    def test_3d_and_one_channel(self):
        net = AttentiveResNet("basic", [1, 2, 1, 1], block_inplanes=[4, 8, 8, 8], n_attn=1, spatial_dims=3,
                              n_input_channels=1, num_classes=2, keep_attn=True)
        with eval_mode(net):
            out = net(torch.randn(2, 1, 32, 32, 32))
        self.assertEqual(tuple(out.shape), (2, 2))
        self.assertEqual(tuple(net.attn["layer2_1"].attn_map.shape), (2, 64, 64))

    def test_complexity(self):
        base, one = attentive_resnet50(), attentive_resnet50(n_attn=1)
        self.assertEqual(count_parameters(base), 25_557_032)
        self.assertAlmostEqual(count_macs(base, (1, 3, 224, 224)) / 1e9, 4.09, places=2)  # torchvision's figure
        # +1 ATTN at res3 (28 x 28, C = 512, C/2 = 256): 4 projections of 512 x 256 and the two N x N products
        n, c, ci = 28 * 28, 512, 256
        expected = 4 * n * c * ci + 2 * n * n * ci
        self.assertEqual(count_macs(one, (1, 3, 224, 224)) - count_macs(base, (1, 3, 224, 224)), expected)
        self.assertEqual(count_parameters(one) - count_parameters(base), 4 * (c * ci) + 3 * ci + c + 2 * c)
        self.assertTrue(base.training)  # count_macs leaves the mode as it found it

    def test_trace(self):
        net = attentive_resnet18(n_attn=5, num_classes=2)
        x = torch.randn(1, 3, 64, 64)
        with eval_mode(net):
            traced = torch.jit.trace(net, x)
            torch.testing.assert_close(traced(x), net(x))


if __name__ == "__main__":
    unittest.main()
