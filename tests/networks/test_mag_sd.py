# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import unittest

import torch
from monai.networks import eval_mode

from mstl_monai.networks import build_network, load_pretrained
from mstl_monai.label.prepare import network_config_from_state_dict
from mstl_monai.networks.nets import MultiscaleAttentionHead, MultiscaleAttentionNet
from mstl_monai.transforms import AttentionAugment


class TestMultiscaleAttentionHead(unittest.TestCase):
    def test_maps_from_two_scales(self):
        head = MultiscaleAttentionHead([8, 16], num_maps=3)
        maps = head([torch.randn(2, 8, 8, 8), torch.randn(2, 16, 4, 4)])
        self.assertEqual(tuple(maps.shape), (2, 3, 4, 4))
        self.assertGreaterEqual(float(maps.min()), 0.0)
        with self.assertRaisesRegex(ValueError, "2 scales"):
            MultiscaleAttentionHead([8])


class TestMultiscaleAttentionNet(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.net = build_network("resnet18", n_attn=5, attention_maps=3, n_input_channels=1, num_classes=3)

    def test_forward_and_maps(self):
        self.assertIsInstance(self.net, MultiscaleAttentionNet)
        x = torch.randn(2, 1, 64, 64)
        with eval_mode(self.net):
            logits = self.net(x)
            logits2, maps = self.net.forward_with_maps(x)
        self.assertEqual(tuple(logits.shape), (2, 3))
        torch.testing.assert_close(logits, logits2)
        self.assertEqual(tuple(maps.shape), (2, 3, 2, 2))  # layer4's grid of a 64-px input

    def test_maps_use_layer3_and_layer4(self):
        """Both scales feed the maps: changing either head branch changes them."""
        x = torch.randn(2, 1, 64, 64)
        with eval_mode(self.net):
            _, base = self.net.forward_with_maps(x)
            for branch in self.net.attention.scales:
                with torch.no_grad():
                    branch[0].weight.mul_(2.0)
                _, maps = self.net.forward_with_maps(x)
                self.assertFalse(torch.allclose(maps, base))
                base = maps

    def test_training_forward_views_and_gradients(self):
        x = torch.randn(4, 1, 64, 64)
        out = self.net(x, augment=AttentionAugment(generator=torch.Generator().manual_seed(0)))
        self.assertEqual(tuple(out["pred"].shape), (4, 3))
        self.assertEqual(tuple(out["views_pred"].shape), (3, 4, 3))
        self.assertEqual(tuple(out["maps"].shape), (4, 3, 2, 2))
        # the cross-entropy alone trains the attention head (the maps re-weight the features)
        torch.nn.functional.cross_entropy(out["pred"], torch.tensor([0, 1, 2, 0])).backward()
        for name, p in self.net.attention.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertGreater(float(p.grad.abs().sum()), 0.0, name)

    def test_state_dict_names_and_architecture(self):
        sd = self.net.state_dict()
        self.assertIn("backbone.conv1.weight", sd)
        self.assertIn("backbone.fc.weight", sd)
        self.assertTrue(any(k.startswith("backbone.attn.") for k in sd))
        self.assertTrue(any(k.startswith("attention.scales.") for k in sd))
        cfg = network_config_from_state_dict(sd)
        want = {"backbone": "resnet18", "n_attn": 5, "in_channels": 1, "num_classes": 3, "attention_maps": 3}
        self.assertEqual(cfg, want)
        plain = build_network("resnet18", n_attn=5, n_input_channels=1, num_classes=3)
        self.assertNotIn("attention_maps", network_config_from_state_dict(plain.state_dict()))

    def test_pretrained_goes_to_the_backbone(self):
        import os
        import tempfile

        plain = build_network("resnet18", n_attn=5, n_input_channels=1, num_classes=3)
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "stage.pt")
            torch.save(plain.state_dict(), path)
            report = load_pretrained(self.net, path)
            self.assertGreater(len(report["loaded"]), 0)
            torch.testing.assert_close(self.net.backbone.conv1.weight, plain.conv1.weight)
            # and a MAG-SD checkpoint as the next stage's pretrained: its backbone, the head dropped
            path2 = os.path.join(d, "magsd.pt")
            torch.save(self.net.state_dict(), path2)
            fresh = build_network("resnet18", n_attn=5, n_input_channels=1, num_classes=3)
            load_pretrained(fresh, path2)
            torch.testing.assert_close(fresh.layer4[1].conv2.weight, self.net.backbone.layer4[1].conv2.weight)

    def test_vit_is_refused_with_reason(self):
        with self.assertRaisesRegex(ValueError, "one patch grid"):
            build_network("vit_tiny", attention_maps=3, num_classes=2, img_size=32, patch_size=16)
        with self.assertRaisesRegex(ValueError, "attention_maps"):
            build_network("resnet18", attention_maps="three")

    def test_plain_network_unchanged_when_off(self):
        torch.manual_seed(0)
        a = build_network("resnet18", n_attn=1, num_classes=2)
        torch.manual_seed(0)
        b = build_network("resnet18", n_attn=1, num_classes=2, attention_maps=0)
        self.assertEqual(type(a), type(b))
        for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
            self.assertEqual(ka, kb)
            torch.testing.assert_close(va, vb, rtol=0, atol=0)


if __name__ == "__main__":
    unittest.main()
