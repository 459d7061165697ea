"""Datalists are checked before training: every class in every split, enough training images for BatchNorm's batch
statistics; one line naming the split and the class (or the count), in the check itself and in real bundle runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import numpy as np
from PIL import Image

from mstl_monai.data import check_datalist
from tests.bundle._bundle_utils import TINY, phantom_dataset, run_bundle


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class TestCheckDatalistClasses(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.img = os.path.join(self.tmp.name, "a.png")
        Path(self.img).write_bytes(b"x")
        self.names = ["non-COVID", "COVID"]

    def tearDown(self):
        self.tmp.cleanup()

    def _dl(self, *labels):
        return [{"image": self.img, "label": y} for y in labels]

    def test_class_missing_named(self):
        with self.assertRaises(ValueError) as ctx:
            check_datalist(self._dl(1, 1, 1), 2, "train", root="/data/ct", class_names=self.names)
        msg = str(ctx.exception)
        self.assertEqual(len(msg.splitlines()), 1)
        self.assertRegex(msg, r"^the train split \(dataset_dir=/data/ct\) has no image of class 0 \(non-COVID\)")
        with self.assertRaisesRegex(ValueError, r"^the val split has no image of class 1 \(COVID\)"):
            check_datalist(self._dl(0, 0), 2, "val", class_names=self.names)
        with self.assertRaisesRegex(ValueError, r"has no image of classes 1 \(b\), 2 \(c\) \(2 of 3\)"):
            check_datalist(self._dl(0, 0), 3, "val", class_names=["a", "b", "c"])
        with self.assertRaisesRegex(ValueError, r"^the val split has no image of class 1[;:]"):  # no names given
            check_datalist(self._dl(0, 0), 2, "val")

    def test_missing_class_warned_when_allowed(self):
        with self.assertLogs("mstl_monai.data.utils", "WARNING") as logs:
            out = check_datalist(self._dl(1, 1), 2, "test", class_names=self.names, require_all_classes=False)
        self.assertEqual(len(out), 2)
        self.assertIn("the test split has no image of class 0 (non-COVID)", logs.output[0])
        self.assertIn("AUC", logs.output[0])

    def test_one_training_image_named(self):
        with self.assertRaises(ValueError) as ctx:
            check_datalist(self._dl(0), 1, "train", for_training=True)
        msg = str(ctx.exception)
        self.assertIn("the train split has 1 image", msg)
        self.assertIn("at least 2", msg)
        self.assertIn("BatchNorm", msg)
        # the count comes before the classes: with 2 classes, one image also lacks a class
        with self.assertRaisesRegex(ValueError, r"the train split has 1 image"):
            check_datalist(self._dl(1), 2, "train", for_training=True)
        self.assertEqual(len(check_datalist(self._dl(0, 1), 2, "train", for_training=True)), 2)
        self.assertEqual(len(check_datalist(self._dl(0), 1, "val")), 1)  # evaluation: one image is fine


def _write_split(root: Path, cls: str, split: str, names: list[str]) -> None:
    (root / "Data-split" / cls / f"{split}CT_{cls}.txt").write_text("".join(f"{n}\n" for n in names))


def _split(root: Path, cls: str, split: str) -> list[str]:
    return (root / "Data-split" / cls / f"{split}CT_{cls}.txt").read_text().split()


class TestBundleRefusesBadSplits(unittest.TestCase):
    """train.yaml (finetune) and stl_n.yaml (an image-folder data set) stop before training: before the fix they
    trained to a model.pt with val AUC nan, or ended in BatchNorm's 'Expected more than 1 value per channel'."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_splits_"))
        cls.data = phantom_dataset(cls.tmp, n_per_class=6, size=48)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def _variant(self, name: str, edit) -> Path:
        root = self.tmp / name
        shutil.copytree(self.data, root)
        edit(root)
        return root

    def _train(self, root: Path, configs=("train.yaml",), **extra):
        run_dir = self.tmp / f"run_{root.name}"
        ov = dict(TINY, dataset_dir=str(root), n_attn=0, run_dir=str(run_dir), epochs=1, **extra)
        proc = run_bundle(list(configs), ov, check=False)
        self.assertNotEqual(proc.returncode, 0, proc.stdout[-2000:])
        self.assertFalse((run_dir / "models" / "model.pt").exists())
        return last_line(proc)

    def test_class_missing_in_train_only(self):
        root = self._variant("no_train_noncovid", lambda r: _write_split(r, "NonCOVID", "train", []))
        self.assertRegex(
            self._train(root), rf"^ValueError: the train split \(dataset_dir={root}\) has no image of class 0 \(non-COVID\)"
        )

    def test_class_missing_in_val_only(self):
        root = self._variant("no_val_covid", lambda r: _write_split(r, "COVID", "val", []))
        self.assertRegex(self._train(root), r"^ValueError: the val split .* has no image of class 1 \(COVID\)")

    def test_class_missing_everywhere(self):
        def drop(r: Path) -> None:
            for split in ("train", "val", "test"):
                _write_split(r, "NonCOVID", split, [])

        root = self._variant("no_noncovid", drop)
        self.assertRegex(self._train(root), r"^ValueError: the train split .* has no image of class 0 \(non-COVID\)")

    def test_one_training_image(self):
        def one(r: Path) -> None:
            _write_split(r, "COVID", "train", _split(r, "COVID", "train")[:1])
            _write_split(r, "NonCOVID", "train", [])

        root = self._variant("one_train", one)
        line = self._train(root)
        self.assertRegex(line, r"^ValueError: the train split .* has 1 image: .*at least 2 .*BatchNorm")

    def test_image_folder_class_missing_in_val(self):
        """STL-N on a custom image-folder data set (dataset_dir = class folders): a class with one image has none in
        the held-out val split."""
        root = self.tmp / "folders"
        rng = np.random.default_rng(0)
        for cls, n in (("cat", 6), ("dog", 6), ("fox", 1)):
            (root / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
        line = self._train(root, ("train.yaml", "stl_n.yaml"), val_fraction=0.2)
        self.assertRegex(line, r"^ValueError: the val split .* has no image of class 2 \(fox\)")


if __name__ == "__main__":
    unittest.main()
