# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of overlay and save_explanation_figure."""

from __future__ import annotations

import os
import tempfile
import unittest

import matplotlib
import numpy as np
import torch
from parameterized import parameterized
from PIL import Image

from mstl_monai.visualize import overlay, save_explanation_figure


def ramp_image(h: int = 12, w: int = 16) -> np.ndarray:
    return np.tile(np.linspace(0, 1, w), (h, 1))


class TestOverlay(unittest.TestCase):
    def test_alpha_zero_is_the_grey_image(self):
        img = ramp_image()
        out = overlay(img, np.random.default_rng(0).random(img.shape), alpha=0.0)
        self.assertEqual((out.shape, out.dtype), ((12, 16, 3), np.uint8))
        expected = np.rint(img * 255).astype(np.uint8)
        for c in range(3):
            np.testing.assert_array_equal(out[..., c], expected)

    def test_alpha_one_is_the_colormap(self):
        heat = ramp_image().T  # (16, 12)
        out = overlay(np.zeros_like(heat), heat, alpha=1.0, cmap="viridis")
        expected = np.rint(matplotlib.colormaps["viridis"](heat)[..., :3] * 255).astype(np.uint8)
        np.testing.assert_array_equal(out, expected)

    def test_blend(self):
        # grey 0.5 under a zero heatmap with jet: jet(0) = (0, 0, 0.5); 0.6 * 0.5 + 0.4 * (0, 0, 0.5)
        out = overlay(np.full((2, 2), 0.5), np.zeros((2, 2)), alpha=0.4, cmap="jet")
        jet0 = np.array(matplotlib.colormaps["jet"](0.0)[:3])
        np.testing.assert_array_equal(out[0, 0], np.rint((0.6 * 0.5 + 0.4 * jet0) * 255).astype(np.uint8))

    @parameterized.expand(
        [
            ("torch_channel_first", torch.rand(1, 8, 8), torch.rand(1, 1, 8, 8)),
            ("rgb_channel_first", np.random.default_rng(0).random((3, 8, 8)), np.zeros((8, 8))),
        ]
    )
    def test_input_forms(self, _, image, heat):
        self.assertEqual(overlay(image, heat).shape, (8, 8, 3))

    @parameterized.expand(
        [
            ("shape", np.zeros((8, 8)), np.zeros((8, 9)), {}, "differs"),
            ("image_range", np.full((4, 4), 255.0), np.zeros((4, 4)), {}, r"\[0, 1\]"),
            ("heat_range", np.zeros((4, 4)), np.full((4, 4), -0.5), {}, r"\[0, 1\]"),
            ("alpha", np.zeros((4, 4)), np.zeros((4, 4)), {"alpha": 1.5}, "alpha"),
            ("cmap", np.zeros((4, 4)), np.zeros((4, 4)), {"cmap": "no-such-map"}, "no-such-map"),
            ("image_dims", np.zeros((2, 4, 4)), np.zeros((4, 4)), {}, "image"),
        ]
    )
    def test_errors(self, _, image, heat, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            overlay(image, heat, **kwargs)


class TestExplanationFigure(unittest.TestCase):
    def test_two_and_three_panels(self):
        rng = np.random.default_rng(0)
        img, cam, att = rng.random((32, 32)), rng.random((32, 32)), rng.random((32, 32))
        with tempfile.TemporaryDirectory() as d:
            p3 = save_explanation_figure(os.path.join(d, "fig", "three.png"), img, cam, att, title="COVID p=0.97")
            p2 = save_explanation_figure(os.path.join(d, "fig", "two.png"), torch.tensor(img), torch.tensor(cam))
            with Image.open(p3) as a, Image.open(p2) as b:
                self.assertEqual((a.format, b.format), ("PNG", "PNG"))
                self.assertGreater(a.size[0], b.size[0] * 1.3)
                self.assertGreater(len(np.unique(np.asarray(a.convert("L")))), 20)
            self.assertEqual(sorted(os.listdir(os.path.join(d, "fig"))), ["three.png", "two.png"])

    def test_bad_map_writes_nothing(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(ValueError):
                save_explanation_figure(os.path.join(d, "f.png"), np.zeros((8, 8)), np.zeros((4, 4)))
            self.assertEqual(os.listdir(d), [])


if __name__ == "__main__":
    unittest.main()
