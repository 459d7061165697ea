"""STL-N's natural-image reader on the real Tiny ImageNet folder and on ImageNet-style layouts, and a tiny STL-N run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from mstl_monai.data import natural_image_classes, natural_image_datalist
from tests.bundle._bundle_utils import run_bundle
from tests.utils import REPO_ROOT, require_real_data


def _jpeg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)


class TestNaturalImageReader(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_natural_"))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_tiny_imagenet(self):
        root = require_real_data(self) / "tiny-imagenet"
        classes = natural_image_classes(root)
        self.assertEqual(classes, (root / "wnids.txt").read_text().split())
        self.assertEqual(len(classes), 202)
        train, val, test = (natural_image_datalist(root, s) for s in ("train", "val", "test"))
        self.assertEqual(len(train) + len(val), 20200)
        self.assertEqual(len(test), 2020)
        self.assertFalse({d["image"] for d in train} & {d["image"] for d in val})
        self.assertTrue(all("/val/" in d["image"] for d in test))
        # labels follow wnids.txt, whatever the folder
        for d in test[::97] + train[::997]:
            self.assertEqual(classes[d["label"]], Path(d["image"]).parent.name)
        self.assertEqual(np.bincount([d["label"] for d in val]).tolist(), [5] * 202)

    def test_imagenet_layout_without_wnids(self):
        for wnid in ("n02", "n01"):
            for k in range(3):
                _jpeg(self.tmp / "train" / wnid / f"{wnid}_{k}.JPEG", k)
            _jpeg(self.tmp / "val" / wnid / "v.JPEG", 9)
        self.assertEqual(natural_image_classes(self.tmp), ["n01", "n02"])  # sorted, as torchvision's ImageFolder
        test = natural_image_datalist(self.tmp, "test")
        self.assertEqual([(Path(d["image"]).parent.name, d["label"]) for d in test], [("n01", 0), ("n02", 1)])
        self.assertEqual(len(natural_image_datalist(self.tmp, "train", val_fraction=0.34)), 4)

    def test_errors_name_the_culprit(self):
        with self.assertRaisesRegex(FileNotFoundError, "nowhere"):
            natural_image_datalist(self.tmp / "nowhere", "train")
        _jpeg(self.tmp / "train" / "n01" / "a.JPEG", 0)
        (self.tmp / "train" / "n02").mkdir()
        with self.assertRaisesRegex(ValueError, r"n02 holds no image files"):
            natural_image_datalist(self.tmp, "train")
        _jpeg(self.tmp / "train" / "n02" / "b.JPEG", 1)
        _jpeg(self.tmp / "val" / "n99" / "c.JPEG", 2)
        with self.assertRaisesRegex(ValueError, r"class folders \['n99'\]"):
            natural_image_datalist(self.tmp, "test")
        (self.tmp / "wnids.txt").write_text("n01\nn01\n")
        with self.assertRaisesRegex(ValueError, "wnids.txt repeats"):
            natural_image_classes(self.tmp)
        (self.tmp / "wnids.txt").write_text("n01\n")
        with self.assertRaisesRegex(ValueError, r"class folders \['n02'\] that the class list"):
            natural_image_datalist(self.tmp, "train")
        with self.assertRaisesRegex(ValueError, "split must be"):
            natural_image_datalist(self.tmp, "validation")


class TestTinySTLN(unittest.TestCase):
    """The bundle's STL-N stage on the real Tiny ImageNet folder (one image per class in train and in val, 1 epoch),
    then its checkpoint into a 1-channel CT network and the Table-1 script."""

    def test_stl_n_run(self):
        require_real_data(self)
        tmp = Path(tempfile.mkdtemp(prefix="mstl_stln_"))
        self.addCleanup(shutil.rmtree, tmp, True)
        # stratified subsets (every class in each split, as the datalist check requires): one image per class
        sub = (
            "$mstl_monai.data.label_fraction_subset(mstl_monai.data.natural_image_datalist(@dataset_dir, '{}', "
            "val_fraction=@val_fraction, seed=@seed), {})"
        )
        ov = {
            "backbone": "resnet18", "n_attn": 1, "image_size": 32, "resize_size": 36, "batch_size": 16,
            "num_workers": 0, "epochs": 1, "learning_rate": 0.01, "lr_milestones": [100], "amp": True,
            "run_dir": str(tmp / "stl_n"),
            "train#datalist": sub.format("train", 0.01), "validate#datalist": sub.format("val", 0.2),
        }
        proc = run_bundle(["train.yaml", "stl_n.yaml"], ov)
        self.assertIn("val_top1", proc.stdout + proc.stderr)
        self.assertIn("train_top1", proc.stdout + proc.stderr)
        ckpt = tmp / "stl_n" / "models" / "model.pt"
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)
        sd = sd.get("network", sd)
        self.assertEqual(tuple(sd["fc.weight"].shape)[0], 202)
        self.assertEqual(tuple(sd["conv1.weight"].shape)[1], 3)
        from mstl_monai.networks import build_network
        from mstl_monai.networks import load_stage_checkpoint

        ct = build_network("resnet18", n_attn=1, n_input_channels=1, num_classes=2)
        report = load_stage_checkpoint(ct, ckpt)
        self.assertEqual(report["adapted"], ["conv1.weight"])
        out = tmp / "top1.json"
        subprocess.run(
            [sys.executable, str(REPO_ROOT / "scripts" / "stl_n_top1.py"), "--ckpt", str(ckpt), "--n_attn", "1",
             "--image_size", "32", "--resize_size", "36", "--n_bootstrap", "50", "--out", str(out)],
            check=True, capture_output=True, text=True, timeout=600,
        )
        res = json.loads(out.read_text())
        self.assertEqual(res["n"], 2020)
        self.assertEqual(res["n_classes"], 202)
        self.assertLessEqual(res["top1"]["low"], res["top1"]["value"])
        self.assertLessEqual(res["top1"]["value"], res["top5"]["value"])


if __name__ == "__main__":
    unittest.main()
