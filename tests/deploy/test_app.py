# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The deploy application's operator chain on the CPU (series selection -> volume -> scan classifier -> SR), its
command line, and the MONAI Deploy SDK wrapper's import guard."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from contextlib import chdir, redirect_stderr, redirect_stdout
from pathlib import Path
from unittest import mock

import numpy as np
import pydicom
from pydicom.dataset import Dataset

from mstl_monai.deploy import ScanReportPipeline, SeriesSelector
from mstl_monai.deploy.__main__ import main as deploy_main
from mstl_monai.deploy.operators import bundle_config
from mstl_monai.inferers.scan_inference import _safe_name
from tests.deploy.test_sr import by_code, content_items, make_checkpoint
from tests.scan._series import write_series
from tests.scan.test_scan_inference import SERIES
from tests.utils import REPO_ROOT, require_real_data


def header(**attrs) -> Dataset:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    return ds


def restamp(folder: Path, **attrs) -> None:
    """Set header attributes of every file of a synthetic series."""
    for p in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(p)
        for k, v in attrs.items():
            setattr(ds, k, v)
        ds.save_as(p, enforce_file_format=True)


class TestSeriesSelectorRules(unittest.TestCase):
    def test_condition_matching(self):
        sel = SeriesSelector()
        ct = header(Modality="CT", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], SliceThickness=5.0)
        match = sel._matches
        self.assertTrue(match({"Modality": "(?i)^CT$", "ImageType": ["original", "PRIMARY"]}, ct))
        self.assertFalse(match({"ImageType": ["PRIMARY", "LOCALIZER"]}, ct))  # every listed value needed
        self.assertFalse(match({"Modality": "(?i)^CT$"}, header(Modality="PT")))
        self.assertTrue(match({"Modality": "ct"}, ct))  # case-insensitive equality
        self.assertTrue(match({"SliceThickness": 5}, ct))
        self.assertFalse(match({"SliceThickness": 3}, ct))
        self.assertFalse(match({"BodyPartExamined": "CHEST"}, ct))  # missing attribute: no match
        self.assertTrue(match({"BodyPartExamined": ""}, ct))  # an empty condition is ignored

    def test_bad_rules_name_the_problem(self):
        with self.assertRaisesRegex(ValueError, "not JSON"):
            SeriesSelector("{selections: oops")
        with self.assertRaisesRegex(ValueError, "'selections'"):
            SeriesSelector({"rules": []})
        tmp = Path(tempfile.mkdtemp(prefix="mstl-rules-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        (tmp / "rules.json").write_text(json.dumps({"selections": [{"name": "PT", "conditions": {"Modality": "PT"}}]}))
        self.assertEqual(SeriesSelector(tmp / "rules.json").rules["selections"][0]["name"], "PT")
        with self.assertRaisesRegex(ValueError, "holds no DICOM image series"):
            SeriesSelector()(tmp)
        with self.assertRaisesRegex(ValueError, "is not a folder"):
            SeriesSelector()(tmp / "missing")


class TestBundleConfig(unittest.TestCase):
    """The bundle is the folder given, else $MSTL_BUNDLE_DIR, else ./bundle: never a folder beside the package."""

    def test_found_or_named_in_one_line(self):
        with tempfile.TemporaryDirectory() as d, chdir(d), mock.patch.dict(os.environ):
            os.environ.pop("MSTL_BUNDLE_DIR", None)
            with self.assertRaises(FileNotFoundError) as e:
                bundle_config()
            self.assertEqual(len(str(e.exception).splitlines()), 1)
            self.assertIn(f"{os.path.realpath(d)}/bundle", str(e.exception))
            self.assertRegex(str(e.exception), r"configs/inference_scan.yaml: pass the bundle folder \(--bundle_dir\) "
                                               r"or set MSTL_BUNDLE_DIR")
            os.environ["MSTL_BUNDLE_DIR"] = str(REPO_ROOT / "bundle")
            self.assertEqual(bundle_config(), REPO_ROOT / "bundle" / "configs" / "inference_scan.yaml")
            self.assertEqual(bundle_config(REPO_ROOT / "bundle"), REPO_ROOT / "bundle" / "configs" / "inference_scan.yaml")


class TestScanReportPipeline(unittest.TestCase):
    """A study folder: the real series (linked), a scout, a PET series and a smaller CT series of the same study."""

    def setUp(self):
        real = require_real_data(self) / SERIES
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-app-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.study = self.tmp / "study"
        (self.study / "ct").mkdir(parents=True)
        for p in sorted(real.glob("*.dcm")):
            os.symlink(p, self.study / "ct" / p.name)
        first = pydicom.dcmread(next(real.glob("*.dcm")), stop_before_pixels=True)
        self.first = first
        same_study = dict(StudyInstanceUID=first.StudyInstanceUID, PatientID=first.PatientID)
        write_series(self.study / "scout", [0.0, 5.0])
        restamp(self.study / "scout", ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"], **same_study)
        write_series(self.study / "pet", 5.0 * np.arange(12))
        restamp(self.study / "pet", Modality="PT", ImageType=["ORIGINAL", "PRIMARY"], **same_study)
        write_series(self.study / "thick", 5.0 * np.arange(12))
        restamp(self.study / "thick", ImageType=["ORIGINAL", "PRIMARY", "AXIAL"], **same_study)
        self.ckpt = make_checkpoint(self.tmp)
        self.overrides = {"n_bootstrap": 200, "batch_size": 8}

    def test_selects_the_ct_series_and_writes_its_sr(self):
        pipeline = ScanReportPipeline(self.ckpt, self.tmp / "out", overrides=self.overrides)
        chosen = pipeline.select(self.study)
        self.assertEqual([(s.folder, s.n_images) for s in chosen], [(str(self.study / "ct"), 30)])
        why = {Path(f).name: reason for f, _, reason in pipeline.selector.passed_over}
        self.assertEqual(why["pet"], "matches no selection rule")
        self.assertEqual(why["scout"], "2 image(s) < min_slices 10")
        self.assertIn("has a larger matching series", why["thick"])
        rows = pipeline.run(self.study)
        self.assertEqual(len(rows), 1)
        sr_file = Path(rows[0]["sr_file"])
        self.assertEqual(sr_file, self.tmp / "out" / "sr" / f"{_safe_name(str(self.study / 'ct'))}.dcm")  # as the heat maps
        sr = pydicom.dcmread(sr_file)
        self.assertEqual((sr.PatientID, sr.StudyInstanceUID), (self.first.PatientID, self.first.StudyInstanceUID))
        real_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (self.study / "ct").iterdir()}
        refs = {str(it.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for it in by_code(content_items(sr), "121324")}
        self.assertEqual(len(refs), rows[0]["slices_used"])
        self.assertTrue(refs <= real_uids)
        self.assertTrue((self.tmp / "out" / "scans.csv").is_file())

    def test_all_matched_reports_every_ct_series(self):
        pipeline = ScanReportPipeline(self.ckpt, self.tmp / "out", all_matched=True, overrides=self.overrides)
        rows = pipeline.run(self.study)
        self.assertEqual([Path(r["scan"]).name for r in rows], ["ct", "thick"])
        thick = pydicom.dcmread(rows[1]["sr_file"])  # a series without patient name etc.: empty Type 2 values
        self.assertEqual((thick.PatientID, str(thick.PatientName)), (self.first.PatientID, ""))

    def test_no_matching_series_is_one_clear_error(self):
        pipeline = ScanReportPipeline(self.ckpt, self.tmp / "out", rules={"selections": [{"name": "MR", "conditions": {"Modality": "MR"}}]})
        with self.assertRaisesRegex(ValueError, r"no DICOM series under .*study.* matches the selection rules: .*ct"):
            pipeline.run(self.study)

    def test_command_line(self):
        out = self.tmp / "cli"
        cmd = [sys.executable, "-m", "mstl_monai.deploy", "--ckpt", str(self.ckpt), "--input", str(self.study / "ct"),
               "--output_dir", str(out), "--set", "n_bootstrap=200"]
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS="1")
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        self.assertEqual(proc.returncode, 0, proc.stdout[-2000:] + proc.stderr[-3000:])
        self.assertIn(f"DICOM SR written to {out / 'sr' / _safe_name(str(self.study / 'ct'))}.dcm", proc.stdout)
        self.assertIn("1 DICOM SR(s) written", proc.stdout)
        bad = subprocess.run(cmd[:5] + ["--input", str(self.tmp / "nowhere"), "--output_dir", str(out)], capture_output=True,
                             text=True, timeout=600, env=env)
        self.assertEqual(bad.returncode, 2)
        self.assertEqual(bad.stderr.strip().splitlines()[-1], f"mstl_monai.deploy: DICOM input {str(self.tmp / 'nowhere')!r} is not a folder.")


class TestBadDeployInput(unittest.TestCase):
    """What the deploy command does with input it cannot use: one line, or no SR with the reason on every summary."""

    def setUp(self):
        self.real = require_real_data(self) / SERIES
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-app-bad-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.ckpt = make_checkpoint(self.tmp)

    def copy(self, name: str) -> Path:
        folder = self.tmp / "study" / name
        shutil.copytree(self.real, folder)
        return folder

    def test_unknown_rule_attribute_is_named(self):
        with self.assertRaises(ValueError) as cm:
            SeriesSelector({"selections": [{"name": "CT", "conditions": {"Modalty": "CT"}}]})
        self.assertEqual(str(cm.exception),
                         "series selection rule 'CT': 'Modalty' is not a DICOM attribute keyword: did you mean 'Modality'?")

    def test_misspelt_or_mistyped_setting_is_one_line(self):
        for item, text in (("n_bootstrp=50", "unknown setting 'n_bootstrp' (not in inference_scan.yaml): did you mean "
                                             "'n_bootstrap'?"),
                           ("n_bootstrap=abc", "setting 'n_bootstrap' must be a whole number like its default")):
            err = io.StringIO()
            with redirect_stderr(err):
                rc = deploy_main(["--ckpt", str(self.ckpt), "--input", str(self.real), "--output_dir",
                                  str(self.tmp / "out"), "--set", item])
            self.assertEqual(rc, 2)
            self.assertEqual(len(err.getvalue().strip().splitlines()), 1, err.getvalue())
            self.assertIn(text, err.getvalue())
        self.assertFalse((self.tmp / "out").exists())

    def test_output_dir_under_a_file_is_one_line(self):
        blocker = self.tmp / "afile"
        blocker.write_text("x")
        err = io.StringIO()
        with redirect_stderr(err):
            rc = deploy_main(["--ckpt", str(self.ckpt), "--input", str(self.real), "--output_dir", str(blocker / "out")])
        self.assertEqual(rc, 2)
        self.assertEqual(err.getvalue().strip(), f"mstl_monai.deploy: output_dir {str(blocker / 'out')!r}: "
                                                 f"{str(blocker)!r} is a file, not a folder.")

    def test_equal_series_tie_is_stated(self):
        """Two 30-image CT series of one study: the lower SeriesNumber is taken, and the other is not called smaller."""
        a, b = self.copy("a"), self.copy("b")
        restamp(a, SeriesNumber=7)
        restamp(b, SeriesNumber=3, SeriesInstanceUID="1.2.826.0.1.3680043.8.498.1")
        sel = SeriesSelector()
        (chosen,) = sel(self.tmp / "study")
        self.assertEqual((Path(chosen.folder).name, chosen.series_number), ("b", 3))
        ((folder, _, why),) = sel.passed_over
        self.assertEqual(Path(folder).name, "a")
        self.assertNotIn("larger", why)
        self.assertIn("another matching series of the same size (30 images): 1.2.826.0.1.3680043.8.498.1 was taken, "
                      "the first by SeriesNumber, then SeriesInstanceUID", why)

    def test_series_mixing_patients_gets_no_sr(self):
        folder = self.copy("twopat")
        for p in sorted(folder.glob("*.dcm"))[:15]:
            ds = pydicom.dcmread(p)
            ds.PatientID = "OTHER"
            ds.save_as(p, enforce_file_format=True)
        out = io.StringIO()
        with redirect_stdout(out):
            rc = deploy_main(["--ckpt", str(self.ckpt), "--input", str(folder), "--output_dir", str(self.tmp / "out"),
                              "--set", "n_bootstrap=20"])
        text = out.getvalue()
        self.assertEqual(rc, 1, text)
        self.assertEqual(list((self.tmp / "out").rglob("*.dcm")), [])
        summary = [line for line in text.splitlines() if line.startswith(f"{folder} [CT series")]
        self.assertEqual(len(summary), 1, text)
        self.assertIn("; no DICOM SR: the files of CT scan", summary[0])
        self.assertIn("carry 2 PatientIDs", summary[0])
        self.assertIn("0 DICOM SR(s) written", text)
        self.assertIn(f"no DICOM SR for {folder}: ", text)


class TestMonaiDeployWrapper(unittest.TestCase):
    def test_sdk_wrapper_imports_only_with_the_sdk(self):
        try:
            has_sdk = importlib.util.find_spec("monai.deploy") is not None
        except ModuleNotFoundError:
            has_sdk = False
        if has_sdk:
            module = importlib.import_module("mstl_monai.deploy.monai_deploy_app")
            self.assertTrue(hasattr(module, "CovidScanReportApp"))
            return
        with self.assertRaisesRegex(ImportError, "monai-deploy-app-sdk.*holoscan-cu13.*python -m mstl_monai.deploy"):
            importlib.import_module("mstl_monai.deploy.monai_deploy_app")
        self.assertNotIn("mstl_monai.deploy.monai_deploy_app", sys.modules)


if __name__ == "__main__":
    unittest.main()
