"""inference.yaml over a folder of mixed, valid slice kinds (issue 11 items 1 and 5; issue 12 item 6)."""

from __future__ import annotations

import csv
import shutil
import tempfile
import unittest
from pathlib import Path

import torch

from mstl_monai.networks import build_network
from tests.bundle._bundle_utils import run_bundle
from tests.mixed_slices import make_mixed_slices
from tests.utils import require_real_data


class TestBundleInference(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_infer_"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_mixed_kinds_predicted_flagged_and_summarised(self):
        root = require_real_data(self)
        files = make_mixed_slices(self.tmp / "in", root)
        torch.manual_seed(0)
        ckpt = self.tmp / "model.pt"
        torch.save(build_network("resnet18", n_input_channels=1, num_classes=2).state_dict(), ckpt)
        out = self.tmp / "out"
        out.mkdir()
        earlier = "file,pred\nearlier.png,1\n"
        (out / "predictions.csv").write_text(earlier)
        overrides = {
            "input": str(self.tmp / "in"), "output_dir": str(out), "ckpt_path": str(ckpt), "backbone": "resnet18",
            "image_size": 32, "resize_size": 36, "batch_size": 3, "amp": False,
        }
        proc = run_bundle(["inference.yaml"], overrides, check=False)
        log = proc.stdout + proc.stderr
        self.assertEqual(proc.returncode, 0, log[-4000:])
        with open(out / "predictions.csv", newline="") as f:
            rows = {Path(r["file"]).name: r for r in csv.DictReader(f)}
        self.assertEqual(sorted(rows), sorted(p.name for p in files.values()))  # every kind is predicted
        self.assertFalse((out / "predictions.csv.partial").exists())
        # flagged, not hidden: the black image has a prediction and lung_found False
        black = rows["black.png"]
        self.assertEqual((black["lung_found"], black["lung_box_fraction"]), ("False", ""))
        self.assertAlmostEqual(float(black["prob_non-COVID"]) + float(black["prob_COVID"]), 1.0, places=4)
        for kind in ("png0", "dicom", "dicom_flipped"):
            r = rows[files[kind].name]
            self.assertEqual(r["lung_found"], "True", kind)
            self.assertTrue(0.0 < float(r["lung_box_fraction"]) <= 1.0, kind)
        # the end of the run says what was written where, and how many predictions had no lung
        summary = [line for line in log.splitlines() if "inference done" in line]
        self.assertEqual(len(summary), 1, log[-3000:])
        self.assertIn(f"{len(files)} predictions", summary[0])
        self.assertIn(str((out / "predictions.csv").resolve()), summary[0])
        self.assertIn("1 made without a lung found", summary[0])
        self.assertIn("no input skipped", summary[0])


if __name__ == "__main__":
    unittest.main()
