# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of grad_cam (wrapping monai.visualize.GradCAM)."""

from __future__ import annotations

import unittest

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from parameterized import parameterized

from mstl_monai.visualize import grad_cam, heatmap_mass_in_box

try:
    from mstl_monai.networks.nets import attentive_resnet18
except ImportError:  # the networks package has not landed yet
    attentive_resnet18 = None


DEVICES = [("cpu",)] + ([("cuda",)] if torch.cuda.is_available() else [])


class StandInNet(nn.Module):
    """torchvision-like names: conv1, layer4 (called as a module), avgpool, fc."""

    def __init__(self, n_classes: int = 3, inplace_last: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.layer4 = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(inplace=inplace_last))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, n_classes)

    def features(self, x):
        return self.layer4(F.relu(self.conv1(x)))

    def forward(self, x):
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


class StagewiseNet(StandInNet):
    """Runs layer4's children one by one (as AttentiveResNet does), so a hook on ``layer4`` never fires."""

    def forward(self, x):
        x = F.relu(self.conv1(x))
        for blk in self.layer4:
            x = blk(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SplitStagewiseNet(StagewiseNet):
    def forward_features(self, x):
        x = F.relu(self.conv1(x))
        for blk in self.layer4:
            x = blk(x)
        return x

    def forward_head(self, x):
        return self.fc(torch.flatten(self.avgpool(x), 1))

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


def minmax(m: torch.Tensor) -> torch.Tensor:
    lo = m.amin(dim=(1, 2, 3), keepdim=True)
    hi = m.amax(dim=(1, 2, 3), keepdim=True)
    return torch.where(hi > lo, (m - lo) / (hi - lo).clamp_min(1e-12), torch.zeros_like(m))


def expected_linear_head_cam(net: StandInNet, x: torch.Tensor, classes) -> torch.Tensor:
    # for GAP + linear head, d logit_c / d A_k(i, j) = W[c, k] / (h w): Grad-CAM weights are W[c, k] / (h w)
    with torch.no_grad():
        acti = net.features(x)
        h, w = acti.shape[2:]
        weights = net.fc.weight[torch.as_tensor(classes)] / (h * w)  # (B, K)
        cam = F.relu((weights[:, :, None, None] * acti).sum(1, keepdim=True))
        cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)
    return minmax(cam)


