"""python -m mstl_monai.metrics.compare: paired differences read from predictions files, aligned by image."""

from __future__ import annotations

import io
import shutil
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np

from mstl_monai.metrics import paired_bootstrap_difference, seed_paired_difference, write_predictions_csv
from mstl_monai.metrics.compare import compare_predictions, main


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


if __name__ == "__main__":
    unittest.main()
