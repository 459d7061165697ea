# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests for QuantizeLung, LungLobeGenerator, LungLobeGeneratord and RandLungLobeGeneratord."""

from __future__ import annotations

import unittest

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, DeleteItemsd, Resized, SpatialPadd
from PIL import Image
from parameterized import parameterized
from scipy import ndimage as ndi

from mstl_monai.data import make_lung_phantom
from mstl_monai.transforms import (
    DEFAULT_LOBE_BOXES,
    LOBE_NAMES,
    LoadCTSeries,
    LoadCTSlice,
    LoadCTSliced,
    LungLobeGenerator,
    LungLobeGeneratord,
    QuantizeLung,
    QuantizeLungd,
    RandLungLobeGenerator,
    RandLungLobeGeneratord,
)
from mstl_monai.transforms.lobe.functional import LUNG, content_box, crop_resize, reduce_slice, resample_slice
from mstl_monai.transforms.lobe.functional_quantize import binary_open, filter_lung_components
from tests.utils import require_real_data

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def iou(a, b) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    return inter / float(aw * ah + bw * bh - inter)


class TestQuantizeLung(unittest.TestCase):
    @parameterized.expand([["clean", False], ["ggo", True]])
    def test_phantom_labels(self, _, ggo):
        img, labels = make_lung_phantom(size=192, seed=3, ggo=ggo)
        out = QuantizeLung()(torch.as_tensor(img)[None])
        self.assertEqual(out.dtype, torch.uint8)
        self.assertEqual(out.shape, (1, 192, 192))
        agree = (out[0].numpy() == labels).mean()
        self.assertGreater(agree, 0.9)
        # the lung class is found where the phantom's lung is
        lung = labels == 2
        self.assertGreater((out[0].numpy()[lung] == 2).mean(), 0.8)

    def test_hu_and_numpy(self):
        hu = np.full((1, 40, 40), -1000.0, np.float32)
        hu[0, 5:35, 5:35] = 40.0  # body
        hu[0, 12:28, 10:20] = -850.0  # a lung
        out = QuantizeLung(hu=True)(hu)
        self.assertIsInstance(out, np.ndarray)
        self.assertEqual(out[0, 0, 0], 0)
        self.assertEqual(out[0, 6, 6], 1)
        self.assertEqual(out[0, 20, 15], 2)
        d = QuantizeLungd(keys="img", output_keys="seg", hu=True)({"img": hu})
        np.testing.assert_array_equal(d["seg"], out)
        with self.assertRaises(KeyError):
            QuantizeLungd(keys="img", output_keys="seg")({"img": hu, "seg": 0})


class TestBinaryOpen(unittest.TestCase):
    @parameterized.expand([[1], [3], [5], [7]])
    def test_equals_scipy(self, size):
        from scipy import ndimage as ndi

        rng = np.random.default_rng(size)
        m = rng.random((3, 37, 52)) < 0.6
        fp = np.ones((size, size), bool)
        # out-of-image pixels ignored: erosion pads with True, dilation with False
        ref = np.stack(
            [ndi.binary_dilation(ndi.binary_erosion(a, fp, border_value=1), fp, border_value=0) for a in m]
        )
        np.testing.assert_array_equal(binary_open(torch.as_tensor(m), size).numpy(), ref)

    def test_even_size(self):
        with self.assertRaises(ValueError):
            binary_open(torch.zeros(1, 5, 5, dtype=torch.bool), 4)
        with self.assertRaises(ValueError):
            LungLobeGenerator(open_size=4)


