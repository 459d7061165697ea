# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of attention_heatmap."""

from __future__ import annotations

import unittest

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from parameterized import parameterized

from mstl_monai.visualize import attention_heatmap, box_area_fraction, heatmap_mass_in_box

try:
    from mstl_monai.networks.nets import attentive_resnet18
except ImportError:  # the networks package has not landed yet
    attentive_resnet18 = None


DEVICES = [("cpu",)] + ([("cuda",)] if torch.cuda.is_available() else [])


class FakeAttnBlock(nn.Module):
    """Stores attention ``softmax(scale * key_intensity + query_bias)`` like a NonLocalBlock with keep_attn."""

    def __init__(self, scale: float, sub_sample: bool = False, key_shape_attr: bool = False) -> None:
        super().__init__()
        self.scale, self.sub_sample, self.key_shape_attr = scale, sub_sample, key_shape_attr
        self.keep_attn = False
        self.attn_map = None
        self.attn_spatial_shape = None

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        if self.keep_attn:
            keys = F.max_pool2d(f, 2) if self.sub_sample else f
            nq = f.shape[2] * f.shape[3]
            nk = keys[0, 0].numel()
            query_bias = (torch.linspace(-1, 1, nq)[None, :, None] * torch.linspace(0, 1, nk)[None, None]).to(f.device)
            self.attn_map = torch.softmax(self.scale * keys.flatten(1)[:, None, :] + query_bias, dim=-1)
            self.attn_spatial_shape = tuple(f.shape[2:])
            if self.key_shape_attr:
                self.attn_key_spatial_shape = tuple(keys.shape[2:])
        return f


class StandInAttnNet(nn.Module):
    def __init__(self, sub_sample: bool = False, key_shape_attr: bool = False) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(4)
        # b0 looks at dark places, b1 (the last, the default) at bright places
        self.blocks = nn.ModuleDict(
            {"b0": FakeAttnBlock(-8.0), "b1": FakeAttnBlock(8.0, sub_sample=sub_sample, key_shape_attr=key_shape_attr)}
        )
        self.fc = nn.Linear(1, 2)
        self.bn = nn.BatchNorm1d(1)

    @property
    def attention_blocks(self):
        return dict(self.blocks.items())

    def set_keep_attention(self, flag: bool) -> None:
        for blk in self.blocks.values():
            blk.keep_attn = bool(flag)
            if not flag:
                blk.attn_map = None

    def forward(self, x):
        f = self.pool(x.mean(1, keepdim=True))
        for blk in self.blocks.values():
            f = blk(f)
        return self.fc(self.bn(f.mean(dim=(2, 3))))


def expected_heatmap(x: torch.Tensor, scale: float, sub_sample: bool) -> np.ndarray:
    """Independent numpy/torch version: mean over queries of the softmax rows, on the key grid, upsampled."""
    f = F.avg_pool2d(x.mean(1, keepdim=True), 4)
    keys = F.max_pool2d(f, 2) if sub_sample else f
    kh, kw = keys.shape[2:]
    nq, nk = f.shape[2] * f.shape[3], kh * kw
    out = []
    for b in range(x.shape[0]):
        k = keys[b, 0].numpy().reshape(-1)
        rows = []
        for q in range(nq):
            logits = scale * k + np.linspace(-1, 1, nq)[q] * np.linspace(0, 1, nk)
            e = np.exp(logits - logits.max())
            rows.append(e / e.sum())
        key_map = torch.tensor(np.mean(rows, axis=0).reshape(1, 1, kh, kw), dtype=torch.float32)
        up = F.interpolate(key_map, size=x.shape[2:], mode="bilinear", align_corners=False)[0, 0].numpy()
        out.append((up - up.min()) / (up.max() - up.min()))
    return np.stack(out)[:, None]


def bright_square_images() -> torch.Tensor:
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 0.1
    x[0, :, 8:16, 16:24] = 1.0  # box (x=16, y=8, w=8, h=8)
    x[1, :, 20:28, 4:12] = 1.0  # box (x=4, y=20, w=8, h=8)
    return x


