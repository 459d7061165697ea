"""Test-split scores are named as test metrics, and the checkpoint-selection score is never shown as an AUC (issue 12
item 7): a tiny real training run whose guard fires on every epoch, then evaluate.yaml on its checkpoint."""

from __future__ import annotations

import re
import shutil
import tempfile
import unittest
from pathlib import Path

from tests.bundle._bundle_utils import TINY, phantom_dataset, run_bundle


class TestEvaluateOutput(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_eval_out_"))
        data = phantom_dataset(cls.tmp, n_per_class=8)
        # no epoch can predict each of two classes for 99% of the images: the guard scores every epoch AUC - 1
        cls.ov = dict(TINY, dataset_dir=str(data), n_attn=0, epochs=1, run_dir=str(cls.tmp / "ft"), selection_min_class_fraction=0.99)
        cls.train = run_bundle(["train.yaml"], cls.ov)
        cls.train_log = cls.train.stdout + cls.train.stderr

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_training_logs_the_guard_as_a_score(self):
        self.assertIn("checkpoint-selection score", self.train_log)
        scores = [float(v) for v in re.findall(r"val_score: (-?[\d.]+)", self.train_log)]
        aucs = [float(v) for v in re.findall(r"val_auc: (-?[\d.]+)", self.train_log)]
        self.assertTrue(scores and aucs, self.train_log[-3000:])
        self.assertTrue(all(s < 0 for s in scores), "the guard fired: the selection score is AUC - 1")
        self.assertTrue(all(0.0 <= a <= 1.0 for a in aucs), "what is called an AUC is an AUC")
        self.assertNotIn("metric of val_auc", self.train_log)

    def test_evaluate_names_test_metrics(self):
        proc = run_bundle(["train.yaml", "evaluate.yaml"], dict(self.ov, n_bootstrap=50))
        log = proc.stdout + proc.stderr
        self.assertRegex(log, r"evaluation on \d+ test images: test accuracy [\d.]+ \[")
        self.assertIn("test auc", log)
        for wrong in ("val_auc", "val_acc", "val_score", "Got new best metric", "Key metric"):
            self.assertNotIn(wrong, log)
        self.assertTrue((self.tmp / "ft" / "eval_test" / "metrics.json").is_file())


if __name__ == "__main__":
    unittest.main()
