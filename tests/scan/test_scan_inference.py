# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Scan-level diagnosis: slice selection, aggregation, ScanClassifier and configs/inference_scan.yaml end to end."""

from __future__ import annotations

import csv
import shutil
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.transforms import CenterSpatialCrop, Compose, NormalizeIntensity, Resize, SpatialPad

from mstl_monai.data import dicom_series_to_nifti
from mstl_monai.inferers import (
    ScanClassifier,
    ScanWriter,
    aggregate_slice_probabilities,
    collect_scans,
    select_lung_slices,
)
from mstl_monai.networks import build_network
from mstl_monai.networks.sidecar import checkpoint_info, write_checkpoint_info
from mstl_monai.transforms import LoadCTSeries
from mstl_monai.utils import root_cause
from tests.bundle._bundle_utils import CONFIGS, run_bundle
from tests.scan._series import write_series
from tests.utils import require_real_data

SERIES = "ct-series/lung-pet-ct-dx-A0002"


def small_net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network("resnet18", n_attn=0, num_classes=2, n_input_channels=1).eval()


def slice_preprocessing(size: int = 32) -> Compose:
    return Compose(
        [
            Resize(spatial_size=size + 4, size_mode="longest", mode="area"),
            SpatialPad(spatial_size=(size + 4, size + 4)),
            CenterSpatialCrop(roi_size=(size, size)),
            NormalizeIntensity(subtrahend=0.449, divisor=0.226),
        ]
    )


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class TestAggregation(unittest.TestCase):
    def test_top_k_mean_and_interval(self):
        p = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.1, 0.2, 0.1])
        out = aggregate_slice_probabilities(p, top_fraction=0.25, n_bootstrap=500, seed=1)
        self.assertEqual(out["k"], 2)
        self.assertAlmostEqual(out["probability"], 0.85)
        self.assertLessEqual(out["ci_low"], out["probability"])
        self.assertGreaterEqual(out["ci_high"], out["probability"])
        self.assertLess(out["ci_low"], out["ci_high"])
        self.assertEqual(out["aggregation"], "top2/8-mean")
        again = aggregate_slice_probabilities(p, top_fraction=0.25, n_bootstrap=500, seed=1)
        self.assertEqual(out, again)  # seeded
        mean = aggregate_slice_probabilities(p, top_fraction=1.0, n_bootstrap=0)
        self.assertAlmostEqual(mean["probability"], float(p.mean()))
        self.assertEqual((mean["ci_low"], mean["ci_high"]), (None, None))  # no interval, not a zero-width one
        one = aggregate_slice_probabilities([0.7])
        self.assertEqual((one["probability"], one["ci_low"], one["ci_high"], one["k"]), (0.7, None, None, 1))

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            aggregate_slice_probabilities([])
        with self.assertRaises(ValueError):
            aggregate_slice_probabilities([0.5], top_fraction=0.0)

    def test_selection_rule(self):
        f = np.array([0.0, 0.01, 0.03, 0.1, 0.16, 0.12, 0.04, 0.005])
        found = np.array([False, True, True, True, True, True, True, True])
        np.testing.assert_array_equal(
            select_lung_slices(f, found, min_lung_share=0.25), [False, False, False, True, True, True, True, False]
        )
        self.assertFalse(select_lung_slices(np.zeros(4), np.zeros(4, bool)).any())
        self.assertFalse(select_lung_slices(np.full(3, 0.005), np.ones(3, bool)).any())  # below min_lung_fraction


