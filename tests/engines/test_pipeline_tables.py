# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.pipeline.tables on hand-made inputs: image pairing, paired and seed-paired differences, the Δ cells,
chain descriptions and cell formatting (the whole tables: tests/engines/test_make_tables.py)."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import numpy as np
from parameterized import parameterized

from mstl_monai.metrics import (
    paired_bootstrap_difference,
    read_predictions_csv,
    seed_paired_difference,
    write_predictions_csv,
)
from mstl_monai.pipeline.tables import (
    SEED_MARK,
    SEED_NOTE,
    PairedDifferences,
    aligned_probs,
    describe_chain,
    finetune_epochs,
    image_keys,
    match_rows,
    metric_cell,
    metric_value,
    paired_difference,
    seed_groups,
    seed_paired,
    seed_table,
    stage_label,
)

Y = np.array([0, 1, 0, 1, 1, 0])
NAMES = [f"img{i}.png" for i in range(6)]


def _predictions(root: Path, name: str, p: np.ndarray, order=None, names=NAMES, y=Y) -> Path:
    """A predictions.csv of class-1 probabilities ``p`` (one per image of ``names``), rows in ``order``."""
    order = np.arange(len(names)) if order is None else np.asarray(order)
    f = root / f"{name}.csv"
    write_predictions_csv(f, [names[i] for i in order], np.asarray(y)[order], np.asarray(p, dtype=float)[order])
    return f


def _row(chain: str, value: float, predictions=None, stages=("stl_m",), seed: int = 0) -> dict:
    m = {k: {"value": value, "ci_low": value - 0.1, "ci_high": value + 0.1} for k in ("accuracy", "f1", "auc")}
    return {"chain": chain, "backbone": "resnet18", "n_attn": 0, "stages": tuple(stages), "method": None,
            "guard": 0.0, "image_size": None, "recipe": (), "seed": seed, "metrics": m, "predictions": predictions}


class TestImagePairing(unittest.TestCase):
    def test_image_keys(self):
        self.assertEqual(image_keys(["a", 3], np.array([1, 0])), [("a", 1), ("3", 0)])

    @parameterized.expand(
        [
            ("permuted", [("a", 0), ("b", 1), ("c", 0)], [("c", 0), ("a", 0), ("b", 1)], [1, 2, 0]),
            ("superset", [("b", 1)], [("a", 0), ("b", 1)], [1]),
            ("missing", [("a", 0), ("d", 1)], [("a", 0), ("b", 1)], None),
            ("same name other label", [("a", 1)], [("a", 0)], None),
        ]
    )
    def test_match_rows(self, _, ref, keys, expected):
        self.assertEqual(match_rows(ref, keys), expected)

    def test_aligned_probs(self):
        p1, p2 = np.linspace(0.1, 0.6, 6), np.linspace(0.9, 0.4, 6)
        with tempfile.TemporaryDirectory() as d:
            f1 = _predictions(Path(d), "a", p1, order=[5, 4, 3, 2, 1, 0])
            f2 = _predictions(Path(d), "b", p2, order=[2, 0, 1, 5, 3, 4])
            out = aligned_probs([f1, f2], image_keys(NAMES, Y))
            np.testing.assert_allclose(out, np.stack([p1, p2]))
            # a file with one image less, or one more, did not score the same images
            few = _predictions(Path(d), "few", p1[:5], names=NAMES[:5], y=Y[:5])
            self.assertIsNone(aligned_probs([f1, few], image_keys(NAMES, Y)))
            self.assertIsNone(aligned_probs([f1], image_keys(NAMES[:5], Y[:5])))


