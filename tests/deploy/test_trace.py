# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""TorchScript tracing (the bundle's ``ckpt_export --use_trace``, ONNX export) of the attentive ResNet."""

from __future__ import annotations

import unittest
import warnings

import torch

from mstl_monai.networks import build_network
from mstl_monai.networks.blocks import NonLocalBlock


class TestTraceNonLocal(unittest.TestCase):
    def test_trace_r18_attn5_without_tracer_warning(self):
        torch.manual_seed(0)
        net = build_network("resnet18", n_attn=5, n_input_channels=1, num_classes=2).eval()
        with warnings.catch_warnings():
            warnings.simplefilter("error", torch.jit.TracerWarning)
            traced = torch.jit.trace(net, torch.rand(2, 1, 64, 64))
        x = torch.rand(5, 1, 64, 64)  # another batch size than traced with
        with torch.no_grad():
            torch.testing.assert_close(traced(x), net(x), rtol=0, atol=1e-5)

    def test_shape_check_still_raises_in_eager_mode(self):
        block = NonLocalBlock(spatial_dims=2, in_channels=8)
        with self.assertRaisesRegex(ValueError, r"expects input \(B, 8"):
            block(torch.rand(1, 4, 6, 6))


if __name__ == "__main__":
    unittest.main()
