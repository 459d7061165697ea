# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests for LoadCTSeries / LoadCTSeriesd: DICOM series folders and NIfTI volumes as stacks of axial slices."""

from __future__ import annotations

import os
import shutil
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor

from mstl_monai.data import dicom_series_to_nifti
from mstl_monai.transforms import LoadCTSeries, LoadCTSeriesd, LoadCTSlice
from tests.scan._series import write_series
from tests.utils import require_real_data

SERIES = "ct-series/lung-pet-ct-dx-A0002"


class TestDicomReadOnce(unittest.TestCase):
    """Each file of a series is parsed once: the headers (pixel data deferred) serve the loader, and a slice is read
    without MONAI's metadata dictionary; the arrays are the same as the general path's."""

    def test_headers_given_and_dataset_slices_are_the_same(self):
        from mstl_monai.transforms.io.dicom_folder import read_dicom_folder

        folder = require_real_data(self) / SERIES
        ref = LoadCTSeries()(folder)
        found = read_dicom_folder(folder)
        got = LoadCTSeries()(folder, headers=found)
        self.assertTrue(torch.equal(got.as_tensor(), ref.as_tensor()))
        self.assertEqual(got.meta["slice_sources"], ref.meta["slice_sources"])
        self.assertEqual(got.meta["hu_range"], ref.meta["hu_range"])
        path, ds = next(iter(found.series.values()))[0]
        self.assertIsNone(ds.get_item("PixelData", keep_deferred=True).value)  # still deferred: no pixels held
        one, again = LoadCTSlice().from_dicom_dataset(ds, path), LoadCTSlice()(path)
        self.assertTrue(torch.equal(one.as_tensor(), again.as_tensor()))
        self.assertEqual(one.meta["orientation_ops"], again.meta["orientation_ops"])
        np.testing.assert_array_equal(one.meta["original_affine"], again.meta["original_affine"])
        with self.assertRaisesRegex(ValueError, "headers of folder"):
            LoadCTSeries()(folder.parent, headers=found)

    def test_slice_array_matches_the_reader(self):
        import pydicom
        from monai.data import PydicomReader

        from mstl_monai.transforms.io.functional import _native_pixels, dicom_slice_array

        folder = require_real_data(self) / SERIES
        for path in sorted(folder.glob("*.dcm"))[:3]:
            reader = PydicomReader(swap_ij=False, affine_lps_to_ras=True)
            want, hdr = reader.get_data(reader.read(str(path)))
            got, affine = dicom_slice_array(pydicom.dcmread(path))
            np.testing.assert_array_equal(got, want)  # float32 here, the reader's float64: the same values
            np.testing.assert_array_equal(affine, hdr["affine"])
        ds = pydicom.dcmread(sorted(folder.glob("*.dcm"))[0])
        rng = np.random.default_rng(0)
        for signed, stored in ((0, 12), (1, 12), (0, 16), (1, 16), (1, 10)):
            ds.PixelRepresentation, ds.BitsStored, ds.HighBit = signed, stored, stored - 1
            ds.PixelData = rng.integers(0, 2**16, size=ds.Rows * ds.Columns, dtype=np.uint16).tobytes()
            with self.subTest(signed=signed, stored=stored):
                got, want = _native_pixels(ds), ds.pixel_array
                self.assertEqual(got.dtype, want.dtype)
                np.testing.assert_array_equal(got, want)


class TestLoadCTSeriesReal(unittest.TestCase):
    def test_real_series_sorted_by_position(self):
        folder = require_real_data(self) / SERIES
        stack = LoadCTSeries()(folder)
        self.assertIsInstance(stack, MetaTensor)
        self.assertEqual(tuple(stack.shape), (30, 1, 512, 512))
        z = np.asarray(stack.meta["slice_positions"])
        np.testing.assert_allclose(z, 80.0 + 8.0 * np.arange(30))  # inferior -> superior, all 30 read
        names = [os.path.basename(s) for s in stack.meta["slice_sources"]]
        self.assertEqual(names[0], "1-30.dcm")  # the file names run against z
        self.assertEqual(names[-1], "1-01.dcm")
        self.assertEqual(stack.meta["gaps"], [])
        self.assertEqual(stack.meta["slice_spacing"], 8.0)
        self.assertEqual(stack.meta["source_format"], "dicom-series")
        self.assertEqual(stack.meta["hu_range"][0], -1024.0)
        self.assertGreaterEqual(float(stack.min()), 0.0)
        self.assertLessEqual(float(stack.max()), 1.0)
        # every slice is what the single-slice loader gives for its file (same window and orientation)
        for k in (0, 17, 29):
            np.testing.assert_array_equal(stack[k].numpy(), LoadCTSlice()(stack.meta["slice_sources"][k]).numpy())

    def test_real_series_as_nifti_matches(self):
        folder = require_real_data(self) / SERIES
        with tempfile.TemporaryDirectory() as tmp:
            nii = dicom_series_to_nifti(folder, Path(tmp) / "a0002.nii.gz")
            vol = LoadCTSeries()(nii)
        dcm = LoadCTSeries()(folder)
        self.assertEqual(vol.shape, dcm.shape)
        self.assertEqual(vol.meta["source_format"], "nifti")
        np.testing.assert_allclose(vol.meta["slice_positions"], dcm.meta["slice_positions"], atol=1e-3)
        np.testing.assert_allclose(vol.numpy(), dcm.numpy(), atol=1e-6)


