"""The finetune's recipe options (issue 15) from the bundle on the real COVID19-CT split: mixup, label smoothing,
robust augmentation, a label fraction and flip TTA, recorded in model.pt.json and used by evaluate and inference."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests.bundle._bundle_utils import TINY, run_bundle
from tests.utils import REPO_ROOT, require_real_data


class TestRecipeOptions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_recipe_"))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_options_train_evaluate_and_infer(self):
        data = require_real_data(self) / "covid-ct"
        ov = dict(TINY, dataset_dir=str(data), n_attn=0, epochs=2, run_dir=str(self.tmp / "ft"), mixup_alpha=0.4,
                  label_smoothing=0.1, robust_augmentation=True, label_fraction=0.05, tta=True)
        proc = run_bundle(["train.yaml"], ov)
        log = proc.stdout + proc.stderr
        info = json.loads((self.tmp / "ft" / "models" / "model.pt.json").read_text())
        self.assertIs(info["tta"], True, log[-2000:])
        # 5 % of 191 COVID + 234 non-COVID training slices: 10 + 12 images, 3 batches of 8 per epoch
        self.assertRegex(log, r"Epoch\[2\] Complete|Epoch: 2/2|epoch 2", log[-2000:])
        ev = dict(ov, n_bootstrap=20)
        ev.pop("tta")
        run_bundle(["train.yaml", "evaluate.yaml"], ev)
        m = json.loads((self.tmp / "ft" / "eval_test" / "metrics.json").read_text())
        self.assertEqual(m["n_images"] if "n_images" in m else m["n"], 203)
        # scripts/robustness_check.py scores the clean split as the bundle's evaluation does (TTA from the checkpoint)
        out_json = self.tmp / "robust.json"
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "robustness_check.py"), "--ckpt",
                               str(self.tmp / "ft" / "models" / "model.pt"), "--split", "test", "--n_bootstrap", "20",
                               "--data_root", str(data.parent), "--json", str(out_json)],
                              capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        rob = json.loads(out_json.read_text())[0]
        self.assertTrue(rob["tta"])
        self.assertEqual(len(rob["shifts"]), 8)  # clean + 7 shifts
        zoomed = rob["shifts"]["zoom out 0.75 (full field of view)"]["auc"]["value"]
        self.assertTrue(0.0 <= zoomed <= 1.0)
        self.assertAlmostEqual(rob["shifts"]["clean"]["auc"]["value"], m["auc"]["value"], delta=0.01)
        # inference: TTA from the checkpoint, and off on request: the probabilities differ
        probs = {}
        for tta in (None, False):
            out = self.tmp / f"infer_{tta}"
            iv = {"input": str(data / "CT_COVID"), "output_dir": str(out), "ckpt_path": str(self.tmp / "ft" / "models" / "model.pt"), "amp": False}
            if tta is not None:
                iv["tta"] = tta
            run_bundle(["inference.yaml"], iv)
            with open(out / "predictions.csv", newline="") as f:
                rows = list(csv.DictReader(f))[:40]
            key = next(k for k in rows[0] if k.startswith("prob_") and "COVID" in k and "non" not in k.lower())
            probs[tta] = [float(r[key]) for r in rows]
        self.assertNotEqual(probs[None], probs[False])


if __name__ == "__main__":
    unittest.main()


class TestRobustnessCheckArguments(unittest.TestCase):
    """scripts/robustness_check.py checks its arguments before scoring anything: one line each, exit 2 (before: a
    traceback, some after minutes of scoring)."""

    def test_bad_arguments_are_one_line(self):
        tmp = Path(tempfile.mkdtemp(prefix="mstl_robust_args_"))
        self.addCleanup(shutil.rmtree, tmp, True)
        (tmp / "afile").write_text("x")
        ckpt = str(REPO_ROOT / "bundle" / "models" / "model.pt")
        data = str(require_real_data(self))
        cases = {
            "missing checkpoint": (["--ckpt", str(tmp / "nope.pt")], "checkpoint(s) not found: "),
            "n_bootstrap": (["--ckpt", ckpt, "--n_bootstrap", "0"], "--n_bootstrap must be >= 1, got 0"),
            "image_size": (["--ckpt", ckpt, "--image_size", "-3"], "--image_size must be >= 8 pixels, got -3"),
            "json under a file": (["--ckpt", ckpt, "--json", str(tmp / "afile" / "x.json")], "is a file, not a folder"),
            "data root": (["--ckpt", ckpt, "--data_root", str(tmp)], "holds no covid-ct folder"),
        }
        for name, (args, words) in cases.items():
            with self.subTest(name):
                extra = [] if "--data_root" in args else ["--data_root", data]
                proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "robustness_check.py"), *args, *extra],
                                      capture_output=True, text=True, timeout=300)
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertNotIn("Traceback", proc.stderr)
                last = proc.stderr.strip().splitlines()[-1]  # argparse: the usage, then one error line
                self.assertTrue(last.startswith("robustness_check.py: error: "), proc.stderr)
                self.assertIn(words, last)