class TestLungLobeGenerator(unittest.TestCase):
    def test_phantom_boxes(self):
        for seed in range(3):
            img, labels = make_lung_phantom(size=256, seed=seed, ggo=seed == 1)
            out = LungLobeGenerator(spatial_size=64)(torch.as_tensor(img)[None])
            self.assertFalse(out.fallback)
            self.assertGreater(iou(out.lung_box.tolist(), bbox(labels == 2)), 0.8, msg=f"seed {seed}")
            self.assertEqual(out.regions.shape, (5, 1, 64, 64))
            self.assertEqual(out.boxes.shape, (5, 4))
            self.assertEqual(out.boxes.dtype, torch.int64)
            np.testing.assert_array_equal(out.labels.numpy(), np.arange(5))
            # the right lobes are on the image's left, the upper lobes above the lower ones
            b = {n: out.boxes[i].tolist() for i, n in enumerate(LOBE_NAMES)}
            self.assertLess(b["ru"][0], b["lu"][0])
            self.assertLess(b["ru"][1], b["rl"][1])
            self.assertLess(b["lu"][1], b["ll"][1])
            self.assertLess(b["ru"][1], b["rm"][1])
            self.assertLess(b["rm"][1], b["rl"][1])

    def test_regions_are_the_crops(self):
        img = torch.rand(2, 90, 120)
        gen = LungLobeGenerator(spatial_size=(30, 40), mode="bilinear")
        out = gen(img)
        self.assertEqual(out.regions.shape, (5, 2, 30, 40))
        for (x, y, w, h), region in zip(out.boxes.tolist(), out.regions):
            self.assertTrue(0 <= x and 0 <= y and x + w <= 120 and y + h <= 90 and w > 0 and h > 0)
            ref = torch.nn.functional.interpolate(img[None, :, y : y + h, x : x + w], size=(30, 40), mode="bilinear")
            torch.testing.assert_close(region, ref[0])

    def test_crop_resize_views(self):
        """Crops of a strided view (a slice of a bigger tensor, transposed) and boxes reaching outside the image: the
        same as slicing and ``F.interpolate`` (exactly with ATen's kernel, ``jit=False``; within float32 rounding
        with the numba kernel)."""
        big = torch.rand(3, 70, 90)
        img = big[1:, 5:65, 3:83].transpose(1, 2)  # (2, 80, 60), not contiguous, offset into its storage
        boxes = [(0, 0, 60, 80), (7, 11, 20, 30), (59, 79, 1, 1), (50, 70, 20, 30), (0, 75, 60, 10)]
        for jit, atol in ((False, 0.0), (None, 4e-7)):
            out = crop_resize(img, boxes, (16, 24), jit=jit)
            self.assertEqual(out.shape, (5, 2, 16, 24))
            for (x, y, w, h), region in zip(boxes, out):
                ref = F.interpolate(img[None, :, y : y + h, x : x + w], size=(16, 24), mode="bilinear")
                torch.testing.assert_close(region, ref[0], rtol=0, atol=atol)

    def test_lobe_table_relative_positions(self):
        gen = LungLobeGenerator()
        boxes = gen.lobe_boxes((100, 50, 200, 100), height=300, width=400)
        for name, row in zip(LOBE_NAMES, boxes.tolist()):
            fx, fy, fw, fh = DEFAULT_LOBE_BOXES[name]
            self.assertAlmostEqual(row[0], 100 + fx * 200, delta=1)
            self.assertAlmostEqual(row[1], 50 + fy * 100, delta=1)
            self.assertAlmostEqual(row[2], fw * 200, delta=2)
            self.assertAlmostEqual(row[3], fh * 100, delta=2)
        custom = {n: (0.0, 0.0, 1.0, 1.0) for n in LOBE_NAMES}
        self.assertTrue((LungLobeGenerator(lobe_boxes=custom).lobe_boxes((10, 10, 50, 60), 100, 100) == 10).any())

    @parameterized.expand(
        [
            ["missing", {"ru": (0, 0, 1, 1)}, KeyError],
            ["outside", {**DEFAULT_LOBE_BOXES, "ll": (0.5, 0.5, 0.6, 0.5)}, ValueError],
            ["zero", {**DEFAULT_LOBE_BOXES, "rm": (0.1, 0.1, 0.0, 0.5)}, ValueError],
        ]
    )
    def test_bad_table(self, _, table, exc):
        with self.assertRaises(exc):
            LungLobeGenerator(lobe_boxes=table)

    def test_bad_args(self):
        with self.assertRaises(ValueError):
            LungLobeGenerator(spatial_size=0)
        with self.assertRaises(ValueError):
            LungLobeGenerator(fallback_box=(0.5, 0.5, 0.6, 0.2))
        with self.assertRaises(ValueError):
            LungLobeGenerator(method="triangle")
        with self.assertRaises(ValueError):
            LungLobeGenerator()(torch.zeros(1, 1, 32, 32))

    def test_fallback_constant_and_configured(self):
        img = torch.full((1, 100, 80), 0.4)
        out = LungLobeGenerator(spatial_size=16)(img)
        self.assertTrue(out.fallback)
        self.assertEqual(out.lung_box.tolist(), [0, 0, 80, 100])
        self.assertEqual(out.regions.shape, (5, 1, 16, 16))
        out2 = LungLobeGenerator(spatial_size=16, fallback_box=(0.1, 0.2, 0.8, 0.6))(torch.zeros(1, 100, 80))
        self.assertTrue(out2.fallback)
        self.assertEqual(out2.lung_box.tolist(), [8, 20, 64, 60])
        # a body without lungs (a bright disc on dark air, with a little seeded noise) has no lung either
        yy, xx = torch.meshgrid(torch.arange(160.0), torch.arange(160.0), indexing="ij")
        body = (((yy - 80) ** 2 + (xx - 80) ** 2) < 60**2).float() * 0.8 + 0.1
        noise = torch.rand(1, 160, 160, generator=torch.Generator().manual_seed(0)) * 0.05
        self.assertTrue(LungLobeGenerator()(body[None] + noise).fallback)

    def test_devices_agree(self):
        img, _ = make_lung_phantom(size=200, seed=5, ggo=True)
        ref = LungLobeGenerator(spatial_size=32)(torch.as_tensor(img)[None])
        for device in DEVICES:
            out = LungLobeGenerator(spatial_size=32)(torch.as_tensor(img, device=device)[None])
            self.assertEqual(out.regions.device.type, device)
            self.assertEqual(out.boxes.device.type, device)
            self.assertEqual(out.boxes.cpu().tolist(), ref.boxes.tolist())
            torch.testing.assert_close(out.regions.cpu(), ref.regions, atol=1e-5, rtol=1e-5)