class TestLoadCTSeriesSynthetic(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-series-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_shuffled_file_order(self):
        zs = -50.0 + 5.0 * np.arange(10)
        perm = np.random.default_rng(0).permutation(10)
        names = [f"img_{p:02d}.dcm" for p in perm]  # file names in no relation to z
        write_series(self.tmp / "s", zs, names=names)
        (self.tmp / "s" / "notes.txt").write_text("not a DICOM file")  # passed over
        d = LoadCTSeriesd(keys="image")({"image": str(self.tmp / "s"), "id": 3})
        stack = d["image"]
        self.assertEqual(d["id"], 3)
        np.testing.assert_allclose(stack.meta["slice_positions"], zs)
        self.assertEqual([os.path.basename(s) for s in stack.meta["slice_sources"]], names)
        # negative z and shuffled names: the slices follow the positions
        first = LoadCTSlice()(self.tmp / "s" / names[0])
        np.testing.assert_array_equal(stack[0].numpy(), first.numpy())

    def test_two_series_in_one_folder(self):
        a = write_series(self.tmp / "s", 5.0 * np.arange(6), names=[f"a{i}.dcm" for i in range(6)])
        b = write_series(self.tmp / "s", 5.0 * np.arange(4), names=[f"b{i}.dcm" for i in range(4)])
        with self.assertRaises(ValueError) as cm:
            LoadCTSeries()(self.tmp / "s")
        msg = str(cm.exception)
        for text in (a, b, "2 series", "6 files", "4 files", "series_uid", str(self.tmp / "s")):
            self.assertIn(text, msg)
        self.assertEqual(LoadCTSeries(series_uid=b)(self.tmp / "s").shape[0], 4)
        self.assertEqual(LoadCTSeries(series_uid=a)(self.tmp / "s").meta["series_uid"], a)
        with self.assertRaisesRegex(ValueError, "has no series '9.9.9'"):
            LoadCTSeries(series_uid="9.9.9")(self.tmp / "s")

    def test_missing_slices(self):
        zs = np.delete(5.0 * np.arange(12), [5, 6])  # two slices missing after z = 20
        write_series(self.tmp / "s", zs)
        with self.assertLogs("mstl_monai.transforms.io.array", level="WARNING") as logs:
            stack = LoadCTSeries()(self.tmp / "s")
        self.assertIn("missing slices", "\n".join(logs.output))
        self.assertEqual(stack.shape[0], 10)
        self.assertEqual(stack.meta["gaps"], [{"after_index": 4, "z_before": 20.0, "z_after": 35.0, "missing": 2}])
        self.assertEqual(stack.meta["slice_spacing"], 5.0)

    def test_no_dicom_and_bad_paths(self):
        (self.tmp / "empty").mkdir()
        (self.tmp / "empty" / "readme.txt").write_text("hello")
        with self.assertRaisesRegex(ValueError, "holds no DICOM image files"):
            LoadCTSeries()(self.tmp / "empty")
        with self.assertRaisesRegex(ValueError, "does not exist"):
            LoadCTSeries()(self.tmp / "nope")
        with self.assertRaisesRegex(ValueError, "neither a folder of DICOM files nor a NIfTI"):
            LoadCTSeries()(self.tmp / "empty" / "readme.txt")
        (self.tmp / "bad.nii.gz").write_bytes(b"\x1f\x8b garbage")
        with self.assertRaisesRegex(ValueError, "bad.nii.gz"):
            LoadCTSeries()(self.tmp / "bad.nii.gz")
        with self.assertRaises(TypeError):
            LoadCTSeries()(3)

    def test_nifti_orientation_from_affine(self):
        """The same volume stored in LPS voxel order (axes flipped, affine to match) loads identically."""
        write_series(self.tmp / "s", 5.0 * np.arange(8))
        ras = dicom_series_to_nifti(self.tmp / "s", self.tmp / "ras.nii.gz")
        img = nib.load(str(ras))
        data, aff = np.asarray(img.dataobj), img.affine
        flip = np.diag([-1.0, -1.0, -1.0, 1.0])
        shift = np.eye(4)
        shift[:3, 3] = np.asarray(data.shape) - 1
        lps_aff = aff @ shift @ flip  # voxel (i, j, k) -> (n-1-i, n-1-j, n-1-k) of the RAS-ordered volume
        nib.save(nib.Nifti1Image(data[::-1, ::-1, ::-1].copy(), lps_aff), str(self.tmp / "lps.nii.gz"))
        a, b = LoadCTSeries()(ras), LoadCTSeries()(self.tmp / "lps.nii.gz")
        np.testing.assert_allclose(a.meta["slice_positions"], b.meta["slice_positions"], atol=1e-4)
        np.testing.assert_array_equal(a.numpy(), b.numpy())
        self.assertEqual(a.meta["slice_sources"][0], f"{ras}#0")
        self.assertEqual(b.meta["slice_sources"][0], f"{self.tmp / 'lps.nii.gz'}#7")  # stored superior first
        dcm = LoadCTSeries()(self.tmp / "s")
        np.testing.assert_array_equal(a.numpy(), dcm.numpy())
        # anterior up: the bright marker dot sits in the upper part of the image
        r, _ = np.unravel_index(int(torch.argmax(a[4, 0])), a.shape[-2:])
        self.assertLess(r, a.shape[-2] // 2)


if __name__ == "__main__":
    unittest.main()
