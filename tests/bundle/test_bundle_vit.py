"""The supervised bundle stages with a ViT backbone: finetune from a timm ViT file, evaluate, inference (tiny)."""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import unittest
from pathlib import Path

import torch

from tests.bundle._bundle_utils import TINY, phantom_dataset, run_bundle
from tests.utils import REPO_ROOT

TIMM_FIXTURE = REPO_ROOT.parent / "shared" / "fixtures" / "timm_vit_p16_d192_l2.pt"


class TestBundleViT(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_bundle_vit_"))
        cls.data = phantom_dataset(cls.tmp, n_per_class=6)
        # a 2-block ViT-Tiny so the timm fixture (depth 2) fits; 32-px crops = a 2x2 patch grid
        cls.base = dict(TINY, backbone="vit_tiny", dataset_dir=str(cls.data), n_attn=0, **{"network_def::num_layers": 2})

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_finetune_from_timm_then_evaluate_and_infer(self):
        if not TIMM_FIXTURE.is_file():
            self.skipTest(f"fixture {TIMM_FIXTURE} not found")
        run_dir = self.tmp / "ft"
        ov = dict(self.base, run_dir=str(run_dir), epochs=1, pretrained=str(TIMM_FIXTURE))
        proc = run_bundle(["train.yaml"], ov)
        log = proc.stdout + proc.stderr
        # RGB patch kernel summed, 4x4 position grid resized to 2x2, CLS position folded; 1000-way head dropped
        self.assertIn(f"loaded timm ViT checkpoint {TIMM_FIXTURE}: 27 tensors loaded, 2 new, 2 dropped, 3 adapted", log)
        best = run_dir / "models" / "model.pt"
        sd = torch.load(best, map_location="cpu", weights_only=True)
        self.assertEqual(tuple(sd["fc.weight"].shape), (2, 192))
        self.assertEqual(tuple(sd["patch_embedding.position_embeddings"].shape), (1, 4, 192))

        run_bundle(["train.yaml", "evaluate.yaml"], dict(ov, n_bootstrap=50))
        metrics = json.loads((run_dir / "eval_test" / "metrics.json").read_text())
        self.assertIn("auc", metrics)

        inp = self.tmp / "infer_in"
        inp.mkdir()
        for p in sorted((self.data / "CT_COVID").glob("*.png"))[:2]:
            shutil.copy(p, inp / p.name)
        out = self.tmp / "infer_out"
        inf = {k: v for k, v in self.base.items() if k not in ("dataset_dir", "learning_rate", "lr_milestones")}
        run_bundle(["inference.yaml"], dict(inf, input=str(inp), output_dir=str(out), ckpt_path=str(best)))
        with open(out / "predictions.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(len(rows), 2)

    def test_torchrun_two_processes_gloo(self):
        """multi_gpu_train.yaml with a ViT: DDP needs every parameter used (MONAI's unused cross-attention norms are
        removed), 2 processes on CPU with gloo."""
        import sys

        run_dir = self.tmp / "ddp"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
        ov = dict(self.base, run_dir=str(run_dir), epochs=1, batch_size=4)
        proc = run_bundle(["train.yaml", "multi_gpu_train.yaml"], ov, launcher=launcher)
        self.assertTrue((run_dir / "models" / "model.pt").is_file(), proc.stdout[-2000:])


if __name__ == "__main__":
    unittest.main()