class TestPaddingAndComponents(unittest.TestCase):
    def test_content_box(self):
        img = torch.zeros(2, 50, 70)
        img[:, 10:40, 5:60] = torch.rand(2, 30, 55) + 0.1
        self.assertEqual(content_box(img), (5, 10, 55, 30))
        self.assertEqual(content_box(torch.full((1, 20, 30), 0.3)), (0, 0, 30, 20))  # constant: all of it
        self.assertEqual(content_box(torch.rand(1, 20, 30)), (0, 0, 30, 20))

    def test_lung_fraction_is_the_lung_labels_share(self):
        gen = LungLobeGenerator()
        for seed in range(4):
            img, _ = make_lung_phantom(size=256, seed=seed, ggo=seed % 2 == 1)
            t = torch.as_tensor(img)[None]
            for x in (t, torch.full_like(t, 0.3)):  # a slice with lungs, a constant one (fallback)
                _, fallback, info = gen.locate(x)
                fraction, fell = gen.lung_fraction(x)
                self.assertEqual(fell, fallback)
                self.assertEqual(fraction, float((info["labels"] == LUNG).float().mean()))

    def test_integer_reduction(self):
        """An integer factor (a 512 x 512 slice located at 128) is reduced by strided sums: numpy (the per-image
        locator on the CPU) and torch (the batched locator, any device) give the same numbers, and for 512 -> 128
        the same as torch's bilinear kernel; an odd factor takes the block's centre pixel."""
        x = torch.rand(1, 512, 512, generator=torch.Generator().manual_seed(0))
        ref = torch.nn.functional.interpolate(x[None], size=(128, 128), mode="bilinear", align_corners=False)[0]
        gray, cbox, scale = resample_slice(x, None, 128)
        self.assertEqual((cbox, scale, gray.dtype), ((0, 0, 512, 512), (4.0, 4.0), np.float32))
        np.testing.assert_array_equal(gray, ref[0].numpy())
        for dev in DEVICES:
            np.testing.assert_array_equal(reduce_slice(x.to(dev), 4)[0].cpu().numpy(), gray)
        small = torch.rand(1, 96, 60)
        out = reduce_slice(small.numpy(), 2)[0]
        torch.testing.assert_close(torch.from_numpy(out), torch.nn.functional.avg_pool2d(small[None], 2)[0, 0])
        np.testing.assert_array_equal(reduce_slice(small, 3)[0].numpy(), small[0, 1::3, 1::3].numpy())
        self.assertEqual(resample_slice(small, None, 32)[0].shape, (32, 20))

    def test_padding_does_not_change_the_box(self):
        img, labels = make_lung_phantom(size=128, seed=4)
        t = torch.as_tensor(img)[None, 20:108]  # (1, 88, 128): a wide slice
        padded = torch.nn.functional.pad(t, (0, 0, 20, 20))  # to 128 x 128 with zero bands, as SpatialPad does
        gen = LungLobeGenerator(spatial_size=16)
        a, b = gen(t), gen(padded)
        self.assertFalse(b.fallback)
        self.assertEqual((b.lung_box - torch.tensor([0, 20, 0, 0])).tolist(), a.lung_box.tolist())
        # no lung: the fallback box is the image inside its padding, not the padding
        flat = torch.nn.functional.pad(torch.full((1, 40, 64), 0.5), (0, 0, 12, 12))
        out = gen(flat)
        self.assertTrue(out.fallback)
        self.assertEqual(out.lung_box.tolist(), [0, 12, 64, 40])
        self.assertEqual(LungLobeGenerator(ignore_padding=False)(flat).lung_box.tolist(), [0, 0, 64, 64])

    def test_filter_lung_components(self):
        labels = torch.ones(1, 60, 60, dtype=torch.uint8)
        labels[0, 10:50, 5:25] = LUNG  # a lung
        labels[0, 10:14, 25:45] = LUNG  # its thin tip (kept: part of a lung that survives the opening)
        labels[0, 10:40, 35:55] = LUNG  # the other lung
        labels[0, 55, 2:58] = LUNG  # a thin slit (dropped by the opening)
        labels[0, 52:54, 40:42] = LUNG  # a speck (2x2: below 5 % of the largest part)
        out = filter_lung_components(labels, open_size=3, min_ratio=0.05)
        self.assertTrue(bool((out[0, 10:14, 25:45] == LUNG).all()))
        self.assertFalse(bool((out[0, 55] == LUNG).any()))
        self.assertFalse(bool((out[0, 52:54, 40:42] == LUNG).any()))
        self.assertEqual(int((out == LUNG).sum()), 40 * 20 + 4 * 10 + 30 * 20)
        self.assertTrue(torch.equal(filter_lung_components(labels, 1, 0.0), labels))

    def test_one_rule_for_tiny_images(self):
        for tiny in (torch.rand(1, 1, 1), torch.rand(1, 1, 40), torch.rand(1, 40, 1)):
            for gen in (LungLobeGenerator(spatial_size=8), RandLungLobeGenerator(spatial_size=8)):
                with self.assertRaisesRegex(ValueError, "at least 2x2"):
                    gen(tiny)
            for gen in (LungLobeGeneratord("image", spatial_size=8), RandLungLobeGeneratord("image", spatial_size=8)):
                with self.assertRaisesRegex(ValueError, "at least 2x2"):
                    gen({"image": tiny})


