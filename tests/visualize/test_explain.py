"""The explanation command on real COVID19-CT slices (untrained network: checks the plumbing and the numbers' range)."""

from __future__ import annotations

import csv
import json
import tempfile
import unittest
from pathlib import Path

import torch

from mstl_monai.networks import build_network
from mstl_monai.visualize.explain import main
from tests.utils import require_real_data


class TestExplainCommand(unittest.TestCase):
    def test_real_slices_and_bad_file(self):
        root = require_real_data(self)
        files = sorted((root / "covid-ct" / "CT_COVID").glob("*.png"))[:2]
        with tempfile.TemporaryDirectory() as d:
            torch.manual_seed(0)
            net = build_network("resnet18", n_attn=5, n_input_channels=1, num_classes=2)
            ckpt = Path(d, "model.pt")
            torch.save(net.state_dict(), ckpt)
            bad = Path(d, "bad.png")
            bad.write_bytes(b"not a png")
            out = Path(d, "out")
            argv = ["--ckpt", str(ckpt), "--backbone", "resnet18", "--n-attn", "5", "--image-size", "64"]
            argv += ["--resize-size", "72", "--output-dir", str(out), "--input", *map(str, files), str(bad)]
            self.assertEqual(main(argv), 0)
            summary = json.loads((out / "summary.json").read_text())
            self.assertEqual(summary["n_images"], 2)
            self.assertEqual(summary["n_skipped"], 1)
            self.assertIn("bad.png", summary["skipped"][0][0])
            with open(out / "localization.csv") as f:
                rows = list(csv.DictReader(f))
            for r in rows:
                for k in ("gradcam_mass_in_lung_box", "attention_mass_in_lung_box", "box_area_fraction"):
                    self.assertTrue(0.0 <= float(r[k]) <= 1.0, (k, r[k]))
            self.assertEqual(len(list(out.glob("*_explain.png"))), 2)
            # the excess over the box share is the mean of the per-image differences in the table
            ex = summary["attention_excess_over_box"]
            want = sum(float(r["attention_mass_in_lung_box"]) - float(r["box_area_fraction"]) for r in rows) / len(rows)
            self.assertAlmostEqual(ex["mean"], want, places=6)
            self.assertLessEqual(ex["ci_low"], ex["mean"])
            self.assertGreaterEqual(ex["ci_high"], ex["mean"])
            self.assertEqual(ex["n"], 2)

    def test_checkpoint_of_another_network_fails(self):
        with tempfile.TemporaryDirectory() as d:
            net = build_network("resnet18", n_attn=0, n_input_channels=1, num_classes=2)
            ckpt = Path(d, "model.pt")
            torch.save(net.state_dict(), ckpt)
            argv = ["--ckpt", str(ckpt), "--backbone", "resnet34", "--output-dir", d, "--input", d]
            with self.assertRaisesRegex(ValueError, "backbone='resnet34' \\(checkpoint: 'resnet18'\\)"):
                main(argv)


if __name__ == "__main__":
    unittest.main()
