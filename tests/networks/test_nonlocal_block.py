# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from mstl_monai.networks.blocks import NonLocalBlock

SHAPE_CASES = [
    [{"spatial_dims": 2, "in_channels": 8}, (2, 8, 6, 5), (2, 30, 30)],
    [{"spatial_dims": 2, "in_channels": 8, "sub_sample": True}, (2, 8, 6, 4), (2, 24, 6)],
    [{"spatial_dims": 3, "in_channels": 6, "inner_channels": 2}, (1, 6, 4, 4, 2), (1, 32, 32)],
    [{"spatial_dims": 3, "in_channels": 6, "sub_sample": True}, (1, 6, 4, 4, 2), (1, 32, 4)],
    [{"spatial_dims": 1, "in_channels": 4, "norm": None}, (3, 4, 10), (3, 10, 10)],
]


def _randomise(block: NonLocalBlock) -> None:
    """Leave the identity initialisation: non-trivial weights everywhere, output scale included."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)


class TestNonLocalBlock(unittest.TestCase):
    @parameterized.expand(SHAPE_CASES)
    def test_identity_at_init(self, kwargs, in_shape, _):
        block = NonLocalBlock(**kwargs)
        x = torch.randn(in_shape)
        for mode in (True, False):
            block.train(mode)
            torch.testing.assert_close(block(x), x, rtol=0, atol=0)

    @parameterized.expand(SHAPE_CASES)
    def test_attention_map_shape(self, kwargs, in_shape, map_shape):
        block = NonLocalBlock(**kwargs, keep_attn=True).eval()
        y = block(torch.randn(in_shape))
        self.assertEqual(tuple(y.shape), in_shape)
        self.assertEqual(tuple(block.attn_map.shape), map_shape)
        self.assertEqual(block.attn_spatial_shape, in_shape[2:])
        # rows of the attention map are distributions over the keys
        torch.testing.assert_close(block.attn_map.sum(-1), torch.ones(map_shape[:2]))

    @parameterized.expand(SHAPE_CASES)
    def test_fused_equals_explicit(self, kwargs, in_shape, _):
        block = NonLocalBlock(**kwargs).eval()
        _randomise(block)
        x = torch.randn(in_shape)
        fused = block(x)
        block.keep_attn = True
        explicit = block(x)
        self.assertFalse(torch.allclose(fused, x))
        torch.testing.assert_close(fused, explicit, rtol=1e-5, atol=1e-5)

    def test_matches_equation(self):
        """z = BN(W_z softmax(theta^T phi) g) + x, written out by hand in eval mode."""
        block = NonLocalBlock(spatial_dims=2, in_channels=4, inner_channels=3).eval()
        _randomise(block)
        with torch.no_grad():
            block.out_norm.running_mean.uniform_(-1, 1)
            block.out_norm.running_var.uniform_(0.5, 2)
        x = torch.randn(2, 4, 3, 5)

        def conv(c, t):
            return torch.einsum("oi,bin->bon", c.weight[:, :, 0, 0], t) + c.bias[None, :, None]

        xf = x.flatten(2)  # B x C x N
        theta, phi, g = conv(block.theta, xf), conv(block.phi, xf), conv(block.g, xf)
        f = torch.softmax(torch.einsum("bci,bcj->bij", theta, phi), dim=-1)  # B x Ni x Nj
        y = torch.einsum("bij,bcj->bci", f, g)
        wy = conv(block.out_conv, y)
        bn = block.out_norm
        wy = (wy - bn.running_mean[None, :, None]) / torch.sqrt(bn.running_var[None, :, None] + bn.eps)
        wy = wy * bn.weight[None, :, None] + bn.bias[None, :, None]
        expected = (wy + xf).reshape(x.shape)
        torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)

    def test_gradients(self):
        block = NonLocalBlock(spatial_dims=2, in_channels=8).train()
        x = torch.randn(2, 8, 4, 4, requires_grad=True)
        block(x).pow(2).sum().backward()
        # at identity initialisation only the output norm learns first, and it does get a gradient
        self.assertGreater(block.out_norm.weight.grad.abs().sum().item(), 0)
        block.zero_grad()
        _randomise(block)
        block(x).pow(2).sum().backward()
        for name, p in block.named_parameters():
            self.assertIsNotNone(p.grad, name)
            self.assertGreater(p.grad.abs().sum().item(), 0, name)

    def test_no_map_kept_by_default(self):
        block = NonLocalBlock(spatial_dims=2, in_channels=4)
        block(torch.randn(1, 4, 3, 3))
        self.assertIsNone(block.attn_map)

    @parameterized.expand(
        [
            [{"spatial_dims": 4, "in_channels": 8}],
            [{"spatial_dims": 2, "in_channels": 0}],
            [{"spatial_dims": 2, "in_channels": 8, "inner_channels": 0}],
        ]
    )
    def test_bad_args(self, kwargs):
        with self.assertRaises(ValueError):
            NonLocalBlock(**kwargs)

    def test_bad_input(self):
        block = NonLocalBlock(spatial_dims=2, in_channels=8)
        with self.assertRaisesRegex(ValueError, "got shape"):
            block(torch.randn(1, 4, 3, 3))
        with self.assertRaisesRegex(ValueError, "got shape"):
            block(torch.randn(1, 8, 3, 3, 3))


if __name__ == "__main__":
    unittest.main()
