"""Datalist builders on the real data (official counts) and on small hand-made layouts (errors)."""

from __future__ import annotations

import shutil
import tempfile
import unittest
from collections import Counter
from pathlib import Path

import numpy as np
from parameterized import parameterized

from mstl_monai.data import (
    PHANTOM_LABELS,
    covid_ct_datalist,
    covid_ct_datalists,
    covidx_datalist,
    cxr_datalist,
    image_folder_datalist,
    make_lung_phantom,
    split_datalist,
    unlabelled_datalist,
    write_phantom_dataset,
)
from tests.utils import require_real_data


class TestRealDatalists(unittest.TestCase):
    def setUp(self):
        self.root = require_real_data(self)

    @parameterized.expand([("train", 191, 234), ("val", 60, 58), ("test", 98, 105)])
    def test_covid_ct_official_split(self, split, n_covid, n_non):
        dl = covid_ct_datalist(self.root / "covid-ct", split)
        self.assertEqual(Counter(d["label"] for d in dl), {1: n_covid, 0: n_non})
        for d in dl:
            self.assertTrue(Path(d["image"]).is_file())
            self.assertEqual(d["split"], split)

    def test_splits_disjoint_and_complete(self):
        dls = covid_ct_datalists(self.root / "covid-ct")
        files = [d["image"] for s in dls.values() for d in s]
        self.assertEqual(len(files), 746)
        self.assertEqual(len(set(files)), 746)

    def test_cxr_manifest(self):
        tr = cxr_datalist(self.root / "cxr", "train", val_fraction=0.1)
        va = cxr_datalist(self.root / "cxr", "val", val_fraction=0.1)
        te = cxr_datalist(self.root / "cxr", "test")
        self.assertEqual(len(tr) + len(va), 818)
        self.assertEqual(len(te), 155)
        self.assertFalse({d["image"] for d in tr} & {d["image"] for d in va})
        self.assertEqual(Counter(d["label"] for d in tr + va + te), {2: 510, 1: 242, 0: 221})

    def test_luna16(self):
        self.assertEqual(len(unlabelled_datalist(self.root / "luna16")), 200)


class TestDatalistErrors(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.ct = write_phantom_dataset(self.tmp / "ct", n_per_class=4, size=32)

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_extension_matching(self):
        # the split files name .jpg files, the folder stores .png (as our copy of COVID19-CT does)
        f = self.ct / "Data-split" / "COVID" / "trainCT_COVID.txt"
        f.write_text(f.read_text().replace(".png", ".jpg"))
        dl = covid_ct_datalist(self.ct, "train")
        self.assertTrue(all(d["image"].endswith(".png") for d in dl))
        self.assertTrue(any(d["name"].endswith(".jpg") for d in dl))

    def test_missing_image_named(self):
        f = self.ct / "Data-split" / "NonCOVID" / "valCT_NonCOVID.txt"
        f.write_text(f.read_text() + "ghost%3.jpg\n")
        with self.assertRaises(FileNotFoundError) as ctx:
            covid_ct_datalist(self.ct, "val")
        self.assertIn("ghost%3.jpg", str(ctx.exception))

    def test_wrong_root_and_split(self):
        with self.assertRaises(FileNotFoundError) as ctx:
            covid_ct_datalist(self.tmp / "nope", "train")
        self.assertIn("nope", str(ctx.exception))
        with self.assertRaises(ValueError):
            covid_ct_datalist(self.ct, "validation")

    def test_cxr_bad_label_and_missing_file(self):
        root = self.tmp / "cxr"
        (root / "normal").mkdir(parents=True)
        img = next((self.ct / "CT_COVID").glob("*.png"))
        shutil.copy(img, root / "normal" / "a.png")
        (root / "manifest.csv").write_text("file,label,split\nnormal/a.png,normal,train\nnormal/a.png,tuberculosis,train\n")
        with self.assertRaises(ValueError) as ctx:
            cxr_datalist(root, "train", val_fraction=0)
        self.assertIn("tuberculosis", str(ctx.exception))
        (root / "manifest.csv").write_text("file,label,split\nnormal/a.png,normal,train\nnormal/b.png,normal,train\n")
        with self.assertRaises(FileNotFoundError) as ctx:
            cxr_datalist(root, "train", val_fraction=0)
        self.assertIn("normal/b.png", str(ctx.exception))

    def test_covidx_txt(self):
        imgs = self.tmp / "covidx"
        imgs.mkdir()
        src = sorted((self.ct / "CT_COVID").glob("*.png"))[:2]
        for p in src:
            shutil.copy(p, imgs / p.name)
        txt = self.tmp / "train.txt"
        txt.write_text(f"1 {src[0].name} COVID-19 cohen\n2 {src[1].name} pneumonia rsna\n")
        dl = covidx_datalist(txt, imgs)
        self.assertEqual([d["label"] for d in dl], [2, 1])
        txt.write_text(f"1 {src[0].name} flu cohen\n")
        with self.assertRaises(ValueError):
            covidx_datalist(txt, imgs)

    def test_image_folder(self):
        root = self.tmp / "natural"
        for cls in ("cat", "dog"):
            (root / cls).mkdir(parents=True)
            for p in sorted((self.ct / "CT_COVID").glob("*.png"))[:2]:
                shutil.copy(p, root / cls / p.name)
        (root / "dog" / "notes.txt").write_text("x")
        dl, classes = image_folder_datalist(root)
        self.assertEqual(classes, ["cat", "dog"])
        self.assertEqual(Counter(d["label"] for d in dl), {0: 2, 1: 2})
        tr, va = split_datalist(dl, "train", 0.5), split_datalist(dl, "val", 0.5)
        self.assertEqual(len(tr), 2)
        self.assertEqual(len(va), 2)

    def test_empty_unlabelled_folder(self):
        (self.tmp / "empty").mkdir()
        with self.assertRaises(ValueError):
            unlabelled_datalist(self.tmp / "empty")


class TestPhantom(unittest.TestCase):
    def test_labels_and_ggo(self):
        img, lab = make_lung_phantom(128, seed=0, ggo=False)
        img2, _ = make_lung_phantom(128, seed=0, ggo=True)
        self.assertEqual(img.shape, (128, 128))
        self.assertEqual(set(np.unique(lab)), set(PHANTOM_LABELS.values()))
        lung = lab == PHANTOM_LABELS["lung"]
        self.assertLess(img[lung].mean(), img[lab == PHANTOM_LABELS["body"]].mean())
        self.assertGreater(img2[lung].mean(), img[lung].mean())  # ground glass brightens the lungs
        # the right lung (image left) and the left lung (image right) are both present
        self.assertTrue(lung[:, :64].any() and lung[:, 64:].any())
        np.testing.assert_array_equal(img, make_lung_phantom(128, seed=0, ggo=False)[0])


if __name__ == "__main__":
    unittest.main()