class TestPairedDifference(unittest.TestCase):
    def test_perfect_minus_wrong(self):
        """A perfect model minus an always-wrong one: +1 in accuracy on every resample, whatever the row order."""
        with tempfile.TemporaryDirectory() as d:
            good = _predictions(Path(d), "good", Y.astype(float))
            bad = _predictions(Path(d), "bad", 1.0 - Y, order=[3, 1, 5, 0, 2, 4])
            r = paired_difference(good, bad, n_bootstrap=50)
            for k in ("value", "ci_low", "ci_high"):
                self.assertEqual(r["accuracy"][k], 1.0)
            self.assertEqual(r["auc"]["value"], 1.0)
            r = paired_difference(bad, good, n_bootstrap=50)
            self.assertEqual(r["accuracy"]["value"], -1.0)

    def test_pairs_by_image_as_the_bootstrap_of_aligned_arrays(self):
        rng = np.random.default_rng(0)
        pa, pb = rng.random(6), rng.random(6)
        with tempfile.TemporaryDirectory() as d:
            fa = _predictions(Path(d), "a", pa)
            fb = _predictions(Path(d), "b", pb, order=[4, 5, 0, 1, 2, 3])
            ref = paired_bootstrap_difference(Y, pa, pb, n_bootstrap=200, seed=3)
            got = paired_difference(fa, fb, n_bootstrap=200, seed=3)
            for k in ("accuracy", "f1", "auc"):
                for s in ("value", "ci_low", "ci_high"):
                    self.assertAlmostEqual(got[k][s], ref[k][s], places=12)
            # b missing one of a's images: no pairing
            fc = _predictions(Path(d), "c", pb[:5], names=NAMES[:5], y=Y[:5])
            self.assertIsNone(paired_difference(fa, fc))
            self.assertIsNotNone(paired_difference(fc, fa))  # a's images are all in b

    def test_seed_paired(self):
        rng = np.random.default_rng(1)
        a, b = rng.random((2, 6)), rng.random((3, 6))
        with tempfile.TemporaryDirectory() as d:
            fa = [_predictions(Path(d), f"a{k}", a[k], order=rng.permutation(6)) for k in range(2)]
            fb = [_predictions(Path(d), f"b{k}", b[k], order=rng.permutation(6)) for k in range(3)]
            names, y, _, _ = read_predictions_csv(fa[0])
            o = [NAMES.index(n) for n in names]  # the images in the order of a's first file
            ref = seed_paired_difference(y, a[:, o], b[:, o], n_bootstrap=100, seed=0)
            got = seed_paired(fa, fb, n_bootstrap=100, seed=0)
            self.assertAlmostEqual(got["auc"]["value"], ref["auc"]["value"], places=12)
            self.assertAlmostEqual(got["auc"]["ci_low"], ref["auc"]["ci_low"], places=12)
            # one seed each: the plain paired bootstrap (same resamples)
            one = seed_paired(fa[:1], fb[:1], n_bootstrap=100, seed=0)
            plain = paired_difference(fa[0], fb[0], n_bootstrap=100, seed=0)
            self.assertAlmostEqual(one["accuracy"]["ci_high"], plain["accuracy"]["ci_high"], places=12)
            other = _predictions(Path(d), "other", a[0][:5], names=NAMES[:5], y=Y[:5])
            self.assertIsNone(seed_paired(fa, fb[:2] + [other]))


class TestPairedDifferences(unittest.TestCase):
    def test_delta_cells(self):
        with tempfile.TemporaryDirectory() as d:
            good = _predictions(Path(d), "good", Y.astype(float))
            bad = _predictions(Path(d), "bad", 1.0 - Y)
            diffs = PairedDifferences({}, n_bootstrap=20)
            ra, rb = _row("a", 0.9, good), _row("b", 0.4, bad, stages=())
            self.assertEqual(diffs.delta(ra, None, "auc"), "-")  # no cell to compare with
            self.assertEqual(diffs.delta(_row("a", 0.9), _row("b", 0.4), "auc"), "+50.0")  # no predictions: no CI
            # the value from metrics.json, the CI from the paired resamples of the predictions
            self.assertEqual(diffs.delta(ra, rb, "accuracy"), "+50.0 [+100.0, +100.0]")
            self.assertIs(diffs.paired(ra, rb), diffs.paired(dict(ra), dict(rb)))  # computed once per pair
            self.assertFalse(diffs.seed_used)
            md = ["table"]
            diffs.seed_note(md)
            self.assertEqual(md, ["table"])

    def test_delta_over_seeds(self):
        with tempfile.TemporaryDirectory() as d:
            rows = [_row("a", 0.9, _predictions(Path(d), "a", Y.astype(float))),
                    _row("a_s1", 0.8, _predictions(Path(d), "a1", 0.8 * Y + 0.1), seed=1),
                    _row("b", 0.5, _predictions(Path(d), "b", 1.0 - Y), stages=()),
                    _row("b_s1", 0.5, _predictions(Path(d), "b1", 0.9 - 0.8 * Y), stages=(), seed=1),
                    _row("c", 0.7, _predictions(Path(d), "c", np.full(6, 0.7)), stages=("stl_n",))]
            groups = seed_groups(rows)
            self.assertEqual([r["chain"] for r in groups[next(iter(groups))]], ["a", "a_s1"])
            diffs = PairedDifferences(groups, n_bootstrap=20)
            # every seed of a is right on every image and every seed of b wrong: +100 points over seeds
            self.assertEqual(diffs.delta(rows[0], rows[2], "accuracy"), f"+100.0 [+100.0, +100.0] {SEED_MARK}")
            self.assertTrue(diffs.seed_used)
            self.assertNotIn(SEED_MARK, diffs.delta(rows[4], rows[2], "accuracy"))  # c has one seed
            md = []
            diffs.seed_note(md)
            diffs.seed_note(md)  # once per table
            self.assertEqual(md, [SEED_NOTE])

    def test_seed_table_names_a_seed_of_other_images(self):
        with tempfile.TemporaryDirectory() as d:
            rows = [_row("a", 0.9, _predictions(Path(d), "a", Y.astype(float))),
                    _row("a_s1", 0.8, _predictions(Path(d), "a1", Y[:5] * 0.8, names=NAMES[:5], y=Y[:5]), seed=1)]
            with self.assertRaisesRegex(ValueError, "a_s1: its predictions.csv holds other test images than a's"):
                seed_table(rows)


