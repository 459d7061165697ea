# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests for LoadCTSlice / LoadCTSliced."""

from __future__ import annotations

import tempfile
import unittest
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from monai.transforms import Compose
from parameterized import parameterized
from PIL import Image, PngImagePlugin
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from mstl_monai.transforms import LoadCTSlice, LoadCTSliced
from mstl_monai.transforms.io.array import significant_bits
from tests.utils import require_real_data

RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 256, size=(23, 31), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, size=(23, 31), dtype=np.uint16)
RGB8 = RNG.integers(0, 256, size=(23, 31, 3), dtype=np.uint8)

PNG_CASES = [
    ["L8", lambda: Image.fromarray(GRAY8, mode="L"), GRAY8 / 255.0],
    ["I16", lambda: Image.fromarray(GRAY16), GRAY16 / 65535.0],
    ["RGB_gray", lambda: Image.fromarray(np.repeat(GRAY8[..., None], 3, -1), mode="RGB"), GRAY8 / 255.0],
    [
        "RGBA_gray",
        lambda: Image.fromarray(np.concatenate([np.repeat(GRAY8[..., None], 3, -1), GRAY8[..., None] * 0 + 7], -1)),
        GRAY8 / 255.0,
    ],
    ["RGB", lambda: Image.fromarray(RGB8, mode="RGB"), (RGB8 @ np.array([0.299, 0.587, 0.114])) / 255.0],
    ["LA", lambda: Image.fromarray(GRAY8, mode="L").convert("LA"), GRAY8 / 255.0],
]