#: real slices (inspected) where the lung box sat on abdominal gas: the gas's rectangles (x0, y0, x1, y1) and a point
#: in a lung base, in the slice's pixels
GAS_CASES = [
    [
        "luna16_stomach_bubble",
        "luna16/images/1.3.6.1.4.1.14519.5.2.1.6279.6001.179730018513720561213088132029_slice051.png",
        [(308, 136, 424, 232)],
        (148, 364),
    ],
    [
        "dicom_base_stomach_and_bowel_gas",
        "ct-series/lung-pet-ct-dx-A0002/1-28.dcm",
        [(280, 108, 368, 136), (144, 184, 180, 212)],
        (152, 340),
    ],
]
#: abdominal slices (inspected) with bowel or stomach gas and no lung in view
NO_LUNG_CASES = [
    ["luna16_bowel_gas", "luna16/images/1.3.6.1.4.1.14519.5.2.1.6279.6001.100953483028192176989979435275_slice026.png"],
    ["luna16_stomach", "luna16/images/1.3.6.1.4.1.14519.5.2.1.6279.6001.235217371152464582553341729176_slice025.png"],
]
#: a slice with two thin lung bases behind the liver and the spleen (the old locator found no lung in it)
THIN_BASES = "luna16/images/1.3.6.1.4.1.14519.5.2.1.6279.6001.113697708991260454310623082679_slice022.png"