class TestDescribeChain(unittest.TestCase):
    def test_cell_recipe_and_seed(self):
        chain = {
            "common": {"backbone": "resnet18", "n_attn": 5, "seed": 3},
            "chain": {
                "overrides": {"n_attn": 1},
                "stages": [
                    "stl_m",
                    {"stage": "sstl_m"},
                    {"stage": "finetune", "overrides": {"seed": 2, "label_fraction": 0.1, "epochs": 7,
                                                        "selection_min_class_fraction": 0.2}},
                    "evaluate",
                ],
            },
        }
        d = describe_chain(chain)
        self.assertEqual((d["backbone"], d["n_attn"], d["stages"], d["method"]), ("resnet18", 1, ("stl_m", "sstl_m"), "ours"))
        self.assertEqual((d["seed"], d["seed_scope"], d["guard"]), (2, "finetune", 0.2))
        self.assertEqual(d["recipe"], (("epochs", 7), ("label_fraction", 0.1)))  # not the seed, not the guard
        self.assertEqual(finetune_epochs(chain), 7)

    def test_pretrained_is_stl_n_and_epoch_defaults(self):
        chain = {"chain": {"pretrained": "x.pt", "stages": ["finetune", "evaluate"]}, "stage_defaults": {}}
        d = describe_chain(chain)
        # weights given as a file are a cell of their own, not the grid's STL-N stage
        self.assertEqual((d["stages"], d["seed"], d["seed_scope"], d["recipe"]), (("stl_n",), 0, "chain", (("stl_n_weights", "x.pt"),)))
        self.assertEqual(finetune_epochs(chain), 40)
        chain["stage_defaults"] = {"finetune": {"epochs": 12}}
        self.assertEqual(finetune_epochs(chain), 12)
        chain["chain"]["overrides"] = {"epochs": 9}
        self.assertEqual(finetune_epochs(chain), 9)


class TestCells(unittest.TestCase):
    def test_metric_cells(self):
        m = {"auc": {"value": 0.8123, "ci_low": 0.75, "ci_high": 0.86}, "f1": {"value": None}}
        self.assertEqual(metric_cell(m, "auc"), "81.2 [75.0, 86.0]")
        self.assertEqual(metric_cell(m, "f1"), "not run")
        self.assertEqual(metric_cell(None, "auc", missing="-"), "-")
        self.assertAlmostEqual(metric_value(m, "auc"), 81.23)
        self.assertIsNone(metric_value(m, "accuracy"))

    def test_stage_label(self):
        self.assertEqual(stage_label(()), "none")
        self.assertEqual(stage_label(("stl_n", "stl_m", "sstl_m"), "moco"), "STL-N → STL-M → SSTL-M (MoCo)")
        self.assertEqual(stage_label(("stl_m",), ""), "STL-M")



class TestStlNTop1Files(unittest.TestCase):
    def test_longer_run_wins_and_unknown_epochs_read(self):
        import json
        import tempfile
        from pathlib import Path

        from mstl_monai.pipeline.tables import load_stl_n_top1

        with tempfile.TemporaryDirectory() as d:
            top1 = {"low": 0.1, "high": 0.2}
            for name, n_attn, epochs, value in (("stl_n_resnet18_attn0.json", 0, 8, 0.15), ("stl_n_resnet18_attn0_long.json", 0, 40, 0.27),
                                                ("stl_n_resnet18_attn5.json", 5, None, 0.17), ("stl_n_resnet18_attn5_b.json", 5, 8, 0.18)):
                (Path(d) / name).write_text(json.dumps({"backbone": "resnet18", "n_attn": n_attn, "epochs": epochs,
                                                         "top1": dict(top1, value=value)}))
            got = load_stl_n_top1(d)
        self.assertEqual(got[("resnet18", 0)]["top1"]["value"], 0.27)
        self.assertEqual(got[("resnet18", 5)]["top1"]["value"], 0.18)  # a run of unknown length counts as 0 epochs

if __name__ == "__main__":
    unittest.main()