class TestLoadCTSlice(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)

    def tearDown(self):
        self._tmp.cleanup()

    @parameterized.expand(PNG_CASES)
    def test_png_modes(self, name, make, expected):
        path = self.tmp / f"{name}.png"
        make().save(path)
        out = LoadCTSlice()(path)
        self.assertIsInstance(out, MetaTensor)
        self.assertEqual(out.shape, (1, 23, 31))
        self.assertEqual(out.dtype, torch.float32)
        np.testing.assert_allclose(out[0].numpy(), expected, atol=2e-3)
        self.assertEqual(out.meta["filename_or_obj"], str(path))
        self.assertEqual(out.meta["source_format"], "png")

    def test_png_16bit_scaled_by_the_bits_it_uses(self):
        data = (np.arange(23 * 31).reshape(23, 31) * 5 % 3000 + 100).astype(np.uint16)  # 12-bit CT data in 16 bits
        Image.fromarray(data).save(self.tmp / "ct12.png")
        out = LoadCTSlice()(self.tmp / "ct12.png")
        np.testing.assert_allclose(out[0].numpy(), data / 4095.0, atol=1e-6)
        self.assertEqual((out.meta["bits_stored"], out.meta["bits_source"]), (12, "max value"))
        # an sBIT chunk (the PNG's BitsStored) wins over the guess: 12 bits although the values need only 10
        info = PngImagePlugin.PngInfo()
        info.add(b"sBIT", bytes([12]))
        low = (data % 1000).astype(np.uint16)
        Image.fromarray(low).save(self.tmp / "sbit.png", pnginfo=info)
        out = LoadCTSlice()(self.tmp / "sbit.png")
        np.testing.assert_allclose(out[0].numpy(), low / 4095.0, atol=1e-6)
        self.assertEqual((out.meta["bits_stored"], out.meta["bits_source"]), (12, "sBIT"))

    @parameterized.expand([[0, 8], [255, 8], [256, 10], [1023, 10], [1024, 12], [4095, 12], [9000, 14], [40000, 16]])
    def test_significant_bits(self, max_value, bits):
        self.assertEqual(significant_bits(max_value), bits)

    def test_jpeg(self):
        path = self.tmp / "x.jpg"
        smooth = np.tile(np.linspace(0, 255, 40, dtype=np.uint8), (30, 1))
        Image.fromarray(smooth).save(path, quality=95)
        out = LoadCTSlice()(path)
        self.assertEqual(out.shape, (1, 30, 40))
        self.assertEqual(out.meta["source_format"], "jpeg")
        np.testing.assert_allclose(out[0].numpy(), smooth / 255.0, atol=0.03)

    def test_orientation_png_kept(self):
        img = np.zeros((20, 30), np.uint8)
        img[2, 3] = 255  # top-left stays top-left: PNG slices are taken as displayed
        Image.fromarray(img).save(self.tmp / "o.png")
        out = LoadCTSlice()(self.tmp / "o.png")[0]
        self.assertEqual(tuple(np.argwhere(out.numpy() == 1.0)[0]), (2, 3))

    def test_constant_image_loads(self):
        Image.fromarray(np.full((16, 16), 40, np.uint8)).save(self.tmp / "c.png")
        out = LoadCTSlice()(self.tmp / "c.png")
        np.testing.assert_allclose(out.numpy(), 40 / 255.0)

    def _bad(self, name: str, content: bytes, exc=ValueError):
        path = self.tmp / name
        path.write_bytes(content)
        with self.assertRaises(exc) as cm:
            LoadCTSlice()(path)
        self.assertIn(str(path), str(cm.exception))

    def test_empty_file(self):
        self._bad("empty.png", b"")

    def test_text_file(self):
        self._bad("notes.png", b"this is not an image at all\n" * 10)

    def test_unknown_extension(self):
        self._bad("notes.txt", b"hello")

    def test_truncated_png(self):
        path = self.tmp / "full.png"
        Image.fromarray(RNG.integers(0, 256, (200, 200), dtype=np.uint8)).save(path)
        data = path.read_bytes()
        self._bad("truncated.png", data[: len(data) // 2])

    def test_truncated_jpeg(self):
        path = self.tmp / "full.jpg"
        Image.fromarray(RNG.integers(0, 256, (200, 200), dtype=np.uint8)).save(path)
        data = path.read_bytes()
        self._bad("truncated.jpg", data[: len(data) // 3])

    def test_missing_file(self):
        with self.assertRaises(FileNotFoundError) as cm:
            LoadCTSlice()(self.tmp / "nope.png")
        self.assertIn("nope.png", str(cm.exception))

    def test_not_a_path(self):
        with self.assertRaises(TypeError):
            LoadCTSlice()(np.zeros((4, 4)))

    def test_bad_window(self):
        with self.assertRaises(ValueError):
            LoadCTSlice(a_min=100, a_max=-100)

    # ---- NIfTI ----------------------------------------------------------------------------------------------
    def test_nifti_orientation_and_window(self):
        # RAS-aligned volume: voxel axis 0 -> +x (patient right), 1 -> +y (anterior), 2 -> +z (superior)
        vol = np.full((12, 10, 5), -1000.0, np.float32)
        vol[11, 9, 2] = 150.0  # most right, most anterior voxel of the middle slice
        vol[0, 0, 2] = -600.0  # most left, most posterior
        path = self.tmp / "v.nii.gz"
        nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
        # before: the middle slice of a volume was read with nothing in the output or the log saying so
        with self.assertLogs("mstl_monai.transforms.io.array", level="WARNING") as logs:
            out = LoadCTSlice()(path)
            LoadCTSlice()(path)  # said once per file
        self.assertEqual(len(logs.output), 1, logs.output)
        self.assertIn(f"{path} holds 5 slices: only the middle one (2) is read", logs.output[0])
        self.assertIn("inference_scan.yaml", logs.output[0])
        self.assertEqual(out.shape, (1, 10, 12))  # rows = y, columns = x
        self.assertEqual(out.meta["source_format"], "nifti")
        # anterior (row 0) and patient right (column 0) come first
        self.assertAlmostEqual(float(out[0, 0, 0]), 1.0, places=5)
        self.assertAlmostEqual(float(out[0, -1, -1]), (-600 + 1350) / 1500, places=5)
        self.assertAlmostEqual(float(out[0, 5, 5]), (-1000 + 1350) / 1500, places=5)
        # an explicit slice with nothing in it
        out0 = LoadCTSlice(slice_index=0)(path)
        np.testing.assert_allclose(out0.numpy(), (-1000 + 1350) / 1500, rtol=1e-6)
        with self.assertRaises(ValueError) as cm:
            LoadCTSlice(slice_index=7)(path)
        self.assertIn(str(path), str(cm.exception))

    def test_nifti_lps_affine(self):
        # LPS-style affine (diag(-1,-1,1)): axis 0 -> patient left, axis 1 -> posterior; data needs no flip
        vol = np.full((12, 10, 3), -1000.0, np.float32)
        vol[0, 0, 1] = 150.0  # index 0 along axis0 = most right, along axis1 = most anterior
        path = self.tmp / "lps.nii"
        nib.save(nib.Nifti1Image(vol, np.diag([-1.0, -1.0, 1.0, 1.0])), path)
        out = LoadCTSlice()(path)
        self.assertEqual(out.shape, (1, 10, 12))
        self.assertAlmostEqual(float(out[0, 0, 0]), 1.0, places=5)

    # ---- DICOM ----------------------------------------------------------------------------------------------
    def test_real_dicom_hu_window(self):
        root = require_real_data(self)
        for rel in ("dicom/lungmask/0.dcm", "dicom/pydicom/CT_small.dcm"):
            path = root / rel
            ds = pydicom.dcmread(path)
            hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
            expected = np.clip((hu + 1350.0) / 1500.0, 0, 1)
            out = LoadCTSlice()(path)
            self.assertEqual(out.meta["source_format"], "dicom")
            self.assertEqual(out.shape, (1, int(ds.Rows), int(ds.Columns)))
            # ImageOrientationPatient is (1,0,0,0,1,0) in both: no reorientation
            np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5)
            custom = LoadCTSlice(a_min=-1000, a_max=0)(path)
            np.testing.assert_allclose(custom[0].numpy(), np.clip((hu + 1000) / 1000, 0, 1), atol=1e-5)

    def test_dicom_flipped_orientation(self):
        root = require_real_data(self)
        src = root / "dicom/pydicom/CT_small.dcm"
        ds = pydicom.dcmread(src)
        ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]  # columns run towards patient right: flip them
        path = self.tmp / "flipped.dcm"
        ds.save_as(path)
        ref = LoadCTSlice()(src)[0].numpy()
        out = LoadCTSlice()(path)
        np.testing.assert_allclose(out[0].numpy(), ref[:, ::-1], atol=1e-6)
        self.assertIn("flip-cols", out.meta["orientation_ops"])

    def _ct_small(self):
        root = require_real_data(self)
        return root / "dicom/pydicom/CT_small.dcm", pydicom.dcmread(root / "dicom/pydicom/CT_small.dcm")

    def test_multiframe_dicom_is_a_volume(self):
        src, ds = self._ct_small()
        frames = np.stack([ds.pixel_array + 100 * k for k in range(3)]).astype(np.int16)  # frames on the first axis
        ds.NumberOfFrames = 3
        ds.PixelData = frames.tobytes()
        path = self.tmp / "multiframe.dcm"
        ds.save_as(path)
        for index, frame in ((None, 1), (0, 0), (-1, 2)):
            out = LoadCTSlice(slice_index=index)(path)
            self.assertEqual(out.shape, (1, 128, 128))
            self.assertEqual((out.meta["number_of_frames"], out.meta["frame_index"]), (3, frame))
            hu = frames[frame].astype(np.float64) - 1024.0
            np.testing.assert_allclose(out[0].numpy(), np.clip((hu + 1350.0) / 1500.0, 0, 1), atol=1e-5)
        with self.assertRaisesRegex(ValueError, "slice_index 3 is out of range for 3 frames"):
            LoadCTSlice(slice_index=3)(path)

    def test_dicom_without_rescale_tags(self):
        root = require_real_data(self)
        # CT_small stores 128..2191 with intercept -1024; lungmask/0.dcm stores HU (-2048..1502, intercept 0)
        for rel, assumed in (("dicom/pydicom/CT_small.dcm", "HU = stored - 1024"), ("dicom/lungmask/0.dcm", "HU")):
            ds = pydicom.dcmread(root / rel)
            del ds.RescaleSlope, ds.RescaleIntercept
            path = self.tmp / "norescale.dcm"
            ds.save_as(path)
            with self.assertWarnsRegex(UserWarning, "no RescaleSlope/RescaleIntercept") as cm:
                out = LoadCTSlice()(path)
            self.assertIn(str(path), str(cm.warning))
            self.assertTrue(out.meta["hu_rescale_assumed"])
            self.assertIn(assumed, out.meta["hu_rescale"])
            # the rule gives the file's true HU here
            np.testing.assert_allclose(out[0].numpy(), LoadCTSlice()(root / rel)[0].numpy(), atol=1e-6)
        self.assertFalse(LoadCTSlice()(root / "dicom/pydicom/CT_small.dcm").meta["hu_rescale_assumed"])

    def test_dicom_rescale_in_functional_groups(self):
        src, ds = self._ct_small()
        del ds.RescaleSlope, ds.RescaleIntercept
        pvt = Dataset()
        pvt.RescaleSlope, pvt.RescaleIntercept, pvt.RescaleType = 1, -1024, "HU"
        group = Dataset()
        group.PixelValueTransformationSequence = Sequence([pvt])
        ds.SharedFunctionalGroupsSequence = Sequence([group])
        path = self.tmp / "enhanced.dcm"
        ds.save_as(path)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = LoadCTSlice()(path)
        self.assertFalse(out.meta["hu_rescale_assumed"])
        np.testing.assert_allclose(out[0].numpy(), LoadCTSlice()(src)[0].numpy(), atol=1e-6)

    def test_8bit_dicom_without_rescale_is_a_picture(self):
        src, ds = self._ct_small()
        pic = (np.arange(128 * 128).reshape(128, 128) % 256).astype(np.uint8)
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = pic.tobytes()
        path = self.tmp / "picture.dcm"
        ds.save_as(path)
        with self.assertWarnsRegex(UserWarning, "displayed picture"):
            out = LoadCTSlice()(path)
        np.testing.assert_allclose(out[0].numpy(), pic / 255.0, atol=1e-6)
        self.assertEqual(out.meta["hu_rescale"], "display")

    def test_dicom_without_pixels(self):
        root = require_real_data(self)
        ds = pydicom.dcmread(root / "dicom/pydicom/CT_small.dcm")
        del ds.PixelData
        path = self.tmp / "nopixels.dcm"
        ds.save_as(path)
        with self.assertRaises(ValueError) as cm:
            LoadCTSlice()(path)
        self.assertIn("not an image", str(cm.exception))
        self.assertIn(str(path), str(cm.exception))

    def test_truncated_dicom(self):
        root = require_real_data(self)
        data = (root / "dicom/lungmask/0.dcm").read_bytes()
        self._bad("trunc.dcm", data[: len(data) // 2])

    # ---- real PNG slices and the dictionary version -----------------------------------------------------------
    def test_real_png_slices_in_compose(self):
        root = require_real_data(self)
        files = sorted((root / "covid-ct" / "CT_COVID").glob("*.png"))[:3] + sorted(
            (root / "luna16" / "images").glob("*.png")
        )[:2]
        self.assertEqual(len(files), 5)
        tr = Compose([LoadCTSliced(keys=["img"])])
        for f in files:
            d = tr({"img": str(f), "label": 1})
            x = d["img"]
            with Image.open(f) as im:
                w, h = im.size
            self.assertEqual(tuple(x.shape), (1, h, w))
            self.assertGreaterEqual(float(x.min()), 0.0)
            self.assertLessEqual(float(x.max()), 1.0)
            self.assertEqual(d["label"], 1)

    def test_dict_missing_key(self):
        with self.assertRaises(KeyError):
            LoadCTSliced(keys="image")({"img": "x.png"})
        self.assertEqual(LoadCTSliced(keys="image", allow_missing_keys=True)({"img": 3}), {"img": 3})


if __name__ == "__main__":
    unittest.main()
