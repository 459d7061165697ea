# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""LoadCTSeries on damaged copies of the real series: missing geometry, unreadable files, non-CT series, several
patients, duplicate InstanceNumbers, sub-folders and NIfTI files beside the slices. Nothing is left out unnamed."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np

from mstl_monai.transforms import LoadCTSeries, LoadCTSlice
from tests.scan._series import REAL_SERIES, broken_dicom, copy_series, edit_slice, write_series
from tests.utils import require_real_data

LOGGER = "mstl_monai.transforms.io.array"


class _Tmp(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-series-checks-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def real_copy(self, name: str = "s") -> tuple[Path, Path]:
        src = require_real_data(self) / REAL_SERIES
        return src, copy_series(src, self.tmp / name)

    def load(self, folder: Path, **kwargs):
        """Load ``folder``, returning the stack and the warnings logged."""
        with self.assertLogs(LOGGER, level="WARNING") as logs:
            stack = LoadCTSeries(**kwargs)(folder)
        return stack, "\n".join(logs.output)


class TestMissingGeometry(_Tmp):
    def check_same_orientation(self, stack, src: Path) -> None:
        """Every slice of the stack is the original file's slice as the single-slice loader gives it."""
        by_name = {os.path.basename(p): k for k, p in enumerate(stack.meta["slice_sources"])}
        for name in ("1-01.dcm", "1-15.dcm", "1-30.dcm"):
            np.testing.assert_array_equal(stack[by_name[name]].numpy(), LoadCTSlice()(src / name).numpy(), err_msg=name)

    def test_one_slice_without_position(self):
        src, folder = self.real_copy()
        edit_slice(folder / "1-15.dcm", delete=("ImagePositionPatient",))
        stack, logged = self.load(folder)
        self.assertEqual(stack.shape[0], 30)
        self.check_same_orientation(stack, src)  # not transposed or flipped like its neighbours would not be
        self.assertEqual(stack.meta["position_source"], "InstanceNumber")
        self.assertTrue(all(math.isnan(z) for z in stack.meta["slice_positions"]))  # no z from instance numbers
        self.assertEqual(stack.meta["instance_numbers"], list(range(1, 31)))
        self.assertEqual(stack.meta["gaps"], [])
        notes = " ".join(stack.meta["notes"])
        for text in ("1-15.dcm", "ImagePositionPatient", "1 of 30", "InstanceNumber", "z_mm not available"):
            self.assertIn(text, notes)
            self.assertIn(text, logged)

    def test_slices_without_orientation(self):
        src, folder = self.real_copy()
        edit_slice(folder / "1-15.dcm", delete=("ImagePositionPatient", "ImageOrientationPatient"))
        edit_slice(folder / "1-01.dcm", delete=("ImageOrientationPatient",))
        stack, logged = self.load(folder)
        self.check_same_orientation(stack, src)
        notes = " ".join(stack.meta["notes"])
        self.assertIn("no ImageOrientationPatient in 1-01.dcm, 1-15.dcm (2 of 30 files)", notes)
        self.assertIn("oriented like the rest of the series", notes)

    def test_no_slice_with_orientation(self):
        """No geometry at all: every slice as stored (the real series is stored in the display orientation)."""
        src, folder = self.real_copy()
        for name in sorted(os.listdir(folder)):
            edit_slice(folder / name, delete=("ImagePositionPatient", "ImageOrientationPatient"))
        stack, logged = self.load(folder)
        self.check_same_orientation(stack, src)
        self.assertEqual(stack.meta["orientation_ops"], [])
        self.assertIn("no ImageOrientationPatient in any of the 30 files", " ".join(stack.meta["notes"]))

    def test_duplicate_instance_numbers_without_positions(self):
        _, folder = self.real_copy()
        for name in sorted(os.listdir(folder)):
            edit_slice(folder / name, delete=("ImagePositionPatient",))
        edit_slice(folder / "1-11.dcm", InstanceNumber=10)
        with self.assertRaises(ValueError) as cm:
            LoadCTSeries()(folder)
        msg = str(cm.exception)
        for text in ("duplicate InstanceNumber", "10 in 1-10.dcm and 1-11.dcm", str(folder)):
            self.assertIn(text, msg)
        self.assertNotIn("missing", msg)

    def test_instance_number_gap_named_as_such(self):
        _, folder = self.real_copy()
        for name in sorted(os.listdir(folder)):
            edit_slice(folder / name, delete=("ImagePositionPatient",))
        os.remove(folder / "1-11.dcm")
        stack, logged = self.load(folder)
        self.assertEqual(stack.meta["gaps"], [{"after_index": 9, "instance_before": 10, "instance_after": 12, "missing": 1}])
        self.assertIn("1 between InstanceNumber 10 and 12", logged)


class TestUnreadableFiles(_Tmp):
    REASONS = {"empty": "empty (0 bytes)", "random": "not a DICOM image", "truncated": "not a DICOM image",
               "header": "no pixel data", "no_pixels": "no pixel data"}

    def test_every_unreadable_file_named_wherever_it_sits(self):
        """Each kind of unreadable file, first, in the middle (in place of a slice) and last: named the same way."""
        for kind, reason in self.REASONS.items():
            for where, name in (("first", "a.dcm"), ("middle", "s003.dcm"), ("last", "z.dcm")):
                with self.subTest(kind=kind, where=where):
                    folder = self.tmp / f"{kind}_{where}"
                    write_series(folder, 5.0 * np.arange(8))
                    broken_dicom(folder / name, kind, like=folder / "s007.dcm")
                    stack, logged = self.load(folder)
                    self.assertEqual(stack.shape[0], 7 if where == "middle" else 8)
                    self.assertEqual([os.path.basename(p) for p, _ in stack.meta["unreadable_files"]], [name])
                    notes = " ".join(stack.meta["notes"])
                    self.assertIn(f"unreadable, left out: {name} (", notes)
                    self.assertIn(reason, notes)
                    self.assertIn(str(folder / name), logged)
                    self.assertIn(reason, logged)

    def test_real_series_with_unreadable_files(self):
        src, folder = self.real_copy()
        broken_dicom(folder / "1-31.dcm", "empty")
        broken_dicom(folder / "1-15.dcm", "random")
        broken_dicom(folder / "1-32.dcm", "header", like=src / "1-30.dcm")  # its header repeats 1-30's position
        stack, logged = self.load(folder)
        self.assertEqual(stack.shape[0], 29)
        notes = " ".join(stack.meta["notes"])
        self.assertIn("3 unreadable, left out: 1-15.dcm (not a DICOM image", notes)
        for text in ("1-31.dcm (empty (0 bytes))", "1-32.dcm (not an image (no pixel data"):
            self.assertIn(text, notes)
        self.assertEqual(len(stack.meta["gaps"]), 1)  # where 1-15.dcm was

    def test_all_unreadable(self):
        for n in range(3):
            broken_dicom(self.tmp / f"x{n}.dcm", "empty")
        with self.assertRaises(ValueError) as cm:
            LoadCTSeries()(self.tmp)
        for text in ("holds no DICOM image files", "x0.dcm", "x2.dcm", "empty (0 bytes)"):
            self.assertIn(text, str(cm.exception))


class TestWhatIsBesideTheSeries(_Tmp):
    def test_sub_folders_and_nifti_files_listed(self):
        write_series(self.tmp / "s", 5.0 * np.arange(8))
        write_series(self.tmp / "s" / "older", 5.0 * np.arange(4))
        (self.tmp / "s" / "scan.nii.gz").write_bytes(b"\x1f\x8b not read")
        (self.tmp / "s" / "notes.txt").write_text("hello")
        stack, logged = self.load(self.tmp / "s")
        self.assertEqual(stack.shape[0], 8)
        notes = " ".join(stack.meta["notes"])
        for text in ("skipped", "older/ (sub-folder, not searched)", "scan.nii.gz (NIfTI", "notes.txt (not DICOM)"):
            self.assertIn(text, notes)
            self.assertIn(text, logged)


class TestModalityAndPatient(_Tmp):
    def test_non_ct_refused_unless_asked(self):
        write_series(self.tmp / "mr", 5.0 * np.arange(6), modality="MR")
        with self.assertRaises(ValueError) as cm:
            LoadCTSeries()(self.tmp / "mr")
        for text in (str(self.tmp / "mr"), "Modality 'MR'", "not CT", "allow_non_ct"):
            self.assertIn(text, str(cm.exception))
        stack, logged = self.load(self.tmp / "mr", allow_non_ct=True)
        self.assertEqual(stack.shape[0], 6)
        self.assertIn("Modality 'MR' (6 files), not CT: read because allow_non_ct is set", " ".join(stack.meta["notes"]))

    def test_non_ct_slice_in_real_series(self):
        _, folder = self.real_copy()
        edit_slice(folder / "1-07.dcm", Modality="PT")
        with self.assertRaisesRegex(ValueError, r"Modality 'PT' \(1 file: 1-07.dcm\), not CT"):
            LoadCTSeries()(folder)

    def test_several_patients_in_one_series(self):
        _, folder = self.real_copy()
        edit_slice(folder / "1-07.dcm", PatientID="Someone-Else")
        stack, logged = self.load(folder)
        self.assertEqual(stack.shape[0], 30)
        note = "several PatientIDs in series"
        self.assertIn(note, logged)
        notes = " ".join(stack.meta["notes"])
        for text in (note, "'Lung_Dx-A0002' (29 files)", "'Someone-Else' (1 file: 1-07.dcm)"):
            self.assertIn(text, notes)


if __name__ == "__main__":
    unittest.main()
