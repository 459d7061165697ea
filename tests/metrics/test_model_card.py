# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""scripts/model_card.py: metrics at 0.5 and at every stored operating point, ECE of the network's own probabilities
recovered from the calibrated ones by undoing the stored temperature."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

from mstl_monai.metrics import apply_temperature, expected_calibration_error, write_predictions_csv
from tests.utils import REPO_ROOT

SCRIPT = REPO_ROOT / "scripts" / "model_card.py"


class TestModelCard(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_card_"))
        rng = np.random.default_rng(0)
        self.y = rng.integers(0, 2, 200)
        raw = np.clip(np.where(self.y == 1, 0.75, 0.25) + rng.normal(0, 0.2, 200), 0.01, 0.99)
        self.raw, self.temperature = raw, 2.0
        calibrated = apply_temperature(raw, self.temperature)
        write_predictions_csv(self.tmp / "predictions.csv", [f"{i}.png" for i in range(200)], self.y,
                              np.stack([1 - calibrated, calibrated], 1), ["non-COVID", "COVID"])
        self.ckpt = self.tmp / "model.pt"
        self.ckpt.write_bytes(b"")
        info = {"format": "mstl_monai.checkpoint/1", "backbone": "resnet18", "n_attn": 0, "in_channels": 1,
                "num_classes": 2, "image_size": 32, "resize_size": 36, "stage": "finetune",
                "class_names": ["non-COVID", "COVID"], "decision_threshold": 0.4, "temperature": self.temperature,
                "operating_points": {"youden": 0.4, "sensitivity_90": 0.2}}
        (self.tmp / "model.pt.json").write_text(json.dumps(info))

    def run_card(self, *extra: str) -> subprocess.CompletedProcess:
        out = self.tmp / "card.json"
        cmd = [sys.executable, str(SCRIPT), "--ckpt", str(self.ckpt), "--predictions", str(self.tmp / "predictions.csv"),
               "--out", str(out), "--n_bootstrap", "50", *extra]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    def test_operating_points_and_ece(self):
        proc = self.run_card()
        self.assertEqual(proc.returncode, 0, proc.stderr)
        card = json.loads((self.tmp / "card.json").read_text())
        self.assertEqual(list(card["operating_points"]), ["0.5", "youden", "sensitivity_90"])
        p = apply_temperature(self.raw, self.temperature)
        sens = card["operating_points"]["sensitivity_90"]["sensitivity"]["value"]
        self.assertAlmostEqual(sens, float((p[self.y == 1] > 0.2).mean()), places=6)
        self.assertAlmostEqual(card["ece"]["network_output"], expected_calibration_error(self.y, self.raw), places=4)
        self.assertAlmostEqual(card["ece"]["calibrated"], expected_calibration_error(self.y, p), places=6)
        self.assertIn("ECE on test", proc.stdout)

    def test_another_checkpoints_predictions_are_refused(self):
        # before: a card named one checkpoint and showed another's figures
        p = apply_temperature(self.raw, self.temperature)
        write_predictions_csv(self.tmp / "predictions.csv", [f"{i}.png" for i in range(200)], self.y,
                              np.stack([1 - p, p], 1), ["non-COVID", "COVID"], threshold=0.37)
        proc = self.run_card()
        self.assertEqual(proc.returncode, 2)
        self.assertIn("was decided at threshold 0.37, which is none of", proc.stderr.strip().splitlines()[-1])
        write_predictions_csv(self.tmp / "predictions.csv", [f"{i}.png" for i in range(200)], self.y,
                              np.stack([1 - p, p], 1), ["other", "COVID"], threshold=0.4)
        proc = self.run_card()
        self.assertEqual(proc.returncode, 2)
        self.assertIn("another model's predictions?", proc.stderr.strip().splitlines()[-1])

    def test_without_temperature_it_says_uncalibrated(self):
        info = json.loads((self.tmp / "model.pt.json").read_text())
        info.pop("temperature")
        (self.tmp / "model.pt.json").write_text(json.dumps(info))
        proc = self.run_card()
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("the checkpoint has no temperature: uncalibrated", proc.stdout)
        self.assertNotIn("T = 1.000", proc.stdout)

    def test_missing_settings_file_is_one_line(self):
        (self.tmp / "model.pt.json").unlink()
        proc = self.run_card()
        self.assertEqual(proc.returncode, 2)
        self.assertIn("model.pt.json is missing", proc.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    unittest.main()
