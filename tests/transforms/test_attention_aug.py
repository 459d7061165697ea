# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F

from mstl_monai.transforms import (
    AttentionAugment,
    attention_boxes,
    attention_dimming,
    attention_mask,
    attention_mixup,
    attention_patching,
    random_thresholds,
)


def _peak_map(b: int = 1, h: int = 4, w: int = 4, at=(1, 2)) -> torch.Tensor:
    """A (b, 1, h, w) map that is 1 at ``at`` and 0 elsewhere."""
    m = torch.zeros(b, 1, h, w)
    m[:, 0, at[0], at[1]] = 1.0
    return m


def _reference_mixup(images, maps, t, padding=0.1):
    """One image at a time as the reference code: threshold, box, crop, interpolate, blend 0.6/0.4."""
    out = []
    _, _, h, w = images.shape
    for i in range(images.shape[0]):
        a = maps[i : i + 1]
        mask = F.interpolate(a, size=(h, w), mode="bilinear") >= t[i] * a.max()
        idx = torch.nonzero(mask[0, 0])
        y0, y1 = max(int(idx[:, 0].min() - padding * h), 0), min(int(idx[:, 0].max() + 1 + padding * h), h)
        x0, x1 = max(int(idx[:, 1].min() - padding * w), 0), min(int(idx[:, 1].max() + 1 + padding * w), w)
        patch = F.interpolate(images[i : i + 1, :, y0:y1, x0:x1], size=(h, w), mode="bilinear")
        out.append(images[i : i + 1] * 0.6 + patch * 0.4)
    return torch.cat(out)


class TestAttentionMaskAndBoxes(unittest.TestCase):
    def test_threshold_is_fraction_of_each_maps_max(self):
        images = torch.zeros(2, 1, 4, 4)
        maps = torch.tensor([[0.0, 1.0, 2.0, 4.0]]).repeat(4, 1)[None, None].repeat(2, 1, 1, 1)
        maps[1] *= 10.0  # same shape, 10x the scale: same mask at the same fraction
        mask = attention_mask(images, maps, torch.tensor([0.5, 0.5]))
        expected = torch.tensor([False, False, True, True]).repeat(4, 1)
        self.assertTrue(torch.equal(mask[0], expected))
        self.assertTrue(torch.equal(mask[1], expected))
        mask = attention_mask(images, maps, torch.tensor([0.2, 1.0]))  # 0.8 of 4; only the max itself
        self.assertTrue(torch.equal(mask[0], torch.tensor([False, True, True, True]).repeat(4, 1)))
        self.assertTrue(torch.equal(mask[1], torch.tensor([False, False, False, True]).repeat(4, 1)))

    def test_random_thresholds_in_range_per_image(self):
        g = torch.Generator().manual_seed(0)
        t = random_thresholds(1000, (0.4, 0.6), generator=g)
        self.assertTrue(bool(((t >= 0.4) & (t <= 0.6)).all()))
        self.assertGreater(float(t.std()), 0.03)  # one draw per image, not one per batch
        self.assertTrue(torch.equal(random_thresholds(3, 0.5), torch.full((3,), 0.5)))
        with self.assertRaisesRegex(ValueError, "theta"):
            random_thresholds(2, (0.6, 0.4))

    def test_boxes_padding_and_clipping(self):
        mask = torch.zeros(3, 20, 20, dtype=torch.bool)
        mask[0, 5:8, 10:12] = True  # rows 5..7, cols 10..11
        mask[1, 0:2, 18:20] = True  # at the corner: padding clipped
        boxes = attention_boxes(mask, padding=0.1)  # 2 px per side
        self.assertEqual(boxes[0].tolist(), [3, 10, 8, 14])
        self.assertEqual(boxes[1].tolist(), [0, 4, 16, 20])
        self.assertEqual(boxes[2].tolist(), [0, 20, 0, 20])  # empty mask: the whole image
        self.assertEqual(attention_boxes(mask, padding=0.0)[0].tolist(), [5, 8, 10, 12])


