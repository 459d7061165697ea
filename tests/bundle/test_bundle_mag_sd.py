# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The MAG-SD override file (configs/mag_sd.yaml) end to end: train, resume, evaluate, infer, two processes (tiny phantom data)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
import tempfile
import unittest
from pathlib import Path

import torch

from tests.bundle._bundle_utils import TINY, phantom_dataset, run_bundle


class TestBundleMAGSD(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_magsd_"))
        cls.data = phantom_dataset(cls.tmp, n_per_class=8)
        # 64 px: layer4 maps of 2x2 (at 32 px they are 1x1, too small to guide anything)
        cls.base = dict(TINY, dataset_dir=str(cls.data), n_attn=5, image_size=64, resize_size=72)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_train_resume_evaluate_infer(self):
        run_dir = self.tmp / "magsd"
        ov = dict(self.base, run_dir=str(run_dir))
        run_bundle(["train.yaml", "mag_sd.yaml"], dict(ov, epochs=1))
        proc = run_bundle(["train.yaml", "mag_sd.yaml"], dict(ov, epochs=2))
        log = proc.stdout + proc.stderr
        self.assertIn("resumed from", log)
        for term in ("train_loss_ce", "train_loss_sd_mixup", "train_loss_sd_dim", "train_loss_sd_patch"):
            self.assertIn(term, log)
        info = json.loads((run_dir / "models" / "model.pt.json").read_text())
        self.assertEqual(info["attention_maps"], 3)
        sd = torch.load(run_dir / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.assertTrue(any(k.startswith("attention.") for k in sd))
        final = torch.load(run_dir / "models" / "model_final.pt", map_location="cpu", weights_only=True)
        self.assertEqual(final["trainer"]["max_epochs"], 2)
        self.assertTrue(any(k.startswith("attention.") for k in final["network"]))

        # evaluate.yaml and inference.yaml rebuild the head from the checkpoint (without mag_sd.yaml)
        ev = dict(ov)
        run_bundle(["train.yaml", "evaluate.yaml"], dict(ev, n_bootstrap=50))
        metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
        self.assertIn("auc", metrics)
        # an override that contradicts the checkpoint is refused, naming both
        bad = run_bundle(["train.yaml", "evaluate.yaml"], dict(ev, **{"network_def#attention_maps": 2}), check=False)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn("trained with attention_maps=3", bad.stdout + bad.stderr)
        # the old switch names the override file that replaced it
        old = run_bundle(["train.yaml"], dict(ov, epochs=1, mag_sd=True), check=False)
        self.assertNotEqual(old.returncode, 0)
        self.assertIn("the override file mag_sd.yaml", old.stdout + old.stderr)
        out = self.tmp / "infer"
        inf = {k: v for k, v in TINY.items() if k not in ("learning_rate", "lr_milestones")}
        run_bundle(["inference.yaml"],
            dict(inf, input=str(self.data / "CT_COVID"), output_dir=str(out), n_attn=5, image_size=64, resize_size=72,
                 ckpt_path=str(run_dir / "models" / "model.pt")),
        )
        with open(out / "predictions.csv") as f:
            self.assertGreater(len(list(csv.DictReader(f))), 0)

    def test_torchrun_two_processes_gloo(self):
        run_dir = self.tmp / "magsd_ddp"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
        proc = run_bundle(["train.yaml", "mag_sd.yaml", "multi_gpu_train.yaml"], dict(self.base, run_dir=str(run_dir), epochs=1),
            launcher=launcher,
        )
        self.assertIn("train_loss_sd_mixup", proc.stdout + proc.stderr)
        ckpt = torch.load(run_dir / "models" / "model_final.pt", map_location="cpu", weights_only=True)
        self.assertFalse(any(k.startswith("module.") for k in ckpt["network"]))
        self.assertTrue(any(k.startswith("attention.") for k in ckpt["network"]))


if __name__ == "__main__":
    unittest.main()
