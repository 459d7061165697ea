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
from mstl_monai.transforms.lobe.functional_locate import body_moments, select_parts, select_series
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


def _body(h: int = 100, w: int = 120) -> np.ndarray:
    """The moments of a body filling a (h, w) slice but a 10-pixel border: wide (left/right), centre x = 59.5."""
    filled = np.zeros((h, w), dtype=bool)
    filled[10 : h - 10, 10 : w - 10] = True
    return body_moments(filled)


def _select(parts, levels=(0, 100), min_ratio=0.05):
    """select_parts of parts given as dicts (area, box; air/mean/wall/seeded optional)."""
    area = np.array([p["area"] for p in parts])
    return select_parts(
        area,
        np.array([p.get("air", 0) for p in parts]),
        np.array([p.get("mean", 30) * p["area"] for p in parts]),
        np.array([p.get("wall", 0) for p in parts]),
        np.array([p["box"] for p in parts]),
        np.array([p.get("seeded", True) for p in parts]),
        _body(),
        np.array(levels),
        min_ratio,
    )


class TestSelectParts(unittest.TestCase):
    """The lung-or-not decision on hand-made part statistics (body 80 x 100 pixels, 8000)."""

    LEFT = {"area": 600, "box": (20, 20, 50, 70)}  # lung-dark, mean level 30 of 100
    RIGHT = {"area": 500, "box": (70, 22, 100, 70)}

    def test_two_lungs(self):
        keep, like = _select([self.LEFT, self.RIGHT])
        self.assertEqual(keep.tolist(), [True, True])

    def test_gas_pocket_is_not_lung(self):
        # a pocket at the air level (stomach gas), larger than the lung bases: not lung, and not their mirror
        bases = [{"area": 150, "box": (20, 70, 50, 85)}, {"area": 120, "box": (70, 70, 100, 85)}]
        gas = {"area": 400, "box": (70, 25, 95, 45), "air": 380, "mean": 2}
        keep, like = _select(bases + [gas])
        self.assertEqual(keep.tolist(), [True, True, False])
        self.assertFalse(like[2])

    def test_dark_lungs_are_lungs(self):
        # both lungs at the air level (emphysema, a dark window): a mirrored pair of sizeable parts is lung
        keep, _ = _select([dict(self.LEFT, air=500, mean=3), dict(self.RIGHT, air=400, mean=3)])
        self.assertEqual(keep.tolist(), [True, True])

    def test_bubble_within_the_abdomen(self):
        # a small lung-dark bubble far in front of the lung bases and away from the wall: not lung; the same
        # against the body wall (a lung tip): lung
        bases = [{"area": 150, "box": (20, 70, 50, 85)}, {"area": 120, "box": (70, 70, 100, 85)}]
        bubble = {"area": 40, "box": (40, 30, 48, 38)}
        self.assertEqual(_select(bases + [bubble])[0].tolist(), [True, True, False])
        self.assertEqual(_select(bases + [dict(bubble, wall=5)])[0].tolist(), [True, True, True])

    def test_fat_is_not_lung(self):
        # a small part just below the threshold (fat in a locally equalised slice) next to the lungs
        fat = {"area": 60, "box": (52, 40, 60, 50), "mean": 85}
        self.assertEqual(_select([self.LEFT, self.RIGHT, fat])[0].tolist(), [True, True, False])

    def test_specks_and_no_lung(self):
        speck = {"area": 10, "box": (45, 45, 48, 48)}
        self.assertEqual(_select([self.LEFT, self.RIGHT, speck])[0].tolist(), [True, True, False])
        # only a tiny lung-like part: no lung
        self.assertFalse(_select([speck])[0].any())
        self.assertEqual(_select([])[0].tolist(), [])


class TestSelectSeries(unittest.TestCase):
    def test_parts_continue_the_lung(self):
        lab = np.zeros((3, 20, 20), dtype=np.int32)
        lab[0, 5:15, 2:8] = 1  # slice 0: the lung (the most lung)
        lab[1, 6:14, 3:7] = 1  # slice 1: the lung continues ...
        lab[1, 2:4, 14:18] = 2  # ... and a pocket away from it
        lab[2, 7:9, 4:6] = 1  # slice 2: the lung continues from slice 1
        lab[2, 15:18, 14:18] = 2  # and another pocket
        keep = [np.array([True]), np.array([True, True]), np.array([True, True])]
        like = [np.array([True]), np.array([True, True]), np.array([True, True])]
        out = select_series(list(lab), like, keep)
        self.assertEqual([o.tolist() for o in out], [[True], [True, False], [True, False]])
        # a slice without lung in between: the next slice is checked against the last lung
        lab[1] = 0
        keep[1] = like[1] = np.zeros(0, dtype=bool)
        out = select_series(list(lab), like, keep)
        self.assertEqual(out[2].tolist(), [True, False])
        # a part that may not be lung (gas-like) is not kept even when it touches
        out = select_series(list(lab), [like[0], like[1], np.array([False, True])], keep)
        self.assertEqual(out[2].tolist(), [False, False])


if __name__ == "__main__":
    unittest.main()
