# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The weights shipped in bundle/models/: listed in large_files.yml with their size and sha256, float16, their
settings file fits them, and inference.yaml classifies with the shipped classifier without --ckpt_path."""

from __future__ import annotations

import csv
import json
import tempfile
import unittest
from pathlib import Path

import torch
import yaml
from monai.apps.utils import check_hash

from tests.bundle._bundle_utils import BUNDLE, run_bundle
from tests.utils import require_real_data

REQUIRED = {"models/model.pt", "models/stl_n_resnet18.pt"}
LIMIT_MB = 60.0


def _entries() -> list[dict]:
    return yaml.safe_load((BUNDLE / "large_files.yml").read_text())["large_files"]


class TestShippedModels(unittest.TestCase):
    def test_listed_files_match_their_size_and_hash(self):
        entries = _entries()
        self.assertTrue(REQUIRED <= {e["path"] for e in entries}, f"large_files.yml lists {[e['path'] for e in entries]}")
        total = 0
        for e in entries:
            path = BUNDLE / e["path"]
            self.assertTrue(path.is_file(), f"{path} is listed in large_files.yml but missing")
            self.assertEqual(path.stat().st_size, e["size"], f"{path}: size differs from large_files.yml")
            self.assertEqual(e["hash_type"], "sha256")
            self.assertTrue(check_hash(str(path), e["hash_val"], "sha256"), f"{path}: sha256 differs from large_files.yml")
            total += e["size"]
        self.assertLessEqual(total / 2**20, LIMIT_MB)
        listed = {e["path"] for e in entries}
        on_disk = {p.relative_to(BUNDLE).as_posix() for p in (BUNDLE / "models").glob("*.pt")}
        self.assertEqual(on_disk, listed, "every shipped .pt is listed, and nothing else")

    def test_settings_file_fits_the_weights(self):
        from mstl_monai.networks.checkpoint import checkpoint_network
        from mstl_monai.networks.sidecar import read_checkpoint_info

        for e in _entries():
            path = BUNDLE / e["path"]
            info = read_checkpoint_info(path)
            self.assertIsNotNone(info, f"{path} has no settings file")
            self.assertEqual(info["provenance"]["sha256"], e["hash_val"], f"{path}.json names other weights")
            self.assertTrue(info["provenance"]["trained_on"])
            state = torch.load(path, map_location="cpu", weights_only=True)
            floats = {k: v.dtype for k, v in state.items() if v.is_floating_point()}
            self.assertEqual(set(floats.values()), {torch.float16}, f"{path}: not float16")
            net = checkpoint_network(
                path, name=info["backbone"], n_attn=info["n_attn"], n_input_channels=info["in_channels"],
                num_classes=info["num_classes"], image_size=info["image_size"], resize_size=info["resize_size"],
                class_names=info["class_names"],
            )
            net.load_state_dict(state, strict=True)  # raises on any missing/unexpected/mis-shaped tensor

    def test_metadata_describes_the_shipped_classifier(self):
        """metadata.json's eval_metrics are the shipped model's measured figures, its input size the model's, and its
        outputs probabilities (as outputs.pred.type says)."""
        meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
        card = json.loads((BUNDLE.parent / "results" / "cpu_scale" / "shipped_model.json").read_text())
        info = json.loads((BUNDLE / "models" / "model.pt.json").read_text())
        em = meta["eval_metrics"]
        self.assertAlmostEqual(em["auc"], card["operating_points"]["0.5"]["auc"]["value"], places=4)
        for name, point in card["operating_points"].items():
            got = em["threshold_0.5" if name == "0.5" else name]
            self.assertAlmostEqual(got["threshold"], point["threshold"], places=4)
            self.assertAlmostEqual(got["sensitivity"], point["sensitivity"]["value"], places=4)
        self.assertEqual(card["temperature"], info["temperature"])
        self.assertEqual(meta["network_data_format"]["inputs"]["image"]["spatial_shape"], [info["image_size"]] * 2)
        self.assertEqual(meta["network_data_format"]["outputs"]["pred"]["type"], "probabilities")
        self.assertTrue(meta["pred_classes"].startswith("2 probabilities"), meta["pred_classes"])

    def test_inference_without_ckpt_path_uses_the_shipped_classifier(self):
        data = require_real_data(self)
        files = sorted((data / "covid-ct" / "CT_COVID").glob("*.png"))[:2] + sorted((data / "covid-ct" / "CT_NonCOVID").glob("*.png"))[:2]
        with tempfile.TemporaryDirectory() as d:
            run_bundle(["inference.yaml"], {"input": [str(f) for f in files], "output_dir": d}, timeout=900)
            rows = list(csv.DictReader(open(Path(d) / "predictions.csv")))
        self.assertEqual(len(rows), 4)
        info = json.loads((BUNDLE / "models" / "model.pt.json").read_text())
        self.assertEqual({r["pred_class"] for r in rows} <= set(info["class_names"]), True)


if __name__ == "__main__":
    unittest.main()
