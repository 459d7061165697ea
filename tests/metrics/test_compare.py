"""python -m mstl_monai.metrics compare: paired differences read from predictions files, aligned by image."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

from mstl_monai.metrics import paired_bootstrap_difference, seed_paired_difference, write_predictions_csv
from mstl_monai.metrics.__main__ import main as metrics_main
from mstl_monai.metrics.compare import compare_predictions
from tests.utils import REPO_ROOT


def main(argv: list[str]) -> int:
    return metrics_main(["compare", *argv])


def _write(path: Path, names, y, p1) -> Path:
    p1 = np.asarray(p1, dtype=float)
    write_predictions_csv(path, names, np.asarray(y), np.stack([1 - p1, p1], 1), ["non-COVID", "COVID"])
    return path


class TestCompare(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_compare_"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        rng = np.random.default_rng(0)
        self.names = [f"img{i}.png" for i in range(40)]
        self.y = np.array([0, 1] * 20)
        self.pa = [np.clip(self.y * 0.6 + rng.uniform(0, 0.4, 40), 0, 1) for _ in range(2)]
        self.pb = np.clip(self.y * 0.2 + rng.uniform(0, 0.8, 40), 0, 1)

    def test_single_files_equal_paired_bootstrap_and_order_does_not_matter(self):
        a = _write(self.tmp / "a.csv", self.names, self.y, self.pa[0])
        perm = np.random.default_rng(1).permutation(40)  # b lists the images in another order
        b_dir = self.tmp / "b"
        b_dir.mkdir()
        _write(b_dir / "predictions.csv", [self.names[i] for i in perm], self.y[perm], self.pb[perm])
        out = compare_predictions([a], [b_dir], n_bootstrap=200)
        ref = paired_bootstrap_difference(self.y, self.pa[0], self.pb, n_bootstrap=200, seed=0)
        for m in ("accuracy", "auc"):
            self.assertAlmostEqual(out[m]["value"], ref[m]["value"], places=12)
            self.assertAlmostEqual(out[m]["ci_low"], ref[m]["ci_low"], places=12)
        self.assertGreater(out["auc"]["value"], 0.2)  # a separates the classes, b hardly

    def test_seeds_and_cli(self):
        a = [_write(self.tmp / f"a{k}.csv", self.names, self.y, self.pa[k]) for k in range(2)]
        b = [_write(self.tmp / "b.csv", self.names, self.y, self.pb)]
        ref = seed_paired_difference(self.y, np.stack(self.pa), self.pb, n_bootstrap=100, seed=0)
        out = compare_predictions(a, b, n_bootstrap=100)
        self.assertEqual(out["n_seeds"], [2, 1])
        self.assertAlmostEqual(out["auc"]["value"], ref["auc"]["value"], places=12)
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = main(["--a", *map(str, a), "--b", str(b[0]), "--n-bootstrap", "100", "--json", str(self.tmp / "d.json")])
        self.assertEqual(rc, 0)
        self.assertIn("a: 2 seed(s), b: 1 seed(s), 40 test images", buf.getvalue())
        self.assertIn(f"a - b {100 * ref['auc']['value']:+5.1f}", buf.getvalue())
        self.assertIn("seed ensembles", buf.getvalue())
        self.assertTrue((self.tmp / "d.json").is_file())

    def test_other_images_and_missing_file_are_named(self):
        a = _write(self.tmp / "a.csv", self.names, self.y, self.pa[0])
        b = _write(self.tmp / "b.csv", self.names[:-1] + ["other.png"], self.y, self.pb)
        with self.assertRaisesRegex(ValueError, r"b\.csv holds other images than the first file of the comparison \(40 images\)"):
            compare_predictions([a], [b])
        err = io.StringIO()
        with redirect_stderr(err):
            rc = main(["--a", str(a), "--b", str(self.tmp / "nowhere")])
        self.assertEqual(rc, 2)
        self.assertIn("no predictions file at", err.getvalue())
        self.assertIn("nowhere", err.getvalue())

    def test_flipped_labels_and_bad_threshold_are_said(self):
        a = _write(self.tmp / "a.csv", self.names, self.y, self.pa[0])
        b = _write(self.tmp / "b.csv", self.names, 1 - self.y, self.pb)
        with self.assertRaisesRegex(ValueError, r"b\.csv scores the same images .* other labels \(first: 'img0\.png', "
                                                r"label 1 there, 0 in the first file\)"):
            compare_predictions([a], [b])
        for bad in ("2", "0", "1", "-0.1", "nan"):
            err = io.StringIO()
            with redirect_stderr(err):
                rc = main(["--a", str(a), "--b", str(a), "--threshold", bad])
            self.assertEqual(rc, 2, bad)
            self.assertIn("must lie strictly between 0 and 1", err.getvalue())
            self.assertEqual(len(err.getvalue().strip().splitlines()), 1)


class TestOutputPaths(unittest.TestCase):
    """An output path that cannot be written is one line before any work (exit 2; before: a traceback after it)."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_outpaths_"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        (self.tmp / "afile").write_text("x")

    def run_cli(self, argv: list[str]) -> tuple[int, str]:
        err = io.StringIO()
        with redirect_stderr(err), redirect_stdout(io.StringIO()):
            try:
                rc = metrics_main(argv)
            except SystemExit as e:  # argparse
                rc = e.code
        return rc, err.getvalue().strip()

    def test_compare_json(self):
        a = _write(self.tmp / "a.csv", [f"i{k}.png" for k in range(6)], np.array([0, 1] * 3), np.linspace(0.1, 0.9, 6))
        for target, words in ((self.tmp / "afile" / "out.json", "is a file, not a folder"),
                              (self.tmp, "is a folder: give a file path")):
            rc, err = self.run_cli(["compare", "--a", str(a), "--b", str(a), "--n-bootstrap", "10", "--json", str(target)])
            self.assertEqual(rc, 2)
            self.assertEqual(len(err.splitlines()), 1, err)
            self.assertIn(f"--json {str(target)!r}", err)
            self.assertIn(words, err)

    def test_leep_output_and_split(self):
        rc, err = self.run_cli(["leep", "--ckpt", "x.pt", "--num-source-classes", "2", "--target-dir", str(self.tmp),
                                "--split", "tset"])
        self.assertEqual(rc, 2)
        self.assertIn("invalid choice: 'tset'", err)
        target = self.tmp / "afile" / "x.json"
        rc, err = self.run_cli(["leep", "--ckpt", "x.pt", "--num-source-classes", "2", "--target-dir", str(self.tmp),
                                "--output", str(target)])
        self.assertEqual(rc, 2)
        self.assertEqual(err, f"error: --output {str(target)!r}: {str(self.tmp / 'afile')!r} is a file, not a folder.")


