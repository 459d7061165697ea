# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""What scan inference reports when its input or settings are off: fallbacks and files left out in ``scans.csv``
and the log, intervals that are not available, options checked up front, heat-map names, the threshold as stored."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import unittest
from pathlib import Path

import numpy as np

from mstl_monai.inferers import ScanClassifier, ScanWriter, aggregate_slice_probabilities, run_scan_inference
from mstl_monai.transforms import LoadCTSeries
from mstl_monai.utils import root_cause
from tests.scan._series import REAL_SERIES, broken_dicom, copy_series, edit_slice, write_series
from tests.scan import test_scan_inference as scan_tests  # a module, so that its test cases are not collected twice
from tests.scan.test_scan_inference import read_csv, slice_preprocessing, small_net
from tests.utils import require_real_data


class TestInterval(unittest.TestCase):
    def test_no_interval_from_too_few_slices_or_no_resamples(self):
        for probs, n_boot, why in (([0.7], 1000, "1 slice"), ([0.2, 0.9], 1000, "2 slices"),
                                   ([0.1, 0.5, 0.9, 0.3], 0, "n_bootstrap is 0"),
                                   ([0.4] * 6, 1000, "all 6 slices have the same probability")):
            with self.subTest(probs=probs, n_bootstrap=n_boot):
                out = aggregate_slice_probabilities(probs, n_bootstrap=n_boot)
                self.assertIsNone(out["ci_low"])
                self.assertIsNone(out["ci_high"])
                self.assertIn("95 % CI not available", out["ci_note"])
                self.assertIn(why, out["ci_note"])
        out = aggregate_slice_probabilities([0.1, 0.5, 0.9], n_bootstrap=200)
        self.assertLess(out["ci_low"], out["ci_high"])
        self.assertEqual(out["ci_note"], "")


class TestOptionsChecked(unittest.TestCase):
    BAD = (
        ({"top_fraction": 0}, "top_fraction must be in (0, 1], got 0"),
        ({"top_fraction": 1.5}, "top_fraction must be in (0, 1], got 1.5"),
        ({"top_fraction": "abc"}, "top_fraction must be a number in (0, 1], got 'abc'"),
        ({"min_lung_share": 1.5}, "min_lung_share must be in [0, 1], got 1.5"),
        ({"min_lung_fraction": 1.0}, "min_lung_fraction must be in [0, 1), got 1.0"),
        ({"n_bootstrap": -5}, "n_bootstrap must be a whole number >= 0 (0: no interval), got -5"),
        ({"n_bootstrap": 2.5}, "n_bootstrap must be a whole number >= 0 (0: no interval), got 2.5"),
        ({"n_top": -1}, "n_top must be a whole number >= 0, got -1"),
        ({"batch_size": 0}, "batch_size must be a whole number >= 1, got 0"),
        ({"positive_class": -1}, "positive_class must be a whole number >= 0, got -1"),
    )

    def test_each_bad_option_named(self):
        net = small_net()
        for kwargs, msg in self.BAD:
            with self.subTest(**kwargs):
                with self.assertRaises(ValueError) as cm:
                    ScanClassifier(net, slice_preprocessing(), **kwargs)
                self.assertEqual(str(cm.exception), msg + ".")

    def test_bundle_stops_before_reading_a_scan(self):
        """The bundle's classifier is built before any scan is read: a bad option stops it with that one line."""
        case = scan_tests.TestInferenceScanCheckpointSettings("test_settings_from_sidecar")
        case.setUp()
        try:
            for key, value, msg in (("top_fraction", 0, "top_fraction must be in (0, 1], got 0"),
                                    ("min_lung_share", 1.5, "min_lung_share must be in [0, 1], got 1.5"),
                                    ("n_bootstrap", -1, "n_bootstrap must be a whole number >= 0")):
                with self.subTest(key=key), self.assertRaises(Exception) as cm:
                    case.parse(**{key: value}).get_parsed_content("classifier")
                self.assertIsInstance(root_cause(cm.exception), ValueError)
                self.assertIn(msg, str(root_cause(cm.exception)))
            loader = case.parse().get_parsed_content("loader")
            self.assertFalse(loader.allow_non_ct)
            self.assertTrue(case.parse(allow_non_ct=True).get_parsed_content("loader").allow_non_ct)
        finally:
            case.doCleanups()


