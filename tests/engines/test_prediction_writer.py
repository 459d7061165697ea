"""Inference over mixed slice kinds, rows that survive a crash, lung flags and the end-of-run summary (issue 11)."""

from __future__ import annotations

import csv
import logging
import math
import tempfile
import unittest
from pathlib import Path

import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader, Dataset, list_data_collate
from monai.engines import SupervisedEvaluator
from monai.transforms import Activationsd, Compose
from parameterized import parameterized

from mstl_monai.data import meta_safe_collate
from mstl_monai.handlers import PredictionWriter, lung_fields
from tests.mixed_slices import make_mixed_slices
from tests.utils import REPO_ROOT, require_real_data

CLASSES = ["non-COVID", "COVID"]


def inference_preprocessing(size: int = 32):
    """The bundle's own inference preprocessing, small."""
    parser = ConfigParser()
    parser.read_config(str(REPO_ROOT / "bundle" / "configs" / "inference.yaml"))
    # the normalisation is the checkpoint's (the shipped model's settings file)
    parser.update({"bundle_root": str(REPO_ROOT / "bundle"), "image_size": size, "resize_size": size + 4})
    return parser.get_parsed_content("preprocessing")


class _Net(torch.nn.Module):
    """Mean intensity -> two logits; raises on the call number ``fail_at`` (1-based)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("simulated failure in a later batch")
        m = x.float().mean(dim=(1, 2, 3))
        return torch.stack([-m, m], dim=1)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class TestMixedInputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls._tmp = tempfile.TemporaryDirectory()
        cls.tmp = Path(cls._tmp.name)

    @classmethod
    def tearDownClass(cls):
        cls._tmp.cleanup()

    def setUp(self):
        root = require_real_data(self)
        if not hasattr(type(self), "files"):
            type(self).files = make_mixed_slices(self.tmp / "in", root)
            files = sorted(str(p) for p in self.files.values())
            type(self).dataset = Dataset([{"image": f, "image_path": f} for f in files], inference_preprocessing())

    def test_default_collate_fails_on_mixed_metadata(self):
        """The bug: MONAI's collate batches per-file metadata that differs between kinds of slice."""
        items = [self.dataset[i] for i in range(len(self.dataset))]
        with self.assertRaises((RuntimeError, TypeError)):
            list_data_collate(items)

    @parameterized.expand([[1], [2], [3], [7], [16]])
    def test_every_batch_size(self, batch_size):
        loader = DataLoader(self.dataset, batch_size=batch_size, collate_fn=meta_safe_collate)
        names = []
        for batch in loader:
            self.assertEqual(tuple(batch["image"].shape[1:]), (1, 32, 32))
            self.assertEqual(batch["lung_found"].dtype, torch.bool)
            names += list(batch["image_path"])
        self.assertEqual(names, [d["image_path"] for d in self.dataset.data])

    def test_metadata_that_batches_is_kept(self):
        batch = meta_safe_collate([self.dataset[i] for i in range(len(self.dataset))])
        self.assertEqual(batch["image"].meta["filename_or_obj"], [d["image_path"] for d in self.dataset.data])
        self.assertNotIn("orientation_ops", batch["image"].meta)  # [] for some, ["flip-cols"] for another
        self.assertEqual(len(batch["image"].applied_operations), len(self.dataset))
        # items whose metadata all batches are collated exactly as MONAI does
        pngs = [self.dataset[i] for i, d in enumerate(self.dataset.data) if d["image"].endswith("0.png")]
        self.assertEqual(sorted(meta_safe_collate(pngs)["image"].meta), sorted(list_data_collate(pngs)["image"].meta))

    def test_lung_flags(self):
        by_name = {Path(d["image_path"]).name: self.dataset[i] for i, d in enumerate(self.dataset.data)}
        self.assertIs(by_name["black.png"]["lung_found"], False)
        for name in ("png0.png", "ct.dcm", "ct_flipped.dcm"):
            self.assertIs(by_name[name]["lung_found"], True, name)
            self.assertTrue(0.0 < by_name[name]["lung_box_fraction"] <= 1.0)


