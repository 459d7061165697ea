# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The lobe and io transforms in MONAI's layout: array transforms in ``array``, their dictionary wrappers in
``dictionary`` (each wrapping its array twin), the functional core in ``functional*`` modules, and no private name
imported from one module into another."""

from __future__ import annotations

import ast
import importlib
import math
import unittest
from pathlib import Path

import numpy as np
import torch
from monai.transforms import MapTransform, Transform

import mstl_monai.transforms as T
from mstl_monai.data import make_lung_phantom
from tests.utils import require_real_data

PACKAGES = [Path(T.__file__).parent / "lobe", Path(T.__file__).parent / "io"]


def private_imports(path: Path) -> list[str]:
    """``module: name`` for every underscore name a module of the package imports from a sibling module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or "mstl_monai" in (node.module or "")):
            found += [f"{path.name}: {a.name}" for a in node.names if a.name.startswith("_") and a.name != "__all__"]
    return found


class TestLayout(unittest.TestCase):
    def test_no_private_cross_imports(self):
        found = [hit for pkg in PACKAGES for f in sorted(pkg.glob("*.py")) for hit in private_imports(f)]
        self.assertEqual(found, [])

    def test_lobe_modules(self):
        files = sorted(p.stem for p in PACKAGES[0].glob("*.py"))
        functional = ["functional", "functional_batched", "functional_jit", "functional_locate", "functional_quantize"]
        self.assertEqual(files, ["__init__", "array", "dictionary", *functional])

    def test_transforms_live_in_array_and_dictionary(self):
        """Every public transform class of the lobe and io packages is defined in its package's array or dictionary
        module: array transforms in ``array``, dictionary transforms in ``dictionary``."""
        for pkg in ("lobe", "io"):
            mod = importlib.import_module(f"mstl_monai.transforms.{pkg}")
            for name in mod.__all__:
                obj = getattr(mod, name)
                if not (isinstance(obj, type) and issubclass(obj, Transform)):
                    continue
                where = "dictionary" if issubclass(obj, MapTransform) else "array"
                self.assertEqual(obj.__module__, f"mstl_monai.transforms.{pkg}.{where}", msg=name)

    def test_series_loader_homes(self):
        from mstl_monai.transforms.io.array import LoadCTSeries
        from mstl_monai.transforms.io.dictionary import LoadCTSeriesd

        self.assertIs(T.LoadCTSeries, LoadCTSeries)
        self.assertIs(T.LoadCTSeriesd, LoadCTSeriesd)
        self.assertIsInstance(LoadCTSeriesd(keys="image").loader, LoadCTSeries)


class TestLocateLung(unittest.TestCase):
    def test_blank(self):
        out = T.LocateLung()(torch.zeros(1, 64, 48))
        self.assertIs(out.found, False)
        self.assertTrue(math.isnan(out.box_fraction))
        self.assertEqual(out.box.tolist(), [0, 0, 48, 64])  # the fallback box: all of the image

    def test_too_small(self):
        out = T.LocateLung()(torch.zeros(1, 1, 1))
        self.assertIs(out.found, False)
        with self.assertRaises(ValueError):
            T.LocateLung()(torch.zeros(8, 8))

    def test_matches_generator_on_real_slices(self):
        root = require_real_data(self)
        files = sorted((root / "luna16" / "images").glob("*.png"))[:6]
        files += sorted((root / "lung-masks" / "ct").glob("*.png"))[:4]
        loc, gen = T.LocateLung(), T.LungLobeGenerator()
        for f in files:
            img = T.LoadCTSlice()(str(f))
            out, ref = loc(img), gen(img)
            self.assertEqual(out.box.tolist(), ref.lung_box.tolist(), msg=f.name)
            self.assertIs(out.found, not ref.fallback)
            h, w = img.shape[-2:]
            if ref.fallback:
                self.assertTrue(math.isnan(out.box_fraction))
            else:
                self.assertAlmostEqual(out.box_fraction, float(ref.lung_box[2] * ref.lung_box[3]) / (h * w))

    def test_dictionary_wraps_array(self):
        img, _ = make_lung_phantom(size=128, seed=2)
        t = torch.as_tensor(np.asarray(img))[None]
        d = T.LocateLungd(keys="image", locate_size=96)({"image": t})
        self.assertIsInstance(T.LocateLungd(keys="image").locator, T.LocateLung)
        out = T.LocateLung(locate_size=96)(t)
        self.assertEqual((d["lung_found"], d["lung_box_fraction"]), (out.found, out.box_fraction))


if __name__ == "__main__":
    unittest.main()