class _Run(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-scan-report-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def run_scans(self, inputs, threshold=0.5, **options):
        kw = dict(batch_size=8, n_top=1, n_bootstrap=200)
        kw.update(options)
        clf = ScanClassifier(small_net(), slice_preprocessing(64), **kw)
        writer = ScanWriter(str(self.tmp / "out"), threshold=threshold)
        out = io.StringIO()
        with contextlib.redirect_stdout(out), self.assertLogs("mstl_monai", level="WARNING") as logs:
            try:
                run_scan_inference([str(i) for i in inputs], LoadCTSeries(), clf, writer)
            except ValueError:
                pass
            import logging

            logging.getLogger("mstl_monai").warning("end of run")  # so that assertLogs never fails on a clean run
        rows = {r["scan"]: r for r in read_csv(self.tmp / "out" / "scans.csv")}
        slices = read_csv(self.tmp / "out" / "slices.csv")
        return rows, slices, out.getvalue(), "\n".join(logs.output)


class TestScanRows(_Run):
    def test_real_series_damaged_copies(self):
        src = require_real_data(self) / REAL_SERIES
        noipp = copy_series(src, self.tmp / "noipp")
        edit_slice(noipp / "1-15.dcm", delete=("ImagePositionPatient",))
        broken = copy_series(src, self.tmp / "broken")
        broken_dicom(broken / "1-31.dcm", "empty")  # last by name
        broken_dicom(broken / "1-05.dcm", "random")
        (broken / "extra").mkdir()
        rows, slices, out, logged = self.run_scans([src, noipp, broken], n_top=1)
        real, moved, bad = rows[str(src)], rows[str(noipp)], rows[str(broken)]
        for r in (real, moved, bad):
            self.assertEqual(r["status"], "ok", r)
        # the slice without a position is classified in the series' orientation: the same probability as before
        prob = {(s["scan"], os.path.basename(s["source"])): s["probability"] for s in slices}
        for name in ("1-15.dcm", "1-14.dcm"):
            self.assertNotEqual(prob[(str(src), name)], "")  # a slice that is classified
            self.assertAlmostEqual(float(prob[(str(noipp), name)]), float(prob[(str(src), name)]), places=5, msg=name)
        self.assertAlmostEqual(float(moved["probability"]), float(real["probability"]), places=5)
        self.assertEqual(real["position_source"], "ImagePositionPatient")
        self.assertEqual(moved["position_source"], "InstanceNumber")
        self.assertIn("no ImagePositionPatient in 1-15.dcm (1 of 30 files): all slices ordered by InstanceNumber, "
                      "z_mm not available", moved["message"])
        self.assertEqual(moved["top_slices_z_mm"], "")
        self.assertTrue(all(s["z_mm"] == "" for s in slices if s["scan"] == str(noipp)))
        self.assertEqual(real["message"], "")
        self.assertIn("2 unreadable, left out: 1-05.dcm (not a DICOM image", bad["message"])
        self.assertIn("1-31.dcm (empty (0 bytes))", bad["message"])
        self.assertIn("extra/ (sub-folder, not searched)", bad["message"])
        self.assertIn("1 missing after z=272", bad["gaps"])  # where 1-05.dcm was
        self.assertEqual(int(bad["n_slices"]), 29)
        self.assertIn(str(broken / "1-31.dcm"), logged)
        self.assertIn(bad["message"], out)  # the one line per scan says it too
        heatmaps = sorted(p.name for p in (self.tmp / "out" / "heatmaps").glob("*.png"))
        self.assertEqual(len(heatmaps), 3)
        self.assertTrue(any("_top1_s" in h for h in heatmaps), heatmaps)  # no z: named by slice index

    def test_non_ct_and_interval_not_available(self):
        write_series(self.tmp / "mr", 5.0 * np.arange(12), modality="MR")
        write_series(self.tmp / "ct", 5.0 * np.arange(12))
        rows, _, out, _ = self.run_scans([self.tmp / "mr", self.tmp / "ct"], n_bootstrap=0)
        mr, ct = rows[str(self.tmp / "mr")], rows[str(self.tmp / "ct")]
        self.assertEqual(mr["status"], "error")
        self.assertIn("Modality 'MR' (12 files), not CT", mr["message"])
        self.assertIn("allow_non_ct", mr["message"])
        self.assertEqual((ct["ci_low"], ct["ci_high"]), ("", ""))
        self.assertIn("95 % CI not available (n_bootstrap is 0)", ct["message"])
        self.assertIn("[95% CI not available]", out)
        write_series(self.tmp / "two", 5.0 * np.arange(6))  # lung in its 2 middle slices only
        rows, _, out, _ = self.run_scans([self.tmp / "two"])
        two = rows[str(self.tmp / "two")]
        self.assertEqual(int(two["slices_used"]), 2)
        self.assertEqual((two["ci_low"], two["ci_high"]), ("", ""))
        self.assertIn("95 % CI not available (2 slices used; a bootstrap over slices needs at least 3)", two["message"])
        self.assertIn("[95% CI not available]", out)

    def test_same_folder_names_get_their_own_heat_maps(self):
        for parent in ("a", "b"):
            write_series(self.tmp / parent / "scan1", 5.0 * np.arange(10))
        rows, _, _, _ = self.run_scans([self.tmp / "a" / "scan1", self.tmp / "b" / "scan1"], n_top=2)
        self.assertEqual(len(rows), 2)
        heatmaps = sorted(p.name for p in (self.tmp / "out" / "heatmaps").glob("*.png"))
        self.assertEqual(len(heatmaps), 4, heatmaps)
        self.assertTrue(all(h.startswith("scan1-") for h in heatmaps), heatmaps)

    def test_threshold_printed_as_stored(self):
        write_series(self.tmp / "ct", 5.0 * np.arange(10))
        rows, _, out, _ = self.run_scans([self.tmp / "ct"], threshold=0.99999)
        self.assertIn("at threshold 0.99999;", out)
        self.assertNotIn("at threshold 1;", out)
        self.assertEqual(rows[str(self.tmp / "ct")]["threshold"], "0.99999")


if __name__ == "__main__":
    unittest.main()
