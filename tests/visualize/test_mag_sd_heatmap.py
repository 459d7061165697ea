# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""MAG-SD attention maps as heat maps: the function and the explanation command."""

from __future__ import annotations

import csv
import json
import tempfile
import unittest
from pathlib import Path

import torch
import torch.nn.functional as F

from mstl_monai.networks import build_network
from mstl_monai.visualize import grad_cam, mag_sd_heatmap, minmax_normalize
from mstl_monai.visualize.explain import main
from tests.utils import require_real_data


class TestMAGSDHeatmap(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.net = build_network("resnet18", n_attn=5, attention_maps=3, n_input_channels=1, num_classes=2)
        self.x = torch.randn(2, 1, 64, 64)

    def test_mean_and_single_maps(self):
        self.net.train()
        heat = mag_sd_heatmap(self.net, self.x)
        self.assertTrue(self.net.training, "train/eval mode restored")
        self.assertEqual(tuple(heat.shape), (2, 1, 64, 64))
        self.assertGreaterEqual(float(heat.min()), 0.0)
        self.assertLessEqual(float(heat.max()), 1.0)
        self.net.eval()
        with torch.no_grad():
            _, maps = self.net.forward_with_maps(self.x)
        want = minmax_normalize(F.interpolate(maps[:, 1:2], size=(64, 64), mode="bilinear", align_corners=False))
        torch.testing.assert_close(mag_sd_heatmap(self.net, self.x, map_index=1), want)
        with self.assertRaisesRegex(ValueError, "map_index"):
            mag_sd_heatmap(self.net, self.x, map_index=3)

    def test_plain_network_refused(self):
        with self.assertRaisesRegex(ValueError, "no MAG-SD attention maps"):
            mag_sd_heatmap(build_network("resnet18", num_classes=2), self.x)

    def test_grad_cam_on_the_wrapper(self):
        heat = grad_cam(self.net, self.x, target_layers=self.net.cam_layer)
        self.assertEqual(tuple(heat.shape), (2, 1, 64, 64))
        self.assertGreater(float(heat.max()), 0.0)

    def test_explain_command_on_a_mag_sd_checkpoint(self):
        root = require_real_data(self)
        files = sorted((root / "covid-ct" / "CT_COVID").glob("*.png"))[:2]
        with tempfile.TemporaryDirectory() as d:
            ckpt = Path(d, "model.pt")
            torch.save(self.net.state_dict(), ckpt)
            out = Path(d, "out")
            argv = ["--ckpt", str(ckpt), "--backbone", "resnet18", "--n-attn", "5", "--image-size", "64"]
            argv += ["--resize-size", "72", "--output-dir", str(out), "--input", *map(str, files)]
            self.assertEqual(main(argv), 0)
            summary = json.loads((out / "summary.json").read_text())
            self.assertEqual(summary["attention_method"], "mag_sd")
            with open(out / "localization.csv") as f:
                rows = list(csv.DictReader(f))
            self.assertEqual(len(rows), 2)
            for r in rows:
                self.assertEqual(r["attention_method"], "mag_sd")
                self.assertTrue(0.0 <= float(r["attention_mass_in_lung_box"]) <= 1.0)
            self.assertEqual(len(list(out.glob("*_explain.png"))), 2)


if __name__ == "__main__":
    unittest.main()