class TestAttentionAugmentations(unittest.TestCase):
    def test_mixup_blend_weights_on_a_constant_box(self):
        """A box of one constant value: every pixel is 0.6 * image + 0.4 * that value."""
        images = torch.zeros(1, 1, 20, 20)
        images[0, 0, :10, :10] = 1.0  # the attended quadrant (with padding 0 its box is all ones)
        maps = torch.zeros(1, 1, 20, 20)
        maps[0, 0, 2:8, 2:8] = 1.0
        out = attention_mixup(images, maps, theta=0.99, padding=0.0)
        torch.testing.assert_close(out, 0.6 * images + 0.4, rtol=0, atol=1e-6)

    def test_mixup_matches_the_per_image_reference(self):
        g = torch.Generator().manual_seed(1)
        images = torch.rand(4, 2, 33, 29, generator=g)
        maps = torch.rand(4, 1, 5, 4, generator=g)
        t = random_thresholds(4, (0.4, 0.6), generator=torch.Generator().manual_seed(7))
        out = attention_mixup(images, maps, (0.4, 0.6), padding=0.1, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(out, _reference_mixup(images, maps, t), rtol=1e-5, atol=1e-5)

    def test_dimming_scales_the_attended_region_only(self):
        images = torch.full((2, 3, 8, 8), 2.0)
        maps = _peak_map(2, 8, 8, at=(2, 5))
        out = attention_dimming(images, maps, theta=0.5, dim_factor=0.0)
        self.assertEqual(float(out[:, :, 2, 5].abs().max()), 0.0)
        kept = torch.ones(8, 8, dtype=torch.bool)
        kept[2, 5] = False
        self.assertTrue(bool((out[:, :, kept] == 2.0).all()))
        out = attention_dimming(images, maps, theta=0.5, dim_factor=0.001)
        torch.testing.assert_close(out[:, :, 2, 5], torch.full((2, 3), 0.002))

    def test_patching_pastes_the_box_elsewhere_in_the_same_image(self):
        b, h, w = 3, 16, 16
        images = torch.arange(b * 2 * h * w, dtype=torch.float32).reshape(b, 2, h, w)
        maps = torch.zeros(b, 1, h, w)
        maps[:, 0, 4:6, 8:11] = 1.0
        out = attention_patching(images, maps, theta=0.5, padding=0.0, generator=torch.Generator().manual_seed(3))
        for i in range(b):
            diff = (out[i] != images[i]).any(dim=0)
            src = images[i, :, 4:6, 8:11]
            # the pasted 2 x 3 box is somewhere; find it by its content
            found = [
                (y, x) for y in range(h - 1) for x in range(w - 2) if torch.equal(out[i, :, y : y + 2, x : x + 3], src)
            ]
            self.assertTrue(found, f"image {i}: box not pasted")
            ys, xs = torch.nonzero(diff, as_tuple=True)
            if len(ys):  # every changed pixel lies in the pasted box
                y, x = next(
                    (y, x)
                    for y, x in found
                    if (ys >= y).all() and (ys < y + 2).all() and (xs >= x).all() and (xs < x + 3).all()
                )
                self.assertTrue(torch.equal(out[i, :, y : y + 2, x : x + 3], src))

    def test_patching_places_are_random_and_in_bounds(self):
        images = torch.randn(64, 1, 12, 12)
        maps = _peak_map(64, 12, 12, at=(6, 6))
        out = attention_patching(images, maps, theta=0.5, padding=0.1, generator=torch.Generator().manual_seed(0))
        self.assertEqual(out.shape, images.shape)
        changed = (out != images).flatten(1).any(dim=1)
        self.assertGreater(int(changed.sum()), 32)  # most boxes land elsewhere than where they came from

    def test_augment_three_views_batched_no_python_loop_over_images(self):
        aug = AttentionAugment(generator=torch.Generator().manual_seed(0))
        images, maps = torch.randn(5, 1, 32, 32), torch.rand(5, 3, 4, 4)
        views = aug(images, maps)
        self.assertEqual(len(views), 3)
        for v in views:
            self.assertEqual(v.shape, images.shape)
            self.assertEqual(v.dtype, images.dtype)
        # each view is driven by its own map: mixup by map 0 only
        maps2 = maps.clone()
        maps2[:, 1:] = torch.rand(5, 2, 4, 4)
        a = AttentionAugment(generator=torch.Generator().manual_seed(0))(images, maps)[0]
        b = AttentionAugment(generator=torch.Generator().manual_seed(0))(images, maps2)[0]
        torch.testing.assert_close(a, b)
        with self.assertRaisesRegex(ValueError, "3 attention maps"):
            aug(images, maps[:, :2])
        with self.assertRaisesRegex(ValueError, "one map per image"):
            attention_mixup(images, maps)


if __name__ == "__main__":
    unittest.main()
