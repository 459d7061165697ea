# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests for LocateLungd: the Generator's lung locator as a flag on each slice (issue 11, item 5)."""

from __future__ import annotations

import math
import unittest

import numpy as np
import torch
from parameterized import parameterized

from mstl_monai.data import covid_ct_datalist, make_lung_phantom
from mstl_monai.transforms import LoadCTSlice, LocateLungd, LungLobeGenerator
from tests.utils import require_real_data

BLANK_CASES = [
    ["black", torch.zeros(1, 96, 80)],
    ["white", torch.ones(1, 96, 80)],
    ["gray", torch.full((1, 96, 80), 0.4)],
    ["one_pixel", torch.zeros(1, 1, 1)],
]


class TestLocateLungd(unittest.TestCase):
    @parameterized.expand(BLANK_CASES)
    def test_no_lung(self, _, img):
        d = LocateLungd(keys="image")({"image": img, "image_path": "x.png"})
        self.assertIs(d["lung_found"], False)
        self.assertTrue(math.isnan(d["lung_box_fraction"]))
        self.assertIs(d["image"], img)  # the image is not touched

    def test_phantom_matches_generator(self):
        img, _ = make_lung_phantom(size=200, seed=0)
        t = torch.as_tensor(img)[None]
        d = LocateLungd(keys="image")({"image": t})
        ref = LungLobeGenerator()(t)
        self.assertIs(d["lung_found"], not ref.fallback)
        x, y, w, h = ref.lung_box.tolist()
        self.assertAlmostEqual(d["lung_box_fraction"], w * h / (200 * 200))
        self.assertTrue(0.05 < d["lung_box_fraction"] < 1.0)

    def test_real_slices(self):
        root = require_real_data(self)
        items = covid_ct_datalist(root / "covid-ct", "test")[::20]
        loc = LocateLungd(keys="image", output_key="ct")
        for item in items:
            img = LoadCTSlice()(item["image"])
            d = loc({"image": img})
            ref = LungLobeGenerator()(img)
            self.assertEqual(d["ct_found"], not ref.fallback, item["image"])
            if d["ct_found"]:
                x, y, w, h = ref.lung_box.tolist()
                self.assertAlmostEqual(d["ct_box_fraction"], w * h / (img.shape[-1] * img.shape[-2]), places=6)
        # real CT DICOM: a lung is found
        dcm = LoadCTSlice()(root / "dicom" / "lungmask" / "0.dcm")
        self.assertTrue(loc({"image": dcm})["ct_found"])

    def test_existing_key_and_bad_shape(self):
        with self.assertRaises(KeyError):
            LocateLungd(keys="image")({"image": torch.zeros(1, 8, 8), "lung_found": True})
        with self.assertRaises(ValueError):
            LocateLungd(keys="image")({"image": torch.zeros(8, 8)})
        with self.assertRaises(ValueError):
            LocateLungd(keys=["a", "b"], output_key="lung")

    def test_numpy_input(self):
        img, _ = make_lung_phantom(size=128, seed=1)
        d = LocateLungd(keys="image")({"image": np.asarray(img)[None]})
        self.assertIs(d["lung_found"], True)


if __name__ == "__main__":
    unittest.main()