class TestPredictionWriter(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.tmp = Path(self._tmp.name)
        self.out = self.tmp / "out"
        self.out.mkdir()
        self.old = "file,pred\nearlier_run.png,1\n"
        (self.out / "predictions.csv").write_text(self.old)

    def tearDown(self):
        self._tmp.cleanup()

    def _evaluator(self, n: int, batch_size: int, net: torch.nn.Module, found=None) -> tuple[SupervisedEvaluator, PredictionWriter]:
        data = []
        for i in range(n):
            d = {"image": torch.full((1, 8, 8), i / n), "image_path": f"img{i}.png"}
            if found is not None:
                d.update(lung_found=found[i], lung_box_fraction=0.5 if found[i] else float("nan"))
            data.append(d)
        skipped = self.out / "skipped.csv"  # an earlier run's list, and this run's as its dataset writes it
        skipped.write_text('file,reason\n"old1.png","ValueError: x"\n"old2.png","ValueError: y"\n')
        Path(f"{skipped}.partial").write_text('file,reason\n"bad.png","ValueError: truncated"\n')
        writer = PredictionWriter(str(self.out), CLASSES, skipped_file=str(skipped))
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"),
            val_data_loader=DataLoader(Dataset(data), batch_size=batch_size, collate_fn=meta_safe_collate),
            network=net,
            postprocessing=Compose([Activationsd(keys="pred", softmax=True)]),
            val_handlers=[writer],
        )
        return evaluator, writer

    def test_crash_keeps_earlier_rows_and_old_file(self):
        evaluator, writer = self._evaluator(6, 2, _Net(fail_at=2))
        with self.assertRaisesRegex(RuntimeError, "simulated failure"):
            evaluator.run()
        self.assertEqual((self.out / "predictions.csv").read_text(), self.old)  # the earlier run's file is intact
        self.assertIn("old2.png", (self.out / "skipped.csv").read_text())  # ... and the skipped list beside it
        rows = _rows(self.out / "predictions.csv.partial")  # the first batch's rows are on disk
        self.assertEqual([r["file"] for r in rows], ["img0.png", "img1.png"])

    def test_complete_run_replaces_and_summarises(self):
        found = [True, False, True, True, False]
        evaluator, writer = self._evaluator(5, 2, _Net(), found=found)
        with self.assertLogs(evaluator.logger, level=logging.INFO) as logs:
            evaluator.run()
        self.assertFalse((self.out / "predictions.csv.partial").exists())
        self.assertFalse((self.out / "skipped.csv.partial").exists())
        self.assertEqual((self.out / "skipped.csv").read_text(), 'file,reason\n"bad.png","ValueError: truncated"\n')
        rows = _rows(self.out / "predictions.csv")
        self.assertEqual([r["file"] for r in rows], [f"img{i}.png" for i in range(5)])
        self.assertEqual([r["lung_found"] for r in rows], [str(f) for f in found])
        self.assertEqual([r["lung_box_fraction"] for r in rows], ["0.5000" if f else "" for f in found])
        for r in rows:  # the prediction is flagged, not hidden
            self.assertAlmostEqual(float(r["prob_non-COVID"]) + float(r["prob_COVID"]), 1.0, places=5)
        summary = [m for m in logs.output if "inference done" in m]
        self.assertEqual(len(summary), 1, logs.output)
        self.assertIn("5 predictions", summary[0])
        self.assertIn("2 made without a lung found", summary[0])
        self.assertIn(str((self.out / "predictions.csv").resolve()), summary[0])
        self.assertIn(f"1 input(s) skipped as unreadable, listed in {(self.out / 'skipped.csv').resolve()}", summary[0])
        self.assertEqual(evaluator.state.predictions_file, str((self.out / "predictions.csv").resolve()))

    def test_without_lung_flags(self):
        evaluator, writer = self._evaluator(3, 3, _Net())
        evaluator.run()
        rows = _rows(self.out / "predictions.csv")
        self.assertEqual({r["lung_found"] for r in rows}, {""})
        self.assertIn("3 not checked for a lung", writer.summary())


class TestLungFields(unittest.TestCase):
    @parameterized.expand(
        [
            ["found", {"lung_found": True, "lung_box_fraction": 0.42}, {"lung_found": True, "lung_box_fraction": 0.42}],
            ["not_found", {"lung_found": False, "lung_box_fraction": math.nan}, {"lung_found": False, "lung_box_fraction": None}],
            ["tensors", {"lung_found": torch.tensor(True), "lung_box_fraction": torch.tensor(0.25, dtype=torch.float64)}, {"lung_found": True, "lung_box_fraction": 0.25}],
            ["absent", {}, {"lung_found": None, "lung_box_fraction": None}],
        ]
    )
    def test_fields(self, _, item, expected):
        self.assertEqual(lung_fields(item), expected)


if __name__ == "__main__":
    unittest.main()