class TestGradCam(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.net = StandInNet()
        self.x = torch.rand(4, 1, 16, 16)

    @parameterized.expand([("int", 2), ("per_image", [0, 1, 2, 1])])
    def test_matches_analytic_grad_cam(self, _, class_idx):
        out = grad_cam(self.net, self.x, class_idx=class_idx)
        classes = [class_idx] * 4 if isinstance(class_idx, int) else class_idx
        self.assertEqual(out.shape, (4, 1, 16, 16))
        self.assertEqual(out.dtype, torch.float32)
        np.testing.assert_allclose(out, expected_linear_head_cam(self.net, self.x, classes), atol=1e-5)

    @parameterized.expand(DEVICES)
    def test_output_follows_input_device(self, device):
        net = self.net.to(device)
        out = grad_cam(net, self.x.to(device), class_idx=[0, 1, 2, 0])
        self.assertEqual(out.device.type, device)
        expected = expected_linear_head_cam(net.cpu(), self.x, [0, 1, 2, 0])
        np.testing.assert_allclose(out.cpu(), expected, atol=1e-5)

    def test_default_explains_argmax_of_each_image(self):
        x = torch.randn(8, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 3
        with torch.no_grad():
            self.net.fc.bias -= self.net(x).mean(0)  # centre each class's logit over the batch
            pred = self.net(x).argmax(1)
        self.assertGreater(len(set(pred.tolist())), 1)  # the batch mixes predicted classes
        np.testing.assert_allclose(grad_cam(self.net, x), expected_linear_head_cam(self.net, x, pred), atol=1e-5)

    def test_batch_equals_single_images(self):
        batch = grad_cam(self.net, self.x, class_idx=[0, 2, 1, 0])
        for i, c in enumerate([0, 2, 1, 0]):
            np.testing.assert_allclose(batch[i : i + 1], grad_cam(self.net, self.x[i : i + 1], class_idx=c), atol=1e-6)

    def test_no_side_effects(self):
        self.net.train()
        sentinel = torch.full_like(self.net.fc.weight, 7.0)
        self.net.fc.weight.grad = sentinel.clone()
        with torch.no_grad():  # also works when called under no_grad
            grad_cam(self.net, self.x)
        self.assertTrue(self.net.training)
        np.testing.assert_array_equal(self.net.fc.weight.grad, sentinel)
        self.assertIsNone(self.net.conv1.weight.grad)
        for name, mod in self.net.named_modules():
            self.assertEqual(len(mod._forward_hooks), 0, name)
            self.assertEqual(len(mod._backward_hooks), 0, name)
        self.assertFalse(self.x.requires_grad)

    def test_inplace_flag_restored(self):
        net = StandInNet(inplace_last=True)
        out = grad_cam(net, self.x, target_layers="layer4.1")
        self.assertTrue(net.layer4[1].inplace)
        self.assertEqual(out.shape, (4, 1, 16, 16))

    def test_localizes_bright_square(self):
        # conv1 copies the image, the "COVID" logit is the mean intensity: Grad-CAM of class 1 follows the image
        net = StandInNet(n_classes=2)
        with torch.no_grad():
            net.conv1.weight.zero_()
            net.conv1.weight[:, 0, 1, 1] = 1.0
            net.conv1.bias.zero_()
            net.layer4[0].weight.zero_()
            net.layer4[0].weight[:, :, 1, 1] = 0.25
            net.layer4[0].bias.zero_()
            net.fc.weight.copy_(torch.stack([-torch.ones(6), torch.ones(6)]))
            net.fc.bias.zero_()
        x = torch.zeros(1, 1, 32, 32)
        x[0, 0, 4:12, 18:26] = 1.0  # box (x=18, y=4, w=8, h=8)
        heat = grad_cam(net, x, class_idx=1)[0, 0]
        self.assertGreater(heatmap_mass_in_box(heat, (18, 4, 8, 8)), 0.6)  # the box is 64 / 1024 of the image
        self.assertEqual(float(heat.max()), 1.0)
        # class 0 has negative weights everywhere: ReLU leaves nothing, the map is all zero
        self.assertEqual(float(grad_cam(net, x, class_idx=0).abs().max()), 0.0)

    def test_stage_run_blockwise(self):
        net = StagewiseNet()
        net.load_state_dict(self.net.state_dict())
        with self.assertRaisesRegex(ValueError, "layer4.1"):  # the hint names the last block that ran
            grad_cam(net, self.x)
        split = SplitStagewiseNet()
        split.load_state_dict(self.net.state_dict())
        expected = expected_linear_head_cam(self.net, self.x, [1, 1, 1, 1])
        np.testing.assert_allclose(grad_cam(split, self.x, class_idx=1), expected, atol=1e-5)
        np.testing.assert_allclose(grad_cam(split, self.x, class_idx=1, target_layers="features"), expected, atol=1e-5)
        for mod in split.modules():
            self.assertEqual(len(mod._forward_hooks) + len(mod._backward_hooks), 0)

    @parameterized.expand(
        [
            ("unknown_layer", {"target_layers": "layer9"}, ValueError),
            ("class_out_of_range", {"class_idx": 3}, ValueError),
            ("class_count", {"class_idx": [0, 1]}, ValueError),
            ("float_class", {"class_idx": 1.5}, TypeError),
        ]
    )
    def test_errors(self, _, kwargs, error):
        with self.assertRaises(error):
            grad_cam(self.net, self.x, **kwargs)
        with self.assertRaises(ValueError):
            grad_cam(self.net, torch.rand(16, 16))


@unittest.skipIf(attentive_resnet18 is None, "mstl_monai.networks.nets.attentive_resnet18 not available yet")
class TestGradCamAttentiveResNet(unittest.TestCase):
    def test_matches_manual_grad_cam(self):
        torch.manual_seed(0)
        net = attentive_resnet18(n_attn=5, num_classes=2).eval()
        x = torch.rand(2, 3, 64, 64)
        out = grad_cam(net, x, class_idx=1)
        # manual Grad-CAM on the map entering global pooling (layer4 + its trailing non-local block)
        feats = net.forward_features(x).detach().requires_grad_(True)
        net.forward_head(feats)[:, 1].sum().backward()
        weights = feats.grad.mean(dim=(2, 3), keepdim=True)
        cam = F.relu((weights * feats).sum(1, keepdim=True)).detach()
        expected = minmax(F.interpolate(cam, size=(64, 64), mode="bilinear", align_corners=False))
        self.assertEqual(out.shape, (2, 1, 64, 64))
        np.testing.assert_allclose(out, expected, atol=1e-4)
        self.assertGreaterEqual(float(out.min()), 0.0)
        self.assertLessEqual(float(out.max()), 1.0)
        for mod in net.modules():
            self.assertEqual(len(mod._forward_hooks) + len(mod._backward_hooks), 0)


if __name__ == "__main__":
    unittest.main()
