"""Unit tests of the engine helpers: datalist checks, splits, checkpoints, autocast inferer."""

from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path

import torch
from parameterized import parameterized

from mstl_monai.data import check_datalist, split_datalist
from mstl_monai.handlers import latest_checkpoint
from mstl_monai.inferers import AutocastInferer, resolve_amp_dtype


class TestCheckDatalist(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.img = os.path.join(self.tmp.name, "a.png")
        Path(self.img).write_bytes(b"x")

    def tearDown(self):
        self.tmp.cleanup()

    def test_ok(self):
        dl = [{"image": self.img, "label": 0}, {"image": self.img, "label": 1}]
        self.assertEqual(check_datalist(dl, 2, "train"), dl)

    @parameterized.expand(
        [
            ("label_out_of_range", [{"label": 2}], ValueError, "label 2 is outside the classes 0..1"),
            ("negative_label", [{"label": -1}], ValueError, "label -1"),
            ("string_label", [{"label": "covid"}], ValueError, "'covid'"),
            ("missing_label", [{}], KeyError, "'label'"),
        ]
    )
    def test_bad_items(self, _, items, exc, msg):
        dl = [dict({"image": self.img}, **it) for it in items]
        with self.assertRaises(exc) as ctx:
            check_datalist(dl, 2, "train")
        self.assertIn(msg, str(ctx.exception))

    def test_missing_file_named(self):
        missing = os.path.join(self.tmp.name, "missing.png")
        with self.assertRaises(FileNotFoundError) as ctx:
            check_datalist([{"image": missing, "label": 0}], 2, "val", root=self.tmp.name)
        self.assertIn("missing.png", str(ctx.exception))

    def test_empty(self):
        with self.assertRaises(ValueError):
            check_datalist([], 2, "train")


class TestSplitDatalist(unittest.TestCase):
    def test_stratified_disjoint_seeded(self):
        dl = [{"image": f"{i}.png", "label": i % 3} for i in range(60)]
        tr = split_datalist(dl, "train", 0.2, seed=1)
        va = split_datalist(dl, "val", 0.2, seed=1)
        self.assertEqual(len(tr) + len(va), 60)
        self.assertFalse({d["image"] for d in tr} & {d["image"] for d in va})
        self.assertEqual(sorted(d["label"] for d in va), [0] * 4 + [1] * 4 + [2] * 4)
        self.assertEqual(va, split_datalist(dl, "val", 0.2, seed=1))
        self.assertNotEqual(va, split_datalist(dl, "val", 0.2, seed=2))

    def test_bad_args(self):
        with self.assertRaises(ValueError):
            split_datalist([{"label": 0}], "test", 0.1)
        with self.assertRaises(ValueError):
            split_datalist([{"label": 0}], "val", 1.5)


class TestLatestCheckpoint(unittest.TestCase):
    def test_numeric_order_and_partial_files(self):
        with tempfile.TemporaryDirectory() as d:
            for name in ("checkpoint_epoch=9.pt", "checkpoint_epoch=10.pt", "checkpoint_epoch=11.pt.part", "tmpabc", "model.pt"):
                Path(d, name).write_bytes(b"x")
            self.assertEqual(os.path.basename(latest_checkpoint(d)), "checkpoint_epoch=10.pt")
            self.assertIsNone(latest_checkpoint(os.path.join(d, "nothing")))
            self.assertIsNone(latest_checkpoint(d, prefix="other"))


class TestAutocastInferer(unittest.TestCase):
    def test_bf16_compute_float_output(self):
        net = torch.nn.Linear(4, 3)
        seen = {}

        def hook(_m, _i, out):
            seen["dtype"] = out.dtype

        net.register_forward_hook(hook)
        out = AutocastInferer(enabled=True)(torch.randn(2, 4), net)
        self.assertEqual(seen["dtype"], torch.bfloat16)
        self.assertEqual(out.dtype, torch.float32)
        out = AutocastInferer(enabled=False)(torch.randn(2, 4), net)
        self.assertEqual(seen["dtype"], torch.float32)

    def test_dtype_names(self):
        self.assertEqual(resolve_amp_dtype("fp16"), torch.float16)
        with self.assertRaises(ValueError):
            resolve_amp_dtype("int8")


class TestSkippingDataset(unittest.TestCase):
    def test_skips_and_reports(self):
        from monai.transforms import Compose, Lambdad

        from mstl_monai.data import SkippingDataset, publish_skipped

        calls = []

        def load(path):
            calls.append(os.path.basename(path))
            if "bad" in path:
                raise ValueError(f"cannot read {path}")
            return 1

        with tempfile.TemporaryDirectory() as d:
            for n in ("a.png", "bad.png", "c.dcm"):
                Path(d, n).write_bytes(b"x")
            csv_path = os.path.join(d, "out", "skipped.csv")
            tf = Compose([Lambdad("image", load), Lambdad("image", lambda x: x + 1)])
            ds = SkippingDataset([d, os.path.join(d, "missing.png")], tf, csv_path)
            partial = csv_path + ".partial"  # the run's list; published onto skipped.csv when the run completes
            self.assertEqual(Path(partial).read_text(), "file,reason\n")  # written before any file is read
            self.assertFalse(os.path.exists(csv_path))
            items = list(ds)
            self.assertEqual(sorted(os.path.basename(x["image_path"]) for x in items), ["a.png", "c.dcm"])
            self.assertEqual([x["image"] for x in items], [2, 2])
            self.assertEqual(sorted(calls), ["a.png", "bad.png", "c.dcm"])  # each existing file read once
            self.assertTrue(publish_skipped(csv_path))
            self.assertFalse(os.path.exists(partial))
            self.assertFalse(publish_skipped(csv_path))
            text = Path(csv_path).read_text()
            self.assertIn(f'"{os.path.join(d, "bad.png")}","ValueError: cannot read', text)
            self.assertIn('missing.png","FileNotFoundError: no such file"', text)
            with self.assertRaisesRegex(ValueError, "none of the 1 inputs could be read"):
                list(SkippingDataset([os.path.join(d, "bad.png")], tf))
            with self.assertRaisesRegex(ValueError, "no input given"):
                SkippingDataset([], tf)
            empty = os.path.join(d, "empty")
            os.makedirs(os.path.join(empty, "sub"))
            Path(empty, "notes.txt").write_text("x")
            with self.assertRaisesRegex(ValueError, r"no image file in \[.*empty'\]: the folders hold no PNG/JPEG/DICOM"):
                SkippingDataset([empty], tf)

    def test_failure_after_loading_is_an_error(self):
        from monai.transforms import Compose, Lambdad

        from mstl_monai.data import SkippingDataset

        def broken(x):
            raise KeyError("a bug, not an unreadable file")

        with tempfile.TemporaryDirectory() as d:
            Path(d, "a.png").write_bytes(b"x")
            ds = SkippingDataset(d, Compose([Lambdad("image", lambda p: 1), Lambdad("image", broken)]))
            with self.assertRaises(RuntimeError):
                list(ds)


if __name__ == "__main__":
    unittest.main()