class TestScanClassifier(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-scan-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_synthetic_scan(self):
        write_series(self.tmp / "s", 5.0 * np.arange(12))
        stack = LoadCTSeries()(self.tmp / "s")
        clf = ScanClassifier(small_net(), slice_preprocessing(), batch_size=4, n_top=2, n_bootstrap=100)
        res = clf(stack)
        self.assertEqual(res["n_slices"], 12)
        self.assertEqual(res["slices_used"] + res["slices_skipped"], 12)
        self.assertEqual(res["slices_used"], 8)  # the phantom has no lung in its first and last two slices
        used = [r for r in res["slices"] if r["used"]]
        self.assertTrue(all(r["probability"] is not None for r in used))
        self.assertTrue(all(r["probability"] is None for r in res["slices"] if not r["used"]))
        probs = sorted((r["probability"] for r in used), reverse=True)
        self.assertAlmostEqual(res["probability"], float(np.mean(probs[: res["k"]])), places=6)
        self.assertEqual(len(res["top_slices"]), 2)
        self.assertAlmostEqual(res["top_slices"][0]["probability"], probs[0])
        for t in res["top_slices"]:
            self.assertEqual(t["heatmap"].shape, (64, 64))  # back on the slice's own grid
            self.assertGreaterEqual(float(t["heatmap"].min()), 0.0)
            self.assertLessEqual(float(t["heatmap"].max()), 1.0)
        # batch size does not change the answer
        res1 = ScanClassifier(small_net(), slice_preprocessing(), batch_size=1, n_top=0, n_bootstrap=100)(stack)
        self.assertAlmostEqual(res1["probability"], res["probability"], places=4)

    def test_constant_volume(self):
        vol = np.full((40, 40, 6), -1000, dtype=np.int16)
        nib.save(nib.Nifti1Image(vol, np.diag([-1.0, -1.0, 5.0, 1.0])), str(self.tmp / "blank.nii.gz"))
        stack = LoadCTSeries()(self.tmp / "blank.nii.gz")
        clf = ScanClassifier(small_net(), slice_preprocessing(), n_top=0)
        with self.assertRaises(ValueError) as cm:
            clf(stack)
        msg = str(cm.exception)
        for text in ("blank.nii.gz", "no slice shows lung", "constant volume", "HU -1000..-1000"):
            self.assertIn(text, msg)

    def test_collect_scans(self):
        write_series(self.tmp / "root" / "p1" / "series", 5.0 * np.arange(3))
        (self.tmp / "root" / "p2").mkdir(parents=True)
        (self.tmp / "root" / "p2" / "scan.nii.gz").write_bytes(b"")
        got = collect_scans([str(self.tmp / "root"), str(self.tmp / "root" / "p1" / "series")])
        self.assertEqual(
            got,
            [
                str(self.tmp / "root" / "p1" / "series"),
                str(self.tmp / "root" / "p2" / "scan.nii.gz"),
                str(self.tmp / "root" / "p1" / "series"),
            ],
        )

    def test_writer_threshold(self):
        w = ScanWriter(str(self.tmp / "out"), threshold=0.7)
        self.assertEqual(w.decision(0.69), "non-COVID")
        self.assertEqual(w.decision(0.7), "non-COVID")  # above the threshold, as for single slices
        self.assertEqual(w.decision(0.71), "COVID")
        self.assertEqual(w.threshold_source, "given")
        w = ScanWriter(str(self.tmp / "out"), threshold={"value": 0.3, "source": "checkpoint"})
        self.assertEqual((w.threshold, w.threshold_source, w.decision(0.31)), (0.3, "checkpoint", "COVID"))
        self.assertEqual(ScanWriter(str(self.tmp / "out"), threshold=None).threshold, 0.5)
        with self.assertRaisesRegex(ValueError, "threshold"):
            ScanWriter(str(self.tmp), threshold=1.5)


class TestInferenceScanCheckpointSettings(unittest.TestCase):
    """``configs/inference_scan.yaml`` takes network, input size, class names and threshold from ``model.pt.json``."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-scan-ckpt-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        net = build_network("resnet18", n_attn=1, num_classes=2, n_input_channels=1)
        self.ckpt = self.tmp / "model.pt"
        info = checkpoint_info("resnet18", 1, 1, 2, image_size=48, resize_size=56, class_names=["non-COVID", "COVID"])
        write_checkpoint_info(self.ckpt, info, decision_threshold=0.37)
        torch.save(net.state_dict(), self.ckpt)

    def parse(self, **overrides) -> ConfigParser:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "inference_scan.yaml"))
        parser.update(dict({"bundle_root": str(self.tmp), "ckpt_path": str(self.ckpt), "device": "cpu"}, **overrides))
        parser.parse()
        return parser

    def test_settings_from_sidecar(self):
        parser = self.parse()
        self.assertEqual([parser.get_parsed_content(k) for k in ("backbone", "n_attn", "image_size", "resize_size")],
                         ["resnet18", 1, 48, 56])
        clf = parser.get_parsed_content("classifier")
        self.assertEqual(len(clf.network.attn), 1)  # the +1 ATTN network of the checkpoint, weights loaded
        self.assertEqual(tuple(clf._prepare(torch.rand(1, 100, 80)).shape), (1, 48, 48))
        writer = parser.get_parsed_content("writer")
        self.assertEqual((writer.threshold, writer.threshold_source), (0.37, "checkpoint"))
        writer = self.parse(threshold=0.5).get_parsed_content("writer")  # an explicit threshold is an override
        self.assertEqual((writer.threshold, writer.threshold_source), (0.5, "override"))
        self.assertEqual(self.parse(image_size=48).get_parsed_content("classifier").network.fc.out_features, 2)

    def test_contradicting_override_names_both_values(self):
        for key, value, want in (("image_size", 64, "image_size=64 (checkpoint: 48)"),
                                 ("n_attn", 5, "n_attn=5 (checkpoint: 1)"),
                                 ("backbone", "resnet50", "backbone='resnet50' (checkpoint: 'resnet18')")):
            with self.subTest(key=key):
                with self.assertRaises(Exception) as ctx:
                    self.parse(**{key: value}).get_parsed_content("classifier")
                cause = root_cause(ctx.exception)
                self.assertIsInstance(cause, ValueError)
                self.assertIn(want, str(cause))
                self.assertIn(str(self.ckpt), str(cause))


class TestInferenceScanBundle(unittest.TestCase):
    """``configs/inference_scan.yaml`` run like a user would, on the real series and bad inputs beside it."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-scan-bundle-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        torch.save(small_net().state_dict(), self.tmp / "model.pt")
        self.overrides = {
            "ckpt_path": str(self.tmp / "model.pt"),
            "backbone": "resnet18",
            "image_size": 64,
            "resize_size": 72,
            "batch_size": 8,
            "n_bootstrap": 200,
            "output_dir": str(self.tmp / "out"),
        }

    def test_real_series_dicom_and_nifti(self):
        folder = require_real_data(self) / SERIES
        nii = dicom_series_to_nifti(folder, self.tmp / "a0002.nii.gz")
        blank = self.tmp / "blank.nii.gz"
        nib.save(nib.Nifti1Image(np.full((32, 32, 5), -1000, np.int16), np.diag([-1.0, -1.0, 5.0, 1.0])), str(blank))
        (self.tmp / "no_dicom").mkdir()
        (self.tmp / "no_dicom" / "notes.txt").write_text("nothing here")
        gap = self.tmp / "gap_series"
        write_series(gap, np.delete(5.0 * np.arange(14), [6, 7]))
        inputs = [str(folder), str(nii), str(blank), str(self.tmp / "no_dicom"), str(gap)]
        proc = run_bundle(["inference_scan.yaml"], dict(self.overrides, input=inputs), timeout=900)
        self.assertIn("P(COVID) =", proc.stdout)
        scans = read_csv(self.tmp / "out" / "scans.csv")
        self.assertEqual([r["scan"] for r in scans], inputs)
        real, vol, no_lung, no_dcm, gapped = scans
        for r in (real, vol):
            self.assertEqual(r["status"], "ok", r)
            self.assertEqual(int(r["n_slices"]), 30)
            self.assertGreaterEqual(int(r["slices_used"]), 15)  # the lungs span most of this chest series
            self.assertEqual(int(r["slices_used"]) + int(r["slices_skipped"]), 30)
            self.assertGreater(int(r["slices_skipped"]), 0)  # neck / upper abdomen slices
            self.assertLessEqual(float(r["ci_low"]), float(r["probability"]))
            self.assertLessEqual(float(r["probability"]), float(r["ci_high"]))
            self.assertEqual(r["decision"], "COVID" if float(r["probability"]) > 0.5 else "non-COVID")
            self.assertEqual(len(r["top_slices_z_mm"].split(";")), 3)
        self.assertEqual(real["source_format"], "dicom-series")
        self.assertEqual(vol["source_format"], "nifti")
        # the NIfTI written from the series gives the DICOM path's answer
        self.assertAlmostEqual(float(vol["probability"]), float(real["probability"]), places=4)
        self.assertEqual(vol["slices_used"], real["slices_used"])
        self.assertEqual(vol["top_slices_z_mm"], real["top_slices_z_mm"])
        self.assertEqual(no_lung["status"], "no-lung")
        self.assertIn("blank.nii.gz", no_lung["message"])
        self.assertIn("constant volume", no_lung["message"])
        self.assertEqual(no_dcm["status"], "error")
        self.assertIn("holds no DICOM image files", no_dcm["message"])
        self.assertEqual(gapped["status"], "ok", gapped)
        self.assertIn("2 missing after z=25", gapped["gaps"])
        slices = read_csv(self.tmp / "out" / "slices.csv")
        self.assertEqual(len(slices), 30 + 30 + 12)
        z = [float(s["z_mm"]) for s in slices if s["scan"] == str(folder)]
        self.assertEqual(z, sorted(z))
        self.assertEqual(len(list((self.tmp / "out" / "heatmaps").glob("*.png"))), 9)

    def test_no_scan_classified(self):
        blank = self.tmp / "blank.nii.gz"
        nib.save(nib.Nifti1Image(np.full((32, 32, 5), -1000, np.int16), np.diag([-1.0, -1.0, 5.0, 1.0])), str(blank))
        proc = run_bundle(["inference_scan.yaml"], dict(self.overrides, input=[str(blank)]), check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("none of the 1 scans could be classified", proc.stderr + proc.stdout)
        rows = read_csv(self.tmp / "out" / "scans.csv")  # the reason is on disk all the same
        self.assertEqual(rows[0]["status"], "no-lung")


if __name__ == "__main__":
    unittest.main()
