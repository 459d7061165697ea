"""The operating threshold chosen on val (issue 15 item 2): a tiny real finetune writes it into model.pt.json, and
evaluate.yaml and inference.yaml use it (overridable, 0.5 still reported)."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import unittest
from pathlib import Path

from tests.bundle._bundle_utils import TINY, phantom_dataset, run_bundle


class TestDecisionThreshold(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_threshold_"))
        cls.data = phantom_dataset(cls.tmp, n_per_class=8)
        cls.ov = dict(TINY, dataset_dir=str(cls.data), n_attn=0, epochs=2, run_dir=str(cls.tmp / "ft"), selection_min_class_fraction=0.0)
        proc = run_bundle(["train.yaml"], cls.ov)
        cls.train_log = proc.stdout + proc.stderr
        cls.ckpt = cls.tmp / "ft" / "models" / "model.pt"
        cls.info = json.loads((cls.tmp / "ft" / "models" / "model.pt.json").read_text())

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_finetune_stores_the_val_threshold(self):
        t = self.info["decision_threshold"]
        self.assertIsInstance(t, float, self.train_log[-3000:])
        self.assertTrue(0.0 < t < 1.0)
        self.assertIn("val_threshold", self.train_log)

    def test_finetune_stores_the_val_calibration_and_operating_points(self):
        t = self.info["temperature"]
        self.assertIsInstance(t, float, self.train_log[-3000:])
        self.assertGreater(t, 0.0)
        ops = self.info["operating_points"]
        self.assertEqual(set(ops), {"youden", "sensitivity_90"})
        self.assertEqual(ops["youden"], self.info["decision_threshold"])
        self.assertLessEqual(ops["sensitivity_90"], 1.0)
        cal = self.info["calibration"]
        self.assertGreaterEqual(cal["n_val"], 2)
        self.assertLessEqual(cal["val_ece_after"], cal["val_ece_before"] + 1e-9)  # fitted on these very images
        self.assertIn("val_temperature", self.train_log)

    def test_evaluate_reports_both_thresholds(self):
        run_bundle(["train.yaml", "evaluate.yaml"], dict(self.ov, n_bootstrap=20))
        m = json.loads((self.tmp / "ft" / "eval_test" / "metrics.json").read_text())
        self.assertEqual(m["decision_threshold"], {"value": self.info["decision_threshold"], "source": "checkpoint"})
        self.assertEqual(m["at_threshold"]["bootstrap"]["threshold"], self.info["decision_threshold"])
        self.assertEqual(m["bootstrap"]["threshold"], 0.5)  # the top level stays at 0.5
        out = self.tmp / "ft" / "eval_05"
        run_bundle(["train.yaml", "evaluate.yaml"], dict(self.ov, n_bootstrap=20, threshold=0.5, output_dir=str(out)))
        m05 = json.loads((out / "metrics.json").read_text())
        self.assertEqual(m05["decision_threshold"], {"value": 0.5, "source": "override"})
        self.assertEqual(m05["at_threshold"]["accuracy"], m05["accuracy"])

    def test_inference_uses_the_stored_threshold(self):
        t = self.info["decision_threshold"]
        for given, want in ((None, t), (0.5, 0.5)):
            out = self.tmp / f"infer_{given}"
            ov = {"input": str(self.data), "output_dir": str(out), "ckpt_path": str(self.ckpt), "amp": False}
            if given is not None:
                ov["threshold"] = given
            proc = run_bundle(["inference.yaml"], ov)
            with open(out / "predictions.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            self.assertTrue(rows)
            for r in rows:
                self.assertAlmostEqual(float(r["threshold"]), want, places=5)
                self.assertEqual(r["pred"], str(int(float(r["prob_COVID"]) > want)))
            self.assertIn(f"decision threshold {want:.4g}", proc.stdout + proc.stderr)

    def test_inference_applies_the_temperature_and_the_chosen_operating_point(self):
        import numpy as np

        from mstl_monai.metrics import apply_temperature

        rows = {}
        for name, ov in (("calibrated", {"operating_point": "sensitivity_90"}), ("raw", {"temperature": 1.0})):
            out = self.tmp / f"infer_{name}"
            run_bundle(["inference.yaml"], dict(ov, input=str(self.data), output_dir=str(out), ckpt_path=str(self.ckpt), amp=False))
            with open(out / "predictions.csv", newline="") as f:
                rows[name] = {r["file"]: r for r in csv.DictReader(f)}
        t90 = self.info["operating_points"]["sensitivity_90"]
        files = sorted(rows["raw"])
        raw = np.array([float(rows["raw"][k]["prob_COVID"]) for k in files])
        cal = np.array([float(rows["calibrated"][k]["prob_COVID"]) for k in files])
        np.testing.assert_allclose(cal, apply_temperature(raw, self.info["temperature"]), atol=1e-4)
        for k in files:
            self.assertAlmostEqual(float(rows["calibrated"][k]["threshold"]), t90, places=5)
        with self.assertRaises(AssertionError) as e:
            run_bundle(["inference.yaml"], {"input": str(self.data), "output_dir": str(self.tmp / "bad_op"), "ckpt_path": str(self.ckpt), "operating_point": "sens95"})
        self.assertIn("sens95", str(e.exception))

    def test_scan_classifier_applies_the_temperature(self):
        import torch

        from mstl_monai.inferers import ScanClassifier

        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
        stack = torch.randn(6, 1, 2, 2)
        p1 = ScanClassifier(net, amp=False).slice_probabilities(stack, range(6))
        p3 = ScanClassifier(net, amp=False, temperature=3.0).slice_probabilities(stack, range(6))
        logits = net(stack).detach()
        torch.testing.assert_close(torch.from_numpy(p3).float(), torch.softmax(logits / 3.0, 1)[:, 1], atol=1e-5, rtol=0)
        self.assertGreater(float(abs(p1 - p3).max()), 1e-4)
        with self.assertRaises(ValueError):
            ScanClassifier(net, temperature=0.0)

    def test_scan_classifier_applies_the_checkpoints_tta(self):
        # before: inference_scan.yaml ignored the checkpoint's `tta`, so a scan's slices got other probabilities
        # than inference.yaml gives the same slices when the checkpoint was selected with flip TTA
        import torch

        from mstl_monai.inferers import FlipTTAInferer, ScanClassifier
        from mstl_monai.metrics import calibrated_softmax

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 2))
        stack = torch.randn(5, 1, 2, 3)
        plain = ScanClassifier(net, amp=False, temperature=2.0).slice_probabilities(stack, range(5))
        tta = ScanClassifier(net, amp=False, temperature=2.0, tta=True).slice_probabilities(stack, range(5))
        with torch.no_grad():
            expected = calibrated_softmax(FlipTTAInferer(enabled=True)(stack, net), 2.0, dim=1)[:, 1]
        torch.testing.assert_close(torch.from_numpy(tta).float(), expected, atol=1e-5, rtol=0)
        self.assertGreater(float(abs(plain - tta).max()), 1e-3)
        with self.assertRaisesRegex(ValueError, "tta must be True or False, got 'false'"):
            ScanClassifier(net, tta="false")
        with self.assertRaisesRegex(ValueError, "amp must be True or False, got 'no'"):
            ScanClassifier(net, amp="no")


if __name__ == "__main__":
    unittest.main()
