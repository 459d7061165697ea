"""scripts/make_tables.py (mstl_monai.pipeline.tables) builds the paper's tables from the pipeline's result files
(no made-up cells)."""

from __future__ import annotations

import importlib.util
import json
import tempfile
import unittest
from pathlib import Path

from tests.utils import REPO_ROOT

_spec = importlib.util.spec_from_file_location("make_tables", REPO_ROOT / "scripts" / "make_tables.py")
make_tables = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_tables)


def _metric(v):
    return {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05}


def _write(root: Path, name: str, stages: list, n_attn: int, acc: float):
    d = root / name
    d.mkdir(parents=True)
    m = {k: _metric(acc) for k in ("accuracy", "f1", "auc", "sensitivity", "specificity")}
    m["n"] = 203
    (d / "metrics.json").write_text(json.dumps(m))
    chain = {"name": name, "overrides": {"n_attn": n_attn}, "stages": stages}
    (d / "chain.json").write_text(json.dumps({"chain": chain, "common": {"backbone": "resnet18"}}))


class TestMakeTables(unittest.TestCase):
    def test_tables_from_results(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            _write(root, "scratch", ["finetune", "evaluate"], 5, 0.60)
            _write(root, "stlm", ["stl_m", "finetune", "evaluate"], 5, 0.65)
            _write(root, "ours", ["stl_m", {"stage": "sstl_m", "overrides": {"method": "ours"}}, "finetune", "evaluate"], 5, 0.70)
            _write(root, "moco", ["stl_m", {"stage": "sstl_m", "overrides": {"method": "moco"}}, "finetune", "evaluate"], 5, 0.68)
            (root / "leep.json").write_text(json.dumps({"resnet18_attn5": {"none": -0.69, "stl_m": -0.65}}))
            readme = root / "README.md"
            readme.write_text("x\n<!-- results:start -->\nold\n<!-- results:end -->\ny\n")
            self.assertEqual(make_tables.main(["--results", d, "--readme", str(readme)]), 0)
            md = (root / "tables.md").read_text()
            self.assertIn("| resnet18 | +5 ATTNs | STL-M → SSTL-M | 70.0 [65.0, 75.0]", md)  # Table 2: with all stages
            self.assertIn("+10.0", md)  # improvement over no transfer
            self.assertIn("| resnet18 | +5 ATTNs | MoCo | 68.0 [63.0, 73.0] | 68.0 [63.0, 73.0] | 68.0 [63.0, 73.0] | +2.0 |", md)
            self.assertIn("| resnet18 | +5 ATTNs | SimCLR | not run | not run | not run | - |", md)  # Table 3
            self.assertIn("-0.690", md)
            text = readme.read_text()
            self.assertNotIn("old", text)
            self.assertTrue(text.startswith("x\n") and text.endswith("y\n"))
            self.assertTrue((root / "table2.csv").is_file())
            self.assertIn("### Table 1: top-1 of the STL-N source", md)
            self.assertIn("| resnet50 | not run | not run | 77.2 | 78.3 |", md)  # the paper's row, ours not run

    def test_finetune_setting_rows_stay_out_of_the_grid(self):
        """A chain that changes a finetune setting (e.g. label_fraction) is not the grid cell it changes: Table 2 keeps
        the default row, and the settings table shows it beside the default."""
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            _write(root, "scratch", ["finetune", "evaluate"], 5, 0.60)
            _write(root, "ours", ["stl_m", {"stage": "sstl_m", "overrides": {"method": "ours"}}, "finetune", "evaluate"], 5, 0.70)
            _write(root, "ours_lf10", ["stl_m", {"stage": "sstl_m", "overrides": {"method": "ours"}},
                                       {"stage": "finetune", "overrides": {"label_fraction": 0.1}}, "evaluate"], 5, 0.55)
            (root / "ours_lf10" / "timing.json").write_text(json.dumps({"finetune": 80.0, "evaluate": 5.0}))
            self.assertEqual(make_tables.main(["--results", d]), 0)
            md = (root / "tables.md").read_text()
            self.assertIn("| resnet18 | +5 ATTNs | STL-M → SSTL-M | 70.0 [65.0, 75.0]", md)  # the default, not 55.0
            self.assertNotIn("| resnet18 | +5 ATTNs | STL-M → SSTL-M | 55.0", md)
            self.assertIn("| resnet18 | +5 ATTNs | STL-M → SSTL-M (ours) | label_fraction=0.1 | 55.0 [50.0, 60.0]", md)
            self.assertIn("| -15.0 | - | 2.0 |", md)  # Δ vs the default cell; 80 s over 40 epochs
            self.assertTrue((root / "recipes.csv").is_file())

    def test_finetune_only_seeds_are_seeds_of_the_cell(self):
        """A chain whose finetune stage sets ``seed`` (pretraining shared with seed 0) is a seed of the same cell."""
        import csv as _csv

        import numpy as np

        rng = np.random.default_rng(0)
        y = np.array([0, 1] * 20)
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            for k in (0, 1, 2):
                ft = "finetune" if k == 0 else {"stage": "finetune", "overrides": {"seed": k}}
                name = "ours" if k == 0 else f"ours_ft_s{k}"
                _write(root, name, ["stl_m", {"stage": "sstl_m", "overrides": {"method": "ours"}}, ft, "evaluate"], 5, 0.7)
                p = np.clip(0.3 + 0.4 * y + rng.normal(0, 0.2, y.size), 0, 1)
                with open(root / name / "predictions.csv", "w", newline="") as f:
                    w = _csv.writer(f)
                    w.writerow(["name", "label", "pred", "prob_non-COVID", "prob_COVID"])
                    w.writerows([f"i{i}.png", int(t), int(q > 0.5), 1 - q, q] for i, (t, q) in enumerate(zip(y, p)))
            self.assertEqual(make_tables.main(["--results", d]), 0)
            md = (root / "tables.md").read_text()
            self.assertIn("| 0, 1, 2 (finetune) |", md)
            self.assertNotIn("Finetune settings", md)  # a seed is not a finetune setting

    def test_stl_n_tables(self):
        """STL-N rows: Table 1 from stl_n_*.json, Table 2's four-stage chain, the per-stage gains, Tables 5 and 6."""
        sstl = {"stage": "sstl_m", "overrides": {"method": "ours"}}
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            _write(root, "scratch", ["finetune", "evaluate"], 5, 0.60)
            _write(root, "stln", ["stl_n", "finetune", "evaluate"], 5, 0.62)
            _write(root, "stln_stlm", ["stl_n", "stl_m", "finetune", "evaluate"], 5, 0.66)
            _write(root, "stln_stlm_sstl", ["stl_n", "stl_m", sstl, "finetune", "evaluate"], 5, 0.75)
            top1 = {"backbone": "resnet18", "n_attn": 5, "top1": {"value": 0.2, "low": 0.18, "high": 0.22}}
            (root / "stl_n_resnet18_attn5.json").write_text(json.dumps(top1))
            leep = {"resnet18_attn5": {"none": -0.69, "stl_n": -0.68, "stl_m": -0.66, "stl_n+stl_m": -0.65}}
            (root / "leep.json").write_text(json.dumps(leep))
            self.assertEqual(make_tables.main(["--results", d]), 0)
            md = (root / "tables.md").read_text()
            self.assertIn("| resnet18 | not run | 20.0 [18.0, 22.0] | - | - |", md)  # Table 1
            self.assertIn("| resnet18 | +5 ATTNs | STL-N → STL-M → SSTL-M | 75.0 [70.0, 80.0]", md)  # Table 2
            self.assertIn("| resnet18 | +5 ATTNs | STL-N | +2.0 | +2.0 | +2.0 |", md)  # per-stage gain
            self.assertIn("| resnet18 | +5 ATTNs | SSTL-M (ours) after STL-N → STL-M | +9.0 |", md)
            self.assertIn("| resnet18 | +5 ATTNs | 60.0 [55.0, 65.0] | 62.0 [57.0, 67.0] | not run |", md)  # Table 5
            self.assertIn("| resnet18 | +5 ATTNs | -0.690 | -0.680 | -0.660 | -0.650 |", md)  # Table 6

    def test_leep_plot_and_plus_one_attn(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            for n in (0, 1):
                _write(root, f"scratch{n}", ["finetune", "evaluate"], n, 0.60)
                _write(root, f"stlm{n}", ["stl_m", "finetune", "evaluate"], n, 0.64 + 0.02 * n)
            _write(
                root,
                "ours1",
                ["stl_m", {"stage": "sstl_m", "overrides": {"method": "ours"}}, "finetune", "evaluate"],
                1,
                0.72,
            )
            leep = {
                "resnet18_attn0": {"none": -0.69, "stl_m": -0.66},
                "resnet18_attn1": {"none": -0.69, "stl_m": -0.64},
            }
            (root / "leep.json").write_text(json.dumps(leep))
            self.assertEqual(make_tables.main(["--results", d]), 0)
            png = root / "leep.png"
            self.assertTrue(png.is_file())
            self.assertGreater(png.stat().st_size, 1000)
            self.assertEqual(png.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
            md = (root / "tables.md").read_text()
            self.assertIn("`leep.png`", md)
            self.assertIn("| resnet18 | +1 ATTN | STL-M → SSTL-M | 72.0 [67.0, 77.0]", md)  # Table 2 row of +1 ATTN
            self.assertIn("| resnet18 | +1 ATTN | ours | 72.0 [67.0, 77.0]", md)  # Table 3
            self.assertIn("| resnet18 | +1 ATTN | 60.0 [55.0, 65.0] | not run | 66.0", md)  # Table 5
            self.assertIn("| resnet18 | +1 ATTN | -0.690 |", md)  # Table 6
            # no leep.json: no plot, no mention
            (root / "leep.json").unlink()
            png.unlink()
            self.assertEqual(make_tables.main(["--results", d]), 0)
            self.assertFalse(png.exists())
            self.assertNotIn("leep.png", (root / "tables.md").read_text())

    def test_no_results(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(SystemExit):
                make_tables.main(["--results", d])


if __name__ == "__main__":
    unittest.main()


class TestPairedDeltas(unittest.TestCase):
    def test_delta_with_paired_ci(self):
        import numpy as np

        from mstl_monai.metrics import write_predictions_csv

        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 100)
        p_good = np.clip(0.5 + 0.4 * (2 * y - 1) + rng.normal(0, 0.2, 100), 0, 1)
        p_bad = rng.uniform(0, 1, 100)
        names = [f"img{i}.png" for i in range(100)]
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            _write(root, "scratch", ["finetune", "evaluate"], 5, 0.50)
            _write(root, "ours", ["stl_m", {"stage": "sstl_m", "overrides": {"method": "ours"}}, "finetune", "evaluate"], 5, 0.90)
            write_predictions_csv(root / "ours" / "predictions.csv", names, y, np.stack([1 - p_good, p_good], 1))
            # the same images in another order: the deltas pair them by name
            order = rng.permutation(100)
            write_predictions_csv(
                root / "scratch" / "predictions.csv", [names[i] for i in order], y[order], np.stack([1 - p_bad, p_bad], 1)[order]
            )
            self.assertEqual(make_tables.main(["--results", d]), 0)
            row = next(line for line in (root / "tables.md").read_text().splitlines() if line.startswith("| resnet18 | +5 ATTNs | STL-M → SSTL-M | 90.0"))
            cells = [c.strip() for c in row.strip("|").split("|")]
            d_acc = cells[9]  # "+40.0 [+a, +b]" from metrics.json values, CI from the paired resamples
            self.assertRegex(d_acc, r"^\+40\.0 \[\+\d+\.\d, \+\d+\.\d\]$")
            lo = float(d_acc.split("[")[1].split(",")[0])
            self.assertGreater(lo, 0.0)


class TestSelectionTable(unittest.TestCase):
    def test_guarded_chain_is_its_own_cell(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            _write(root, "scratch", ["finetune", "evaluate"], 5, 0.52)
            guarded = [{"stage": "finetune", "overrides": {"selection_min_class_fraction": 0.1}}, "evaluate"]
            _write(root, "scratch_guard", guarded, 5, 0.66)
            self.assertEqual(make_tables.main(["--results", d]), 0)
            md = (root / "tables.md").read_text()
            # the guarded run neither replaces nor is mistaken for the plain cell of Table 5
            self.assertIn("| resnet18 | +5 ATTNs | 52.0 [47.0, 57.0] |", md)
            self.assertIn("### Checkpoint selection", md)
            self.assertIn("| resnet18 | +5 ATTNs | none | 52.0 [47.0, 57.0] / 52.0 [47.0, 57.0] / 52.0 [47.0, 57.0] | 66.0", md)
            self.assertIn("| +14.0 / +14.0 | 0.10 |", md)
            self.assertTrue((root / "selection.csv").is_file())


class TestSeedTables(unittest.TestCase):
    """Several seeds of a cell (issue 15 item 1): mean over seeds with a CI over images and seeds, and the ensemble."""

    def test_seed_mean_and_ensemble(self):
        import numpy as np

        from mstl_monai.metrics import bootstrap_classification_metrics, classification_metrics, write_predictions_csv

        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 80)
        names = [f"img{i}.png" for i in range(80)]
        probs = [np.clip(0.3 * y + 0.7 * rng.random(80), 0, 1) for _ in range(3)]
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            for k, p in enumerate(probs):
                name = "r18_scratch" + (f"_s{k}" if k else "")
                _write(root, name, ["finetune", "evaluate"], 0, 0.6 + 0.01 * k)
                chain = json.loads((root / name / "chain.json").read_text())
                if k:
                    chain["chain"]["overrides"]["seed"] = k
                (root / name / "chain.json").write_text(json.dumps(chain))
                order = rng.permutation(80)  # each seed's rows in its own order
                write_predictions_csv(root / name / "predictions.csv", [names[i] for i in order], y[order], np.stack([1 - p, p], 1)[order])
            m = json.loads((root / "r18_scratch" / "metrics.json").read_text())
            m["decision_threshold"] = {"value": 0.42, "source": "checkpoint"}
            m["at_threshold"] = {k: _metric(0.66) for k in ("accuracy", "f1", "sensitivity", "specificity")}
            (root / "r18_scratch" / "metrics.json").write_text(json.dumps(m))
            self.assertEqual(make_tables.main(["--results", d]), 0)
            md = (root / "tables.md").read_text()
            self.assertIn("### Seeds: mean over seeds and seed ensemble", md)
            line = next(ln for ln in md.splitlines() if ln.startswith("| resnet18 | baseline | none | 0, 1, 2 |"))
            auc_mean = np.mean([classification_metrics(y, p)["auc"] for p in probs])
            ens = bootstrap_classification_metrics(y, np.mean(probs, 0), n_bootstrap=1000, seed=0)["auc"]
            self.assertIn(f"{100 * auc_mean:.1f} [", line)
            self.assertTrue(line.rsplit(" | ", 1)[1].startswith(f"{100 * ens['value']:.1f} ["), line)  # the ensemble's AUC
            self.assertIn("| r18_scratch | 0.420 | 66.0 [61.0, 71.0]", md)  # the val threshold's metrics beside 0.5
            self.assertIn("| resnet18 | baseline | 60.0 [55.0, 65.0] | not run |", md)  # Table 5: seed 0's chain
            self.assertTrue((root / "seeds.csv").is_file())


class TestSeedDeltas(unittest.TestCase):
    """Δ columns over seeds (issue 15 item 1): cells with 2+ seeds on both sides compare their seed means (‡)."""

    def test_deltas_over_seeds(self):
        import numpy as np

        from mstl_monai.metrics import paired_bootstrap_difference, seed_paired_difference, write_predictions_csv

        rng = np.random.default_rng(1)
        n = 90
        y = rng.integers(0, 2, n)
        names = [f"img{i}.png" for i in range(n)]
        sstl = {"stage": "sstl_m", "overrides": {"method": "ours"}}
        cells = {  # name -> (stages, signal strength of each seed's model)
            "scratch": (["finetune", "evaluate"], (0.0, 0.05, 0.1)),
            "stln": (["stl_n", "finetune", "evaluate"], (0.2,)),  # one seed only
            "stlm": (["stl_m", "finetune", "evaluate"], (0.2, 0.15)),  # two seeds
            "ours": (["stl_m", sstl, "finetune", "evaluate"], (0.3, 0.35, 0.25)),
        }
        probs, orders = {}, {}
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            for cell, (stages, strengths) in cells.items():
                probs[cell] = []
                for k, s in enumerate(strengths):
                    p = np.clip(0.5 + s * (2 * y - 1) + rng.normal(0, 0.25, n), 0, 1)
                    probs[cell].append(p)
                    name = cell + (f"_s{k}" if k else "")
                    _write(root, name, stages, 5, 0.6)
                    chain = json.loads((root / name / "chain.json").read_text())
                    chain["chain"]["overrides"]["seed"] = k
                    (root / name / "chain.json").write_text(json.dumps(chain))
                    o = orders[name] = rng.permutation(n)  # each run's rows in its own order: paired by name
                    rows = np.stack([1 - p, p], 1)[o]
                    write_predictions_csv(root / name / "predictions.csv", [names[i] for i in o], y[o], rows)
            self.assertEqual(make_tables.main(["--results", d]), 0)
            md = (root / "tables.md").read_text()
        # Table 2: ours (3 seeds) - scratch (3 seeds): the seed-mean difference and its two-level CI, marked;
        # the images in the order of the first cell's seed-0 predictions.csv (the bootstrap draws positions)
        def seeds(a, b, o):
            pa, pb = np.stack(probs[a])[:, o], np.stack(probs[b])[:, o]
            return seed_paired_difference(y[o], pa, pb, n_bootstrap=1000, seed=0)

        def fmt(r):
            return f"{100 * r['value']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"

        ref = seeds("ours", "scratch", orders["ours"])
        row = next(ln for ln in md.splitlines() if ln.startswith("| resnet18 | +5 ATTNs | STL-M → SSTL-M |"))
        cells_ = [c.strip() for c in row.strip("|").split("|")]
        for j, k in zip((9, 10, 11), ("accuracy", "f1", "auc")):
            self.assertEqual(cells_[j], fmt(ref[k]) + " ‡")
        self.assertGreater(ref["auc"]["ci_low"], 0.0)  # the seed-mean gain of the clearly better cell is resolved
        self.assertNotEqual(cells_[9], "+0.0 [+0.0, +0.0] ‡")  # not the metrics.json values (all 0.6 here)
        self.assertEqual(md.count(make_tables.SEED_NOTE.strip()), 2)  # under Table 2 and the per-stage gains
        # per-stage gain: stln has one seed, so "STL-N" (stln - scratch) stays seed 0's pairing, unmarked
        gain = next(ln for ln in md.splitlines() if ln.startswith("| resnet18 | +5 ATTNs | STL-N |"))
        o = orders["stln"]
        p0 = paired_bootstrap_difference(y[o], probs["stln"][0][o], probs["scratch"][0][o], n_bootstrap=1000, seed=0)
        self.assertIn(f"| +0.0 [{100 * p0['accuracy']['ci_low']:+.1f}, {100 * p0['accuracy']['ci_high']:+.1f}] |", gain)
        self.assertNotIn("‡", gain)
        # 2 seeds (stlm) vs 3 (scratch): over all seeds of each
        gain = next(ln for ln in md.splitlines() if ln.startswith("| resnet18 | +5 ATTNs | STL-M |"))
        self.assertIn(f"| {fmt(seeds('stlm', 'scratch', orders['stlm'])['auc'])} ‡ |", gain)
        self.assertIn("| resnet18 | +5 ATTNs | SSTL-M (ours) after STL-M |", md)
        # the Table 3 section has no Δ over seeds (no MoCo / SimCLR): no note there
        t3 = md.split("### Table 3")[1].split("### Table 5")[0]
        self.assertNotIn("‡", t3)
