"""End-to-end bundle tests: finetune, evaluate, inference, resume, export, metadata (tiny phantom data)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
import unittest
from pathlib import Path

import torch

from tests.bundle._bundle_utils import BUNDLE, CONFIGS, TINY, phantom_dataset, run_bundle


class TestBundleWorkflow(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_bundle_"))
        cls.data = phantom_dataset(cls.tmp, n_per_class=12)
        cls.base = dict(TINY, dataset_dir=str(cls.data), n_attn=5)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_train_evaluate_infer_export(self):
        run_dir = self.tmp / "ft"
        ov = dict(self.base, run_dir=str(run_dir), epochs=2)
        proc = run_bundle(["train.yaml"], ov)
        self.assertIn("val_auc", proc.stdout + proc.stderr)
        best = run_dir / "models" / "model.pt"
        self.assertTrue(best.is_file())
        sd = torch.load(best, map_location="cpu", weights_only=True)
        self.assertIn("fc.weight", sd)
        self.assertEqual(tuple(sd["fc.weight"].shape)[0], 2)
        self.assertTrue(any(k.startswith("attn.") for k in sd), "attention blocks are saved with the network")

        # evaluate: metrics.json with CIs, predictions.csv, roc.png
        run_bundle(["train.yaml", "evaluate.yaml"], dict(ov, n_bootstrap=200))
        ev = run_dir / "eval_test"
        metrics = json.loads((ev / "metrics.json").read_text())
        for k in ("accuracy", "f1", "auc", "sensitivity", "specificity"):
            self.assertIn(k, metrics)
            self.assertLessEqual(metrics[k]["ci_low"], metrics[k]["value"] + 1e-9)
            self.assertGreaterEqual(metrics[k]["ci_high"], metrics[k]["value"] - 1e-9)
        from mstl_monai.data import covid_ct_datalist

        n_test = len(covid_ct_datalist(self.data, "test"))
        self.assertEqual(metrics["n"], n_test)
        with open(ev / "predictions.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), n_test)
        self.assertTrue((ev / "roc.png").is_file())

        # inference on a folder with a corrupt file: reported and skipped, the others classified
        inp = self.tmp / "infer_in"
        inp.mkdir()
        pngs = sorted((self.data / "CT_COVID").glob("*.png"))[:3]
        for p in pngs:
            shutil.copy(p, inp / p.name)
        (inp / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        out = self.tmp / "infer_out"
        inf = {k: v for k, v in self.base.items() if k not in ("dataset_dir", "learning_rate", "lr_milestones")}
        run_bundle(["inference.yaml"], dict(inf, input=str(inp), output_dir=str(out), ckpt_path=str(best)))
        with open(out / "predictions.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(sorted(os.path.basename(r["file"]) for r in rows), sorted(p.name for p in pngs))
        for r in rows:
            self.assertAlmostEqual(float(r["prob_non-COVID"]) + float(r["prob_COVID"]), 1.0, places=4)
        skipped = (out / "skipped.csv").read_text()
        self.assertIn("broken.png", skipped)

        # TorchScript export of the trained network (traced)
        ts = self.tmp / "model.ts"
        import subprocess
        import sys

        cmd = [
            sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
            "--filepath", str(ts), "--ckpt_file", str(best), "--meta_file", str(CONFIGS / "metadata.json"),
            "--config_file", str(CONFIGS / "inference.yaml"), "--bundle_root", str(BUNDLE),
            "--use_trace", "True", "--input_shape", "[1, 1, 32, 32]",
            "--n_attn", "5", "--backbone", "resnet18", "--image_size", "32",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        from monai.data import load_net_with_metadata

        net, meta, _ = load_net_with_metadata(str(ts))
        self.assertIn("network_data_format", meta)
        self.assertEqual(tuple(net(torch.zeros(2, 1, 32, 32)).shape), (2, 2))

    def test_resume_matches_unbroken_run(self):
        """A run stopped after epoch 1 and resumed ends with the same weights as an unbroken 2-epoch run."""
        unbroken = self.tmp / "unbroken"
        broken = self.tmp / "broken"
        ov = dict(self.base, n_attn=1, val_interval=1)
        run_bundle(["train.yaml"], dict(ov, run_dir=str(unbroken), epochs=2))
        run_bundle(["train.yaml"], dict(ov, run_dir=str(broken), epochs=1))
        proc = run_bundle(["train.yaml"], dict(ov, run_dir=str(broken), epochs=2))
        self.assertIn("resumed from", proc.stdout + proc.stderr)
        a = torch.load(unbroken / "models" / "model_final.pt", map_location="cpu", weights_only=True)
        b = torch.load(broken / "models" / "model_final.pt", map_location="cpu", weights_only=True)
        net_a, net_b = a["network"], b["network"]
        self.assertEqual(set(net_a), set(net_b))
        for k in net_a:
            torch.testing.assert_close(net_a[k], net_b[k], rtol=0, atol=0, msg=f"weight {k} differs after resume")
        self.assertEqual(a["trainer"]["iteration"], b["trainer"]["iteration"])

    def test_torchrun_two_processes_gloo(self):
        """multi_gpu_train.yaml: 2 processes on CPU with gloo, one checkpoint written by rank 0."""
        import sys

        run_dir = self.tmp / "ddp"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
        proc = run_bundle(["train.yaml", "multi_gpu_train.yaml"],
            dict(self.base, run_dir=str(run_dir), epochs=1, n_attn=1),
            launcher=launcher,
        )
        self.assertTrue((run_dir / "models" / "model.pt").is_file(), proc.stdout[-2000:])
        ckpt = torch.load(run_dir / "models" / "model_final.pt", map_location="cpu", weights_only=True)
        self.assertFalse(any(k.startswith("module.") for k in ckpt["network"]), "DDP prefix must not leak into checkpoints")

    def test_stl_n_image_folder_then_finetune(self):
        """STL-N on an image-folder data set (RGB, 3-channel network), its checkpoint feeding a 1-channel finetune."""
        folder = self.tmp / "natural"
        for cls, src in (("class_a", "CT_COVID"), ("class_b", "CT_NonCOVID")):
            (folder / cls).mkdir(parents=True)
            for p in sorted((self.data / src).glob("*.png"))[:5]:
                shutil.copy(p, folder / cls / p.name)
        stl_n = self.tmp / "stl_n"
        ov = dict(self.base, n_attn=0, epochs=1, val_fraction=0.4, num_classes=2)
        proc = run_bundle(["train.yaml", "stl_n.yaml"], dict(ov, run_dir=str(stl_n), dataset_dir=str(folder)))
        sd = torch.load(stl_n / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.assertEqual(tuple(sd["conv1.weight"].shape)[1], 3, proc.stdout[-1000:])
        ft = self.tmp / "ft_from_stl_n"
        proc = run_bundle(["train.yaml"], dict(self.base, n_attn=0, epochs=1, run_dir=str(ft), pretrained=str(stl_n / "models" / "model.pt"))
        )
        self.assertIn("1 adapted", proc.stdout + proc.stderr)  # conv1: RGB filters summed for the 1-channel CT net
        self.assertTrue((ft / "models" / "model.pt").is_file())

    def test_bad_dataset_dir_fails_before_training(self):
        proc = run_bundle(["train.yaml"], dict(self.base, run_dir=str(self.tmp / "bad"), dataset_dir=str(self.tmp / "nope")), check=False
        )
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn(str(self.tmp / "nope"), proc.stdout + proc.stderr)
        self.assertFalse((self.tmp / "bad" / "models" / "model.pt").exists())

    def test_metadata_verifies_offline(self):
        import subprocess
        import sys

        cmd = [
            sys.executable, "-m", "monai.bundle", "verify_metadata", "--meta_file", str(CONFIGS / "metadata.json"),
            "--filepath", str(CONFIGS / "meta_schema_20240725.json"),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertIn("metadata is verified with no error", proc.stdout + proc.stderr)


if __name__ == "__main__":
    unittest.main()
