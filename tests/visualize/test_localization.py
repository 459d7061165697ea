# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of heatmap_mass_in_box and box_area_fraction."""

from __future__ import annotations

import unittest

import numpy as np
import torch
from parameterized import parameterized

from mstl_monai.visualize import box_area_fraction, box_bounds, heatmap_mass_in_box


class TestHeatmapMassInBox(unittest.TestCase):
    def test_hand_example(self):
        # 4 x 6 map; box (x=1, y=0, w=2, h=2) covers rows 0-1, columns 1-2
        heat = np.array(
            [
                [0, 1, 2, 0, 0, 0],
                [0, 3, 4, 0, 0, 0],
                [0, 0, 0, 0, 0, 5],
                [0, 0, 0, 0, 0, 5],
            ],
            dtype=float,
        )
        # inside: 1 + 2 + 3 + 4 = 10 of a total of 20
        self.assertAlmostEqual(heatmap_mass_in_box(heat, (1, 0, 2, 2)), 0.5)
        self.assertAlmostEqual(heatmap_mass_in_box(torch.tensor(heat)[None, None], (5, 2, 1, 2)), 0.5)
        self.assertAlmostEqual(heatmap_mass_in_box(heat, (0, 0, 6, 4)), 1.0)
        self.assertAlmostEqual(heatmap_mass_in_box(heat, (3, 0, 2, 2)), 0.0)

    @parameterized.expand([((2, 3, 5, 4),), ((0.4, 1.6, 7.2, 3.3),), ((-3, -2, 6, 5),), ((10, 8, 30, 30),)])
    def test_uniform_map_gives_area_fraction(self, box):
        shape = (16, 20)
        self.assertAlmostEqual(heatmap_mass_in_box(np.ones(shape), box), box_area_fraction(box, shape), places=12)

    def test_bounds_rounding_and_clipping(self):
        self.assertEqual(box_bounds((0.5, 1.49, 2.0, 2.0), (10, 10)), (1, 3, 1, 3))
        self.assertEqual(box_bounds((-5, 8, 7, 10), (10, 12)), (8, 10, 0, 2))
        self.assertEqual(box_bounds((20, 20, 5, 5), (10, 10)), (10, 10, 10, 10))
        self.assertEqual(box_area_fraction((20, 20, 5, 5), (10, 10)), 0.0)
        self.assertAlmostEqual(box_area_fraction((0, 0, 5, 2), (1, 3, 10, 10)), 0.1)

    @parameterized.expand(
        [
            ("negative", np.full((4, 4), -1.0), (0, 0, 2, 2), "non-negative"),
            ("zero_mass", np.zeros((4, 4)), (0, 0, 2, 2), "sums to 0"),
            ("nan", np.full((4, 4), np.nan), (0, 0, 2, 2), "non-finite"),
            ("3d", np.ones((2, 4, 4)), (0, 0, 2, 2), "2D"),
            ("box_len", np.ones((4, 4)), (0, 0, 2), "x, y, w, h"),
            ("box_zero_width", np.ones((4, 4)), (0, 0, 0, 2), "positive width"),
        ]
    )
    def test_errors(self, _, heat, box, message):
        with self.assertRaisesRegex(ValueError, message):
            heatmap_mass_in_box(heat, box)


if __name__ == "__main__":
    unittest.main()