def main_parts(mask: np.ndarray, share: float = 0.01) -> np.ndarray:
    """The 8-connected parts of ``mask`` holding at least ``share`` of its pixels."""
    labels, _ = ndi.label(mask, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.isin(labels, np.flatnonzero(sizes >= share * mask.sum()))


class TestLungLocatorRealData(unittest.TestCase):
    """The lung locator on real slices (the full check: scripts/lung_locator_check.py)."""

    def test_padded_slices_find_the_lung(self):
        # slices that fell back (no lung found) once resized to 146 px and padded to a square (the CPU recipe)
        root = require_real_data(self)
        names = ["CT_COVID/2020.03.04.20031039-p23-97_1%0.png", "CT_COVID/2020.03.12.20034686-p17-91-5.png",
                 "CT_NonCOVID/1306.png", "CT_NonCOVID/2139.png"]
        for size in (146, 72):
            tr = Compose(
                [
                    LoadCTSliced(keys="image"),
                    Resized(keys="image", spatial_size=size, size_mode="longest", mode="area"),
                    SpatialPadd(keys="image", spatial_size=[size, size]),
                    LungLobeGeneratord(keys="image", spatial_size=16),
                ]
            )
            for name in names:
                d = tr({"image": str(root / "covid-ct" / name)})
                self.assertFalse(d["regions_fallback"], msg=f"{name} at {size} px")

    def test_lung_masks(self):
        # IoU of the lung box with the bounding box of radiologists' lung masks (lung bases with the liver and
        # stomach in view, and mid-lung slices); the mask's main parts (each >= 1 % of it): at the bases a lung tip
        # of a few pixels far in front of the rest stretches the mask's box (slices 3-6)
        root = require_real_data(self) / "lung-masks"
        gen = LungLobeGenerator(spatial_size=16)
        for i in (0, 1, 2, 3, 4, 5, 6, 8, 40, 60, 90):
            img = LoadCTSliced(keys="image")({"image": str(root / "ct" / f"{i:04d}.png")})["image"]
            mask = np.asarray(Image.open(root / "lungs" / f"{i:04d}.png").convert("L")) > 127
            out = gen(img)
            self.assertGreater(iou(out.lung_box.tolist(), bbox(main_parts(mask))), 0.85, msg=f"lung-masks {i:04d}")
            x, y, w, h = out.lung_box.tolist()
            self.assertGreater(mask[y : y + h, x : x + w].sum() / mask.sum(), 0.95, msg=f"lung-masks {i:04d}")

    @parameterized.expand(GAS_CASES)
    def test_abdominal_gas_is_not_lung(self, _, name, gas_boxes, base_point):
        """Lung bases with stomach or bowel gas in view: the box leaves the gas out and holds the lung base."""
        img = LoadCTSlice()(require_real_data(self) / name)
        out = LungLobeGenerator(spatial_size=16)(img)
        self.assertFalse(out.fallback, name)
        x, y, w, h = out.lung_box.tolist()
        for gx0, gy0, gx1, gy1 in gas_boxes:
            inside = max(0, min(x + w, gx1) - max(x, gx0)) * max(0, min(y + h, gy1) - max(y, gy0))
            self.assertLess(inside, 0.05 * (gx1 - gx0) * (gy1 - gy0), f"{name}: box {out.lung_box.tolist()} on the gas")
        px, py = base_point
        self.assertTrue(x <= px < x + w and y <= py < y + h, f"{name}: box {out.lung_box.tolist()} misses the lung base")

    @parameterized.expand(NO_LUNG_CASES)
    def test_bowel_gas_alone_is_no_lung(self, _, name):
        """Abdominal slices whose only enclosed dark areas are stomach or bowel gas: no lung (the fallback)."""
        out = LungLobeGenerator(spatial_size=16)(LoadCTSlice()(require_real_data(self) / name))
        self.assertTrue(out.fallback, f"{name}: box {out.lung_box.tolist()}")

    def test_thin_lung_bases_and_the_table(self):
        root = require_real_data(self)
        # two thin lung bases behind the liver and the spleen: found (not the fallback), at the back of the slice
        out = LungLobeGenerator(spatial_size=16)(LoadCTSlice()(root / THIN_BASES))
        x, y, w, h = out.lung_box.tolist()
        self.assertFalse(out.fallback)
        self.assertGreater(y, 0.55 * 512)
        self.assertGreater(w, 0.4 * 512)
        # a DICOM slice on the CT table: the dark gap between the back and the table is not lung
        out = LungLobeGenerator(spatial_size=16)(LoadCTSlice()(root / "ct-series" / "lung-pet-ct-dx-A0002" / "1-19.dcm"))
        x, y, w, h = out.lung_box.tolist()
        self.assertLess(y + h, 420, f"box {out.lung_box.tolist()} reaches the table")
        self.assertGreater(h, 200)

    def test_series(self):
        """The slices of a series: each slice checked against its neighbours, no box on gas or the table."""
        vol = LoadCTSeries()(require_real_data(self) / "ct-series" / "lung-pet-ct-dx-A0002")
        gen = LungLobeGenerator(spatial_size=16)
        boxes, fallback = gen.locate_series(vol)
        self.assertEqual(tuple(boxes.shape), (vol.shape[0], 4))
        self.assertEqual(boxes.dtype, torch.int64)
        self.assertEqual(fallback.dtype, torch.bool)
        # the lung's middle is found on every slice; the base slice with stomach and bowel gas keeps them out
        self.assertFalse(bool(fallback[1:28].any()), fallback.tolist())
        x, y, w, h = boxes[2].tolist()
        self.assertGreaterEqual(y, 280, boxes[2].tolist())
        # no box reaches the table (rows below 420) on any slice with a lung
        self.assertTrue(all(y + h <= 420 for (x, y, w, h), f in zip(boxes.tolist(), fallback.tolist()) if not f))
        with self.assertRaisesRegex(ValueError, "N, C, H, W"):
            gen.locate_series(vol[0])


class TestLungLobeGeneratord(unittest.TestCase):
    def test_keys_of_choice(self):
        img, _ = make_lung_phantom(size=128, seed=0)
        t = torch.as_tensor(img)[None]
        d = LungLobeGeneratord(keys="ct", output_key="lobes", spatial_size=48)({"ct": t, "y": 1})
        self.assertIs(d["ct"], t)
        self.assertEqual(d["lobes"].shape, (5, 1, 48, 48))
        self.assertEqual(d["lobes_boxes"].shape, (5, 4))
        self.assertEqual(d["lobes_labels"].tolist(), [0, 1, 2, 3, 4])
        self.assertIs(d["lobes_fallback"], False)
        with self.assertRaises(KeyError):
            LungLobeGeneratord(keys="ct", output_key="lobes")({"ct": t, "lobes": 0})
        with self.assertRaises(KeyError):
            LungLobeGeneratord(keys="ct")({"ct": t, "regions_boxes": 0})
        # two keys, two outputs
        d2 = LungLobeGeneratord(keys=["a", "b"], output_key=["ra", "rb"], spatial_size=16)({"a": t, "b": t * 0.5})
        self.assertEqual(d2["ra_boxes"].tolist(), d["lobes_boxes"].tolist())
        self.assertEqual(d2["rb"].shape, (5, 1, 16, 16))

    def test_real_slices_in_compose_and_dataloader(self):
        root = require_real_data(self)
        # chest slices (the third LUNA16 file is an abdominal slice without lung: the fallback, see NO_LUNG_CASES)
        luna = sorted((root / "luna16" / "images").glob("*.png"))
        files = sorted((root / "covid-ct" / "CT_COVID").glob("*.png"))[:4] + luna[:2] + luna[3:5]
        tr = Compose([LoadCTSliced(keys="image"), LungLobeGeneratord(keys="image", spatial_size=64)])
        # slices differ in size: keep only the regions for batching
        tr_batch = Compose([tr, DeleteItemsd(keys="image")])
        loader = DataLoader(Dataset([{"image": str(f)} for f in files], transform=tr_batch), batch_size=4)
        batches = list(loader)
        self.assertEqual(len(batches), 2)
        for b in batches:
            self.assertEqual(tuple(b["regions"].shape), (4, 5, 1, 64, 64))
            self.assertEqual(tuple(b["regions_labels"].shape), (4, 5))
            self.assertEqual(b["regions_fallback"].dtype, torch.bool)
            self.assertFalse(bool(b["regions_fallback"].any()))
        for f in files:
            d = tr({"image": str(f)})
            h, w = d["image"].shape[-2:]
            lx, ly, lw, lh = d["regions_lung_box"].tolist()
            # a lung box on a chest slice is large but not the whole image
            self.assertGreater(lw * lh, 0.1 * h * w, msg=f.name)
            self.assertLess(lw * lh, 0.95 * h * w, msg=f.name)  # (tightly cropped slices: lungs fill 90 %)


class TestRandLungLobeGeneratord(unittest.TestCase):
    def setUp(self):
        img, _ = make_lung_phantom(size=160, seed=2)
        self.data = {"image": torch.as_tensor(img)[None]}

    def test_seeded_and_jittered(self):
        a = RandLungLobeGeneratord(keys="image", spatial_size=32, jitter=0.15).set_random_state(seed=0)
        b = RandLungLobeGeneratord(keys="image", spatial_size=32, jitter=0.15).set_random_state(seed=0)
        ra, rb = a(self.data), b(self.data)
        self.assertEqual(ra["regions_boxes"].tolist(), rb["regions_boxes"].tolist())
        torch.testing.assert_close(ra["regions"], rb["regions"])
        again = a(self.data)  # the next draw differs
        self.assertNotEqual(again["regions_boxes"].tolist(), ra["regions_boxes"].tolist())
        det = LungLobeGeneratord(keys="image", spatial_size=32)(self.data)
        self.assertNotEqual(ra["regions_boxes"].tolist(), det["regions_boxes"].tolist())
        self.assertEqual(ra["regions_labels"].tolist(), [0, 1, 2, 3, 4])
        for x, y, w, h in ra["regions_boxes"].tolist():
            self.assertTrue(x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= 160 and y + h <= 160)

    def test_prob_zero_is_deterministic(self):
        r = RandLungLobeGeneratord(keys="image", spatial_size=32, prob=0.0).set_random_state(seed=1)
        det = LungLobeGeneratord(keys="image", spatial_size=32)(self.data)
        self.assertEqual(r(self.data)["regions_boxes"].tolist(), det["regions_boxes"].tolist())

    def test_array_version(self):
        gen = RandLungLobeGenerator(spatial_size=24, jitter=0.1).set_random_state(seed=3)
        out = gen(self.data["image"])
        self.assertEqual(out.regions.shape, (5, 1, 24, 24))
        with self.assertRaises(ValueError):
            RandLungLobeGenerator(jitter=1.5)


if __name__ == "__main__":
    unittest.main()