class TestCompareInputs(unittest.TestCase):
    """Bad predictions files are one line naming the file and the line (exit 2, no traceback); a one-class test set
    says why its AUC is undefined."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_compare_in_"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.names = [f"img{i}.png" for i in range(10)]
        self.y = np.array([0, 1] * 5)
        self.good = _write(self.tmp / "good.csv", self.names, self.y, np.where(self.y == 1, 0.7, 0.3))

    def _text(self, name: str, lines: list[str], header: str = "name,label,pred,prob_non-COVID,prob_COVID") -> Path:
        path = self.tmp / name
        path.write_text(header + "\n" + "".join(f"{ln}\n" for ln in lines))
        return path

    def _rows(self, change: dict[int, str] | None = None) -> list[str]:
        rows = [f"{n},{y},{y},{0.7 if y == 0 else 0.3},{0.3 if y == 0 else 0.7}" for n, y in zip(self.names, self.y)]
        for i, row in (change or {}).items():
            rows[i] = row
        return rows

    def _cli_error(self, *args: str) -> str:
        err, out = io.StringIO(), io.StringIO()
        with redirect_stderr(err), redirect_stdout(out):
            rc = main(["--n-bootstrap", "50", *args])
        self.assertEqual(rc, 2, out.getvalue())
        lines = err.getvalue().strip().splitlines()
        self.assertEqual(len(lines), 1, err.getvalue())
        self.assertNotIn("Traceback", err.getvalue())
        return lines[0]

    def test_non_integer_label(self):
        bad = self._text("label.csv", self._rows({3: "img3.png,0.5,1,0.3,0.7"}))
        line = self._cli_error("--a", str(self.good), "--b", str(bad))
        self.assertRegex(line, rf"^error: predictions file {bad} line 5: label '0.5' is not an integer class index")

    def test_label_not_binary(self):
        bad = self._text("label2.csv", self._rows({2: "img2.png,2,1,0.3,0.7"}))
        line = self._cli_error("--a", str(bad), "--b", str(self.good))
        self.assertRegex(line, rf"^error: {bad} line 4 \(img2.png\): label 2 is not 0 or 1")

    def test_single_probability_column(self):
        bad = self._text("single.csv", [f"{n},{y},{y},{0.3 + 0.4 * y}" for n, y in zip(self.names, self.y)], "name,label,pred,prob_COVID")
        line = self._cli_error("--a", str(self.good), "--b", str(bad))
        self.assertRegex(line, rf"^error: {bad} has 1 probability column \(prob_COVID\): .*two")

    def test_arms_with_other_class_columns(self):
        other = self._text("other.csv", self._rows(), "name,label,pred,prob_neg,prob_pos")
        line = self._cli_error("--a", str(self.good), "--b", str(other))
        self.assertRegex(line, rf"^error: {other} has the class columns prob_neg, prob_pos but {self.good} has prob_non-COVID, prob_COVID")

    def test_non_finite_rows(self):
        for value in ("nan", "inf", "-inf", "1.5"):
            with self.subTest(value):
                bad = self._text(f"bad_{value}.csv", self._rows({6: f"img6.png,0,0,{value},0.5"}))
                line = self._cli_error("--a", str(self.good), "--b", str(bad))
                self.assertRegex(line, rf"^error: {bad} line 8 \(img6.png\): prob_non-COVID={value} is not a probability in \[0, 1\]")

    def test_one_class_test_set_says_why(self):
        y = np.ones(10, dtype=int)
        rng = np.random.default_rng(0)
        a = _write(self.tmp / "pos_a.csv", self.names, y, rng.uniform(0.2, 1, 10))
        b = _write(self.tmp / "pos_b.csv", self.names, y, rng.uniform(0.2, 1, 10))
        out = compare_predictions([a], [b], n_bootstrap=50)
        self.assertIn("auc", out["undefined"])
        buf = io.StringIO()
        with redirect_stdout(buf):
            rc = main(["--a", str(a), "--b", str(b), "--n-bootstrap", "50"])
        self.assertEqual(rc, 0)
        text = buf.getvalue()
        self.assertRegex(text, r"auc +undefined: all 10 test images are of class 1 \(COVID\); AUC needs images of both classes")
        self.assertRegex(text, r"specificity +undefined: .*no image of class 0 \(non-COVID\)")
        self.assertNotIn("nan", text)

    def test_old_module_command_still_runs_with_a_deprecation_line(self):
        """``python -m mstl_monai.metrics.compare`` (the old command) prints what ``python -m mstl_monai.metrics
        compare`` prints, after one line on stderr naming the new command."""
        a = _write(self.tmp / "a.csv", self.names, self.y, np.linspace(0.1, 0.9, len(self.y)))
        b = _write(self.tmp / "b.csv", self.names, self.y, np.full(len(self.y), 0.5))
        args = ["--a", str(a), "--b", str(b), "--n-bootstrap", "50"]
        buf = io.StringIO()
        with redirect_stdout(buf):
            self.assertEqual(metrics_main(["compare", *args]), 0)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([sys.executable, "-m", "mstl_monai.metrics.compare", *args], capture_output=True,
                              text=True, env=env, cwd=REPO_ROOT, timeout=300)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout, buf.getvalue())
        self.assertIn("deprecated: use python -m mstl_monai.metrics compare", proc.stderr)
        self.assertIn("auc", buf.getvalue())


if __name__ == "__main__":
    unittest.main()
