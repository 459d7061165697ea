"""Self-describing checkpoints: inference, evaluate and export read a checkpoint's settings; every checkpoint
problem ends a bundle run with one line that names the file (or the setting) as the last line of stderr."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import torch

from mstl_monai.networks import build_network
from tests.bundle._bundle_utils import BUNDLE, CONFIGS, TINY, phantom_dataset, run_bundle


def last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class TestCheckpointSettings(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_ckpt_"))
        cls.data = phantom_dataset(cls.tmp, n_per_class=6, size=48)
        cls.run_dir = cls.tmp / "ft"
        # a 32-px ResNet-18 +1: far from the inference defaults (ResNet-50, 224/256)
        run_bundle(["train.yaml"], dict(TINY, dataset_dir=str(cls.data), n_attn=1, run_dir=str(cls.run_dir), epochs=1))
        cls.best = cls.run_dir / "models" / "model.pt"
        cls.inputs = cls.tmp / "inputs"
        cls.inputs.mkdir()
        for p in sorted((cls.data / "CT_COVID").glob("*.png"))[:3]:
            shutil.copy(p, cls.inputs / p.name)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def infer(self, ckpt: Path, out: str, check: bool = True, inputs: Path | None = None, **overrides):
        ov = dict(input=str(inputs or self.inputs), output_dir=str(self.tmp / out), ckpt_path=str(ckpt), num_workers=0)
        return run_bundle(["inference.yaml"], dict(ov, **overrides), check=check)

    def probs(self, out: str) -> dict[str, float]:
        with open(self.tmp / out / "predictions.csv") as f:
            return {Path(r["file"]).name: float(r["prob_COVID"]) for r in csv.DictReader(f)}

    def test_sidecar_and_plain_state_dict(self):
        info = json.loads(Path(f"{self.best}.json").read_text())
        self.assertEqual(
            {k: info[k] for k in ("backbone", "n_attn", "in_channels", "num_classes", "image_size", "resize_size")},
            {"backbone": "resnet18", "n_attn": 1, "in_channels": 1, "num_classes": 2, "image_size": 32, "resize_size": 36},
        )
        self.assertEqual(info["class_names"], ["non-COVID", "COVID"])
        self.assertIn("decision_threshold", info)
        # model.pt stays a plain state dict: torch.load + load_state_dict
        net = build_network("resnet18", n_attn=1, n_input_channels=1, num_classes=2)
        net.load_state_dict(torch.load(self.best, weights_only=True))
        self.assertEqual(json.loads((self.run_dir / "models" / "model_final.pt.json").read_text())["state_dict_key"], "network")

    def test_inference_reads_settings(self):
        """No --backbone/--n_attn/--image_size/--resize_size: the checkpoint's own settings are used."""
        self.infer(self.best, "auto")
        self.assertEqual(len(self.probs("auto")), 3)
        # the best checkpoint's calibration (fitted on val for these weights) is not the other files': with one epoch
        # they hold the same weights, so given its temperature they give the same probabilities
        temperature = json.loads(Path(f"{self.best}.json").read_text())["temperature"]
        self.assertIsInstance(temperature, float)
        # a training checkpoint: its network entry is loaded
        self.infer(self.run_dir / "models" / "model_final.pt", "final", temperature=temperature)
        self.assertEqual(self.probs("final"), self.probs("auto"))
        # an older checkpoint without a settings file still loads with explicit settings, same probabilities
        old = self.tmp / "old" / "model.pt"
        old.parent.mkdir(exist_ok=True)
        shutil.copy(self.best, old)
        proc = self.infer(old, "old", image_size=32, resize_size=36, temperature=temperature)
        self.assertIn("has no settings file", proc.stdout + proc.stderr)
        self.assertEqual(self.probs("old"), self.probs("auto"))

    def test_contradicting_override_is_one_line(self):
        proc = self.infer(self.best, "bad_size", check=False, image_size=64)
        self.assertNotEqual(proc.returncode, 0)
        line = last_line(proc)
        self.assertIn("image_size=64", line)
        self.assertIn("32", line)
        self.assertIn(str(self.best), line)
        proc = self.infer(self.best, "bad_backbone", check=False, backbone="resnet50")
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("backbone='resnet50'", last_line(proc))
        self.assertIn("'resnet18'", last_line(proc))

    def test_switch_given_as_text_is_one_line(self):
        # before: `--tta false` (text on the command line) switched flip TTA on, and `--tta maybe` ran silently
        for value in ("false", "maybe"):
            with self.subTest(tta=value):
                proc = self.infer(self.best, f"tta_{value}", check=False, tta=value)
                self.assertNotEqual(proc.returncode, 0)
                self.assertIn(f'setting tta="{value}" is not true or false', last_line(proc))
        self.infer(self.best, "tta_off", tta=False)

    def test_setting_values_are_checked_before_the_run(self):
        # before: --temperature -1 inverted every probability and --temperature 0 wrote NaN, both with exit code 0
        for name, value, words in (("temperature", -1, "temperature=-1 is not a finite number > 0"),
                                   ("temperature", 0, "temperature=0 is not a finite number > 0"),
                                   ("normalize", "none", 'normalize="none" is not')):
            with self.subTest(**{name: value}):
                out = f"bad_{name}_{value}"
                proc = self.infer(self.best, out, check=False, **{name: value})
                self.assertNotEqual(proc.returncode, 0)
                self.assertIn(words, last_line(proc))
                self.assertFalse((self.tmp / out / "predictions.csv").exists())

    def test_output_dir_under_a_file_is_one_line(self):
        """inference, whole-scan inference and evaluate refuse an output_dir under a file before loading the model
        (before: a traceback from os.makedirs after the model was built)."""
        blocker = self.tmp / "afile"
        blocker.write_text("x")
        target = blocker / "out"
        want = f"ValueError: output_dir {str(target)!r}: {str(blocker)!r} is a file, not a folder."
        runs = {
            "inference": (["inference.yaml"], dict(input=str(self.inputs), ckpt_path=str(self.best), num_workers=0)),
            "scan": (["inference_scan.yaml"], dict(input=str(self.inputs), ckpt_path=str(self.best))),
            "evaluate": (["train.yaml", "evaluate.yaml"], dict(TINY, dataset_dir=str(self.data), eval_ckpt=str(self.best),
                                                                run_dir=str(self.run_dir))),
        }
        for name, (configs, overrides) in runs.items():
            with self.subTest(name):
                proc = run_bundle(configs, dict(overrides, output_dir=str(target)), check=False)
                self.assertNotEqual(proc.returncode, 0)
                self.assertEqual(last_line(proc), want)

    def test_bad_checkpoint_file_is_one_line(self):
        bad = self.tmp / "bad"
        bad.mkdir(exist_ok=True)
        (bad / "text.pt").write_bytes(b"this is not a checkpoint\n")  # (random bytes, empty files: unit tests)
        proc = self.infer(bad / "text.pt", "bad_text", check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(last_line(proc), rf"^ValueError: checkpoint {bad / 'text.pt'} is not a PyTorch file")

    def test_invalid_settings_file_is_one_line(self):
        """A settings file with a wrong field stops inference before any prediction, naming the file, field and value
        (before: 3 names for 2 classes wrote a predictions.csv whose header had 9 columns and rows 8; tta "false"
        turned TTA on; a file with only "format" ended in KeyError: 'decision_threshold')."""
        info = json.loads(Path(f"{self.best}.json").read_text())
        cases = {
            "names": (dict(info, class_names=["a", "b", "c"]), r'class_names=\["a", "b", "c"\] names 3 classes but num_classes is 2'),
            "tta": (dict(info, tta="false"), r'tta="false" is not true or false'),
            "format_only": ({"format": info["format"]}, r"required field\(s\) missing: backbone, n_attn"),
        }
        for name, (bad, pattern) in cases.items():
            with self.subTest(name):
                ckpt = self.tmp / f"bad_{name}" / "model.pt"
                ckpt.parent.mkdir(exist_ok=True)
                shutil.copy(self.best, ckpt)
                Path(f"{ckpt}.json").write_text(json.dumps(bad))
                proc = self.infer(ckpt, f"out_{name}", check=False)
                self.assertNotEqual(proc.returncode, 0)
                self.assertRegex(last_line(proc), rf"^ValueError: {ckpt}\.json: .*{pattern}")
                self.assertFalse((self.tmp / f"out_{name}" / "predictions.csv").exists())

    def test_unreadable_inputs_are_one_line(self):
        junk = self.tmp / "junk"
        junk.mkdir(exist_ok=True)
        (junk / "a.png").write_bytes(b"not a png")
        proc = self.infer(self.best, "junk", check=False, inputs=junk)
        self.assertNotEqual(proc.returncode, 0)
        self.assertRegex(last_line(proc), r"^ValueError: none of the 1 inputs could be read")

    def test_evaluate_and_export_read_settings(self):
        run_bundle(["train.yaml", "evaluate.yaml"], dict(dataset_dir=str(self.data), run_dir=str(self.run_dir), n_bootstrap=50, num_workers=0))
        metrics = json.loads((self.run_dir / "eval_test" / "metrics.json").read_text())
        self.assertIn("auc", metrics)
        # evaluate writes inference's predictions.csv columns, and the label; pred is decided at the stored threshold
        self.infer(self.best, "schema")
        with open(self.tmp / "schema" / "predictions.csv", newline="") as f:
            inferred = csv.reader(f).__next__()
        with open(self.run_dir / "eval_test" / "predictions.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        self.assertEqual(list(rows[0]), inferred + ["label"])
        stored = metrics["decision_threshold"]["value"]
        self.assertEqual(stored, json.loads(Path(f"{self.best}.json").read_text())["decision_threshold"] or 0.5)
        for r in rows:
            self.assertEqual(int(r["pred"]), int(float(r["prob_COVID"]) > stored), r)
            self.assertAlmostEqual(float(r["threshold"]), stored, places=5)
        self.assertIn("at_threshold", metrics)  # metrics at the stored threshold beside those at 0.5
        ts = self.tmp / "model.ts"
        cmd = [
            sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def",
            "--filepath", str(ts), "--ckpt_file", str(self.best), "--meta_file", str(CONFIGS / "metadata.json"),
            "--config_file", str(CONFIGS / "inference.yaml"), "--bundle_root", str(BUNDLE),
            "--use_trace", "True", "--input_shape", "[1, 1, 32, 32]",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        from monai.data import load_net_with_metadata

        net, _, _ = load_net_with_metadata(str(ts))
        self.assertEqual(tuple(net(torch.zeros(1, 1, 32, 32)).shape), (1, 2))


if __name__ == "__main__":
    unittest.main()
