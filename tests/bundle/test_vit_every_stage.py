"""Issue 16's promise: `--backbone vit_* --pretrained <torchvision or timm ViT file>` works for every stage.

STL-N (Tiny ImageNet, RGB), STL-M (chest X-rays, 1 channel) and SSTL-M (ours, on the CT slices) each start from one of
the weight-import fixtures (``../shared/fixtures``: a 2-block ViT with width 192, so ``vit_tiny`` with 2 layers), the
command a user types with the README's ``configs/cpu.yaml`` and tiny overrides, on a few real images of each data set.
Each run must say what it imported (loaded / new / dropped / adapted), with the RGB patch kernel kept for STL-N and
summed to one channel for the grey stages, and write a checkpoint whose settings say ViT. (The finetune, evaluate,
inference and two-process runs from a ViT file are tests/bundle/test_bundle_vit.py.)
"""

from __future__ import annotations

import json
import shutil
import tempfile
import unittest
from pathlib import Path

import torch
from parameterized import parameterized

from tests.bundle._bundle_utils import TINY, run_bundle
from tests.docs._readme import mini_data_root
from tests.utils import REPO_ROOT, require_real_data

FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
TV = FIXTURES / "torchvision_vit_p16_d192_l2.pt"
TIMM = FIXTURES / "timm_vit_p16_d192_l2.pt"

#: one epoch of the shared tiny settings (32 px: a 2x2 patch grid), batch 5, a 2-block ViT-Tiny that the fixtures fit
TINY_VIT = dict(TINY, backbone="vit_tiny", n_attn=0, epochs=1, batch_size=5, **{"network_def::num_layers": 2})
SSTL_TINY = {"region_size": 32, "queue_size": 8, "probe_k": 3}

CASES = [
    # stage, configs, fixture, library, input channels
    ("stl_n", ["train.yaml", "stl_n.yaml", "cpu.yaml"], TV, "torchvision", 3),
    ("stl_m", ["train.yaml", "stl_m.yaml", "cpu.yaml"], TIMM, "timm", 1),
    ("sstl_m", ["sstl_m.yaml", "cpu.yaml"], TV, "torchvision", 1),
]


class TestViTFileEveryStage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_vit_stages_"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @parameterized.expand(CASES)
    def test_stage_from_vit_file(self, stage, configs, fixture, library, channels):
        require_real_data(self)
        self.assertTrue(fixture.is_file(), f"weight-import fixture missing: {fixture}")
        data = self.tmp / "data"
        if not data.is_dir():
            mini_data_root(data)
        run_dir = self.tmp / stage
        ov = dict(TINY_VIT, run_dir=str(run_dir), pretrained=str(fixture), data_root=str(data))
        if stage == "sstl_m":
            ov.update(SSTL_TINY)
        proc = run_bundle(configs, ov, timeout=900)
        log = proc.stdout + proc.stderr
        self.assertRegex(log, rf"loaded {library} ViT checkpoint {fixture}: \d+ tensors loaded, \d+ new, \d+ dropped, \d+ adapted")
        info = json.loads((run_dir / "models" / "model.pt.json").read_text())
        self.assertEqual((info["stage"], info["backbone"], info["in_channels"]), (stage, "vit_tiny", channels))
        sd = torch.load(run_dir / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.assertEqual(tuple(sd["patch_embedding.position_embeddings"].shape), (1, 4, 192))
        # the imported patch kernel: RGB kept for STL-N, summed over RGB for the grey stages
        self.assertEqual(sd["patch_embedding.patch_embeddings.weight"].shape[1], channels)


if __name__ == "__main__":
    unittest.main()
