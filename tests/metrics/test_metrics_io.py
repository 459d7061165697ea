# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of the atomic metrics JSON / predictions CSV writers."""

from __future__ import annotations

import json
import csv
import os
import stat
import tempfile
import unittest
from pathlib import Path

import numpy as np
import torch

from mstl_monai.metrics import (
    bootstrap_classification_metrics,
    read_predictions_csv,
    write_metrics_json,
    write_predictions_csv,
)
from mstl_monai.utils.io import atomic_write, check_output_path


class TestMetricsJson(unittest.TestCase):
    def test_roundtrip_with_numpy_torch_and_nan(self):
        metrics = {
            "acc": np.float32(0.5),
            "n": np.int64(203),
            "auc": torch.tensor(0.75),
            "curve": np.array([0.0, 0.5, 1.0]),
            "undefined": float("nan"),
            "nested": {"ok": True, "path": Path("/tmp/x"), "pair": (1, 2)},
        }
        with tempfile.TemporaryDirectory() as d:
            path = write_metrics_json(os.path.join(d, "a", "metrics.json"), metrics)
            data = json.loads(path.read_text())
            self.assertEqual(
                data,
                {
                    "acc": 0.5,
                    "n": 203,
                    "auc": 0.75,
                    "curve": [0.0, 0.5, 1.0],
                    "undefined": None,
                    "nested": {"ok": True, "path": "/tmp/x", "pair": [1, 2]},
                },
            )
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o644)

    def test_bootstrap_output_is_writable(self):
        out = bootstrap_classification_metrics([0, 1, 0, 1, 1], [0.2, 0.8, 0.4, 0.3, 0.9], n_bootstrap=50)
        with tempfile.TemporaryDirectory() as d:
            data = json.loads(write_metrics_json(os.path.join(d, "m.json"), out).read_text())
        self.assertEqual(data["n"], 5)
        self.assertEqual(set(data["auc"]), {"value", "ci_low", "ci_high"})

    def test_unsupported_type(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaisesRegex(TypeError, "object"):
                write_metrics_json(os.path.join(d, "m.json"), {"x": object()})
            self.assertEqual(os.listdir(d), [])

    def test_failed_write_keeps_old_file(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "m.json"
            path.write_text("old")
            with self.assertRaises(RuntimeError):
                with atomic_write(path) as f:
                    f.write("half")
                    raise RuntimeError("interrupted")
            self.assertEqual(path.read_text(), "old")
            self.assertEqual(os.listdir(d), ["m.json"])


class TestCheckOutputPath(unittest.TestCase):
    def test_refuses_what_cannot_be_written(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            (d / "afile").write_text("x")
            self.assertEqual(check_output_path(d / "new" / "deeper" / "x.json", "--json"), d / "new" / "deeper" / "x.json")
            self.assertEqual(check_output_path(d / "new", "output_dir", folder=True), d / "new")
            self.assertEqual(check_output_path(d, "output_dir", folder=True), d)
            cases = [
                ((d / "afile" / "x.json", "--json"), f"--json {str(d / 'afile' / 'x.json')!r}: {str(d / 'afile')!r} is a file, not a folder."),
                ((d / "afile" / "a" / "b", "output_dir", True), "is a file, not a folder."),
                ((d, "--json"), f"--json {str(d)!r} is a folder: give a file path."),
                ((d / "afile", "output_dir", True), f"output_dir {str(d / 'afile')!r} is a file, not a folder: give a folder path."),
            ]
            for args, words in cases:
                with self.assertRaises(ValueError) as cm:
                    check_output_path(*args)
                self.assertIn(words, str(cm.exception))
            self.assertEqual((d / "afile").read_text(), "x")


class TestPredictionsCsv(unittest.TestCase):
    def test_roundtrip_two_class(self):
        probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.123456789012345, 0.876543210987655]])
        with tempfile.TemporaryDirectory() as d:
            path = write_predictions_csv(
                os.path.join(d, "pred.csv"), ["a.png", "b,c.png", "d.png"], [0, 1, 1], probs, ["noncovid", "covid"]
            )
            names, y, pr, classes = read_predictions_csv(path)
            header = path.read_text().splitlines()[0]
        # an inference run's columns (pred decided at the threshold), then the label
        self.assertEqual(
            header, "file,pred,pred_class,prob_noncovid,prob_covid,threshold,lung_found,lung_box_fraction,label"
        )
        self.assertEqual(names, ["a.png", "b,c.png", "d.png"])
        np.testing.assert_array_equal(y, [0, 1, 1])
        np.testing.assert_array_equal(pr, probs)  # repr() keeps every digit
        self.assertEqual(classes, ["noncovid", "covid"])

    def test_prob_pos_vector(self):
        with tempfile.TemporaryDirectory() as d:
            path = write_predictions_csv(
                os.path.join(d, "p.csv"), ["x", "y"], torch.tensor([1, 0]), torch.tensor([0.7, 0.4])
            )
            _, y, pr, classes = read_predictions_csv(path)
            rows = path.read_text().splitlines()
        np.testing.assert_allclose(pr, [[0.3, 0.7], [0.6, 0.4]], atol=1e-7)
        self.assertEqual(classes, ["0", "1"])
        self.assertTrue(rows[1].startswith("x,1,1,") and rows[1].endswith(",0.5,,,1"))
        self.assertTrue(rows[2].startswith("y,0,0,") and rows[2].endswith(",0.5,,,0"))

    def test_decided_at_the_threshold(self):
        with tempfile.TemporaryDirectory() as d:
            path = write_predictions_csv(
                os.path.join(d, "p.csv"), ["x", "y"], [1, 0], [[0.6, 0.4], [0.8, 0.2]], ["a", "b"], threshold=0.3
            )
            rows = list(csv.DictReader(open(path)))
        self.assertEqual([(r["pred"], r["pred_class"], r["threshold"]) for r in rows], [("1", "b", "0.3"), ("0", "a", "0.3")])

    def test_reads_earlier_files(self):
        """The published results (results/) keep the columns of earlier releases: they are read as they are."""
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "old.csv"
            path.write_text("name,label,pred,prob_non-COVID,prob_COVID\na.png,1,0,0.6872103214263916,0.3127896785736084\n")
            names, y, pr, classes = read_predictions_csv(path)
        self.assertEqual((names, y.tolist(), classes), (["a.png"], [1], ["non-COVID", "COVID"]))
        np.testing.assert_array_equal(pr, [[0.6872103214263916, 0.3127896785736084]])
        published = sorted(Path(__file__).resolve().parents[2].glob("results/*/*/predictions.csv"))
        self.assertTrue(published)
        for f in published[:3]:
            self.assertGreater(len(read_predictions_csv(f)[0]), 0)

    def test_inference_file_has_no_label(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "inf.csv"
            path.write_text("file,pred,pred_class,prob_a,prob_b,threshold,lung_found,lung_box_fraction\nx,0,a,0.9,0.1,0.5,True,0.5\n")
            with self.assertRaisesRegex(ValueError, "inf.csv has header"):
                read_predictions_csv(path)

    def test_length_mismatch(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaisesRegex(ValueError, "same length"):
                write_predictions_csv(os.path.join(d, "p.csv"), ["x"], [0, 1], [0.2, 0.3])
            with self.assertRaisesRegex(ValueError, "class_names"):
                write_predictions_csv(os.path.join(d, "p.csv"), ["x"], [0], [[0.2, 0.8]], ["a", "b", "c"])

    def test_read_bad_file(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "bad.csv"
            path.write_text("file,target\na,1\n")
            with self.assertRaisesRegex(ValueError, "bad.csv"):
                read_predictions_csv(path)



class TestMovedHelpers(unittest.TestCase):
    def test_old_home_warns_and_still_writes(self):
        from mstl_monai.metrics.io import atomic_write as old_atomic_write

        with tempfile.TemporaryDirectory() as d:
            with self.assertWarnsRegex(FutureWarning, "mstl_monai.utils.io"):
                with old_atomic_write(os.path.join(d, "x.txt")) as f:
                    f.write("ok")
            self.assertEqual(Path(d, "x.txt").read_text(), "ok")

    def test_to_numpy_reads_half_precision_tensors_as_float64(self):
        from mstl_monai.utils.type_conversion import to_numpy

        out = to_numpy(torch.tensor([0.25, 0.5], dtype=torch.bfloat16), "probs")
        self.assertEqual(out.dtype, np.float64)
        np.testing.assert_allclose(out, [0.25, 0.5])
        self.assertEqual(to_numpy(torch.tensor([True, False]), "y").dtype, np.int64)


if __name__ == "__main__":
    unittest.main()