class TestAttentionHeatmap(unittest.TestCase):
    @parameterized.expand(
        [("full", False, False), ("sub_sampled_inferred", True, False), ("sub_sampled_attr", True, True)]
    )
    def test_values(self, _, sub_sample, key_shape_attr):
        net = StandInAttnNet(sub_sample=sub_sample, key_shape_attr=key_shape_attr)
        x = bright_square_images()
        heat = attention_heatmap(net, x)
        self.assertEqual(heat.shape, (2, 1, 32, 32))
        self.assertEqual(heat.dtype, torch.float32)
        np.testing.assert_allclose(heat, expected_heatmap(x, 8.0, sub_sample), atol=1e-5)
        np.testing.assert_allclose(heat.amin(dim=(1, 2, 3)), [0, 0])
        np.testing.assert_allclose(heat.amax(dim=(1, 2, 3)), [1, 1])

    @parameterized.expand(DEVICES)
    def test_output_follows_input_device(self, device):
        x = bright_square_images()
        heat = attention_heatmap(StandInAttnNet().to(device), x.to(device))
        self.assertEqual(heat.device.type, device)
        np.testing.assert_allclose(heat.cpu(), expected_heatmap(x, 8.0, False), atol=1e-5)

    def test_last_block_is_default_and_localizes(self):
        net = StandInAttnNet()
        x = bright_square_images()
        heat = attention_heatmap(net, x)
        np.testing.assert_array_equal(heat, attention_heatmap(net, x, block_name="b1"))
        dark = attention_heatmap(net, x, block_name="b0")
        for i, box in enumerate([(16, 8, 8, 8), (4, 20, 8, 8)]):
            self.assertGreater(heatmap_mass_in_box(heat[i, 0], box), 3 * box_area_fraction(box, (32, 32)))
            self.assertLess(heatmap_mass_in_box(dark[i, 0], box), box_area_fraction(box, (32, 32)))

    @parameterized.expand([(False,), (True,)])
    def test_restores_state(self, keep_before):
        net = StandInAttnNet()
        net.set_keep_attention(keep_before)
        net.train()
        attention_heatmap(net, bright_square_images())
        self.assertTrue(net.training)
        for blk in net.blocks.values():
            self.assertEqual(blk.keep_attn, keep_before)
            self.assertEqual(blk.attn_map is None, not keep_before)

    def test_errors(self):
        class NoAttn(nn.Module):
            attention_blocks: dict = {}

            def set_keep_attention(self, flag):
                pass

            def forward(self, x):
                return x.mean(dim=(2, 3))

        with self.assertRaisesRegex(ValueError, "no attention blocks"):
            attention_heatmap(NoAttn(), torch.rand(1, 3, 8, 8))
        with self.assertRaisesRegex(ValueError, "no attention blocks"):
            attention_heatmap(nn.Conv2d(3, 3, 1), torch.rand(1, 3, 8, 8))
        with self.assertRaisesRegex(KeyError, "b7"):
            attention_heatmap(StandInAttnNet(), torch.rand(1, 3, 32, 32), block_name="b7")
        with self.assertRaises(ValueError):
            attention_heatmap(StandInAttnNet(), torch.rand(3, 32, 32))
        net = StandInAttnNet(key_shape_attr=True, sub_sample=True)
        attention_heatmap(net, torch.rand(1, 3, 32, 32))
        net.blocks["b1"].key_shape_attr = False
        net.blocks["b1"].attn_key_spatial_shape = (3, 3)  # wrong: 4 key positions
        with self.assertRaisesRegex(ValueError, "key grid"):
            attention_heatmap(net, torch.rand(1, 3, 32, 32))


@unittest.skipIf(attentive_resnet18 is None, "mstl_monai.networks.nets.attentive_resnet18 not available yet")
class TestAttentionHeatmapAttentiveResNet(unittest.TestCase):
    @parameterized.expand([("last_block", False, None), ("sub_sampled_res4", True, "layer3_1")])
    def test_non_local_blocks(self, _, sub_sample, block_name):
        torch.manual_seed(0)
        net = attentive_resnet18(n_attn=5, num_classes=2, attn_sub_sample=sub_sample)
        with torch.no_grad():  # a non-trivial attention (default init is near-uniform)
            for blk in net.attention_blocks.values():
                blk.theta.weight.normal_(std=0.5)
                blk.phi.weight.normal_(std=0.5)
        x = torch.rand(2, 3, 64, 64)
        heat = attention_heatmap(net, x, block_name=block_name)
        self.assertEqual(heat.shape, (2, 1, 64, 64))
        np.testing.assert_allclose(heat.amax(dim=(1, 2, 3)), [1, 1], atol=1e-6)
        np.testing.assert_allclose(heat.amin(dim=(1, 2, 3)), [0, 0], atol=1e-6)
        # the blocks are back to not keeping maps; recompute by hand from a kept map
        name = block_name or list(net.attention_blocks)[-1]
        block = net.attention_blocks[name]
        self.assertFalse(block.keep_attn)
        self.assertIsNone(block.attn_map)
        net.eval()
        net.set_keep_attention(True)
        with torch.no_grad():
            net(x)
        hq, wq = block.attn_spatial_shape
        kh, kw = (hq // 2, wq // 2) if sub_sample else (hq, wq)
        key_map = block.attn_map.mean(1).reshape(2, 1, kh, kw)
        up = F.interpolate(key_map, size=(64, 64), mode="bilinear", align_corners=False)
        lo, hi = up.amin(dim=(1, 2, 3), keepdim=True), up.amax(dim=(1, 2, 3), keepdim=True)
        np.testing.assert_allclose(heat, (up - lo) / (hi - lo), atol=1e-5)


if __name__ == "__main__":
    unittest.main()
