"""scripts/label_fraction_plot.py: the table, the paired transfer gain and the figure from published results."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np

from tests.utils import REPO_ROOT


def _write_chain(root: Path, name: str, probs: np.ndarray, labels: np.ndarray) -> None:
    from mstl_monai.metrics import bootstrap_classification_metrics

    d = root / name
    d.mkdir(parents=True)
    m = bootstrap_classification_metrics(labels, probs, n_bootstrap=50, seed=0)
    (d / "metrics.json").write_text(json.dumps(m))
    # chain.json as mstl-pipeline writes it: the seeds of a cell are told by their settings, not by their names
    fraction = {"_lf10": 0.1, "_lf25": 0.25, "_lf50": 0.5}.get(next((f for f in ("_lf10", "_lf25", "_lf50") if f in name), ""))
    seed = int(name.rsplit("_ft_s", 1)[1]) if "_ft_s" in name else None
    ft = {k: v for k, v in (("label_fraction", fraction), ("seed", seed)) if v is not None}
    stages = [] if "scratch" in name else ["stl_n", "stl_m", {"stage": "sstl_m", "overrides": {"method": "ours"}}]
    stages += [{"stage": "finetune", "overrides": ft} if ft else "finetune", "evaluate"]
    chain = {"name": name, "overrides": {"backbone": "resnet18", "n_attn": 0}, "stages": stages}
    (d / "chain.json").write_text(json.dumps({"chain": chain, "common": {"seed": 0}}))
    with open(d / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "label", "pred", "prob_non-COVID", "prob_COVID"])
        for i, (y, p) in enumerate(zip(labels, probs)):
            w.writerow([f"img{i}.png", int(y), int(p > 0.5), 1 - p, p])


class TestLabelFractionPlot(unittest.TestCase):
    def test_table_gain_and_figure(self):
        rng = np.random.default_rng(0)
        y = np.array([0, 1] * 30)
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            for suffix, noise in (("_lf10", 0.9), ("", 0.5)):
                good = np.clip(y * 0.6 + 0.2 + rng.normal(0, noise * 0.3, y.size), 0, 1)
                bad = np.clip(0.5 + rng.normal(0, 0.3, y.size), 0, 1)
                _write_chain(root, "r18_base_scratch" + suffix, bad, y)
                _write_chain(root, "r18_base_stln_stlm_sstl_ours" + suffix, good, y)
            for k in (1, 2):  # finetune seeds of the 10 % point, both arms
                _write_chain(root, f"r18_base_scratch_lf10_ft_s{k}", np.clip(0.5 + rng.normal(0, 0.3, y.size), 0, 1), y)
                good = np.clip(y * 0.6 + 0.2 + rng.normal(0, 0.3, y.size), 0, 1)
                _write_chain(root, f"r18_base_stln_stlm_sstl_ours_lf10_ft_s{k}", good, y)
            (root / "r18_base_scratch_ft_s1").mkdir()  # a seed that has not finished: no metrics.json, not counted
            readme = root / "README.md"
            readme.write_text("before\n<!-- label-fraction:start -->\nold table\n<!-- label-fraction:end -->\nafter\n")
            proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "label_fraction_plot.py"), "--results", d,
                                   "--readme", str(readme)],
                                  capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
            self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
            md = (root / "label_fraction.md").read_text()
            self.assertEqual(readme.read_text(), f"before\n<!-- label-fraction:start -->\n{md}<!-- label-fraction:end -->\nafter\n")
            self.assertIn("| 10 % |", md)
            self.assertIn("| 100 % |", md)
            self.assertIn("Not run yet: r18_base_scratch_lf25", md)  # missing fractions are named, not interpolated
            gain = [line.split("|")[5] for line in md.splitlines() if line.startswith("| 100 %")][0]
            self.assertTrue(gain.strip().startswith("+"), md)  # the better arm's paired gain is positive
            self.assertEqual((root / "label_fraction.png").read_bytes()[:4], b"\x89PNG")
            lf10 = [line.split("|") for line in md.splitlines() if line.startswith("| 10 %")][0]
            self.assertEqual(lf10[2].strip(), "3/3")  # seed 0 and the two finetune seeds of each arm
            self.assertIn(" ±", lf10[3])  # the seed SD beside the seed-mean AUC
            self.assertTrue(lf10[5].strip().startswith("+"), md)  # seed-mean paired gain
            lf100 = [line.split("|") for line in md.splitlines() if line.startswith("| 100 %")][0]
            self.assertEqual(lf100[2].strip(), "1/1")
            self.assertNotIn("±", lf100[3])
            with open(root / "label_fraction.csv", newline="") as f:
                rows = list(csv.DictReader(f))
            self.assertEqual(len(rows), 4)
            self.assertEqual([r["n_seeds"] for r in rows], ["3", "3", "1", "1"])
            # the seed-mean AUC is the mean of the three seeds' own AUCs
            aucs = [json.loads((root / c / "metrics.json").read_text())["auc"]["value"]
                    for c in rows[1]["chains"].split()]
            self.assertEqual(len(aucs), 3)
            self.assertAlmostEqual(float(rows[1]["auc_value"]), float(np.mean(aucs)), places=6)

    def test_unreadable_chain_json_is_named(self):
        y = np.array([0, 1] * 10)
        with tempfile.TemporaryDirectory() as d:
            _write_chain(Path(d), "r18_base_scratch", np.clip(y * 0.5 + 0.25, 0, 1), y)
            bad = Path(d) / "r18_base_scratch" / "chain.json"
            bad.write_text('{"chain": ')  # truncated
            proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "label_fraction_plot.py"), "--results", d],
                                  capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
            self.assertEqual(proc.returncode, 2, proc.stderr[-2000:])
            self.assertIn(str(bad), proc.stderr)
            self.assertNotIn("Traceback", proc.stderr)
            self.assertFalse((Path(d) / "label_fraction.md").exists())  # nothing half-written


if __name__ == "__main__":
    unittest.main()
