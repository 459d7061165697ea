# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The Generator's numba kernels (functional_jit) against the numpy / scipy / ATen versions they replace."""

from __future__ import annotations

import logging
import sys
import unittest
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage as ndi

from mstl_monai.data import make_lung_phantom
from mstl_monai.transforms import LungLobeGenerator
from mstl_monai.transforms.lobe import functional, functional_jit
from mstl_monai.transforms.lobe.functional import crop_resize, jit_kernels, jit_switch, reduce_slice, resample_slice
from mstl_monai.transforms.lobe.functional_locate import Parts, find_parts
from tests.utils import require_real_data

_KERNELS_ON = jit_switch(True)


def setUpModule():  # these tests are about the kernels: on even where MSTL_MONAI_NO_JIT=1 is set outside
    _KERNELS_ON.__enter__()


def tearDownModule():
    _KERNELS_ON.__exit__(None, None, None)


#: settings of find_parts that take other branches (fixed threshold, 3-class Otsu, no / wider opening, slit filter)
SETTINGS = [{}, {"open_walls": 1}, {"open_walls": 5}, {"method": "multiotsu"}, {"threshold": 0.3}, {"open_size": 3}]


def assert_same_parts(case: unittest.TestCase, a: Parts | None, b: Parts | None, what: str) -> None:
    """Every field identical, values and dtype (``None`` for both when there is no body)."""
    case.assertEqual(a is None, b is None, what)
    if a is None:
        return
    for field, x, y in zip(Parts._fields, a, b):
        x, y = np.asarray(x), np.asarray(y)
        case.assertTrue(np.array_equal(x, y), f"{what}: {field} differs")
        case.assertEqual(x.dtype, y.dtype, f"{what}: {field} dtype")


def real_slices(case: unittest.TestCase, n_each: int) -> list[tuple[str, np.ndarray]]:
    """``n_each`` slices of each kind of real image, resampled as the locator sees them (128 px)."""
    root = require_real_data(case)
    groups = [
        sorted((root / "luna16" / "images").glob("*.png")),
        sorted((root / "covid-ct" / "CT_COVID").glob("*.png")),
        sorted((root / "covid-ct" / "CT_NonCOVID").glob("*.png")),
        sorted((root / "lung-masks" / "ct").glob("*.png")),
        sorted((root / "cxr").rglob("*.png")),  # not CT: other branches (no lung, bodies in pieces)
    ]
    out = []
    for files in groups:
        step = max(1, len(files) // n_each)
        for f in files[::step][:n_each]:
            with Image.open(f) as im:
                img = torch.as_tensor(np.asarray(im.convert("L"), dtype=np.float32) / 255.0)[None]
            out.append((f.name, resample_slice(img, None, 128)[0]))
    return out


class TestFindPartsJit(unittest.TestCase):
    def test_identical_on_real_slices(self):
        slices = real_slices(self, 24)
        self.assertEqual(len(slices), 120)
        for name, gray in slices:
            for kw in SETTINGS:
                assert_same_parts(self, find_parts(gray, jit=True, **kw), find_parts(gray, jit=False, **kw), f"{name} {kw}")

    def test_identical_on_phantoms_and_odd_images(self):
        rng = np.random.default_rng(0)
        odd = rng.random((64, 64)).astype(np.float32)
        odd[3, 4], odd[5, 5], odd[6, 6], odd[7, 7], odd[8, 8] = np.inf, -np.inf, np.nan, 3e9, -2.0
        images = [
            make_lung_phantom(size=128, seed=1)[0].astype(np.float32),
            make_lung_phantom(size=96, seed=2, ggo=True)[0].astype(np.float32),
            np.zeros((128, 128), np.float32),  # constant: no body
            np.ones((40, 40), np.float32),
            rng.random((37, 91)).astype(np.float32),  # noise: many parts, not square
            np.full((5, 5), np.nan, np.float32),
            odd,  # NaN, infinities, values out of the int32 range (the cast's INT32_MIN, clipped to 0)
            np.linspace(0.49999999999, 0.5, 64 * 64).reshape(64, 64),  # float64: levels as numpy computes them
        ]
        for i, gray in enumerate(images):
            for kw in SETTINGS:
                with np.errstate(invalid="ignore"):  # numpy's cast of NaN / inf
                    want, got = find_parts(gray, jit=False, **kw), find_parts(gray, jit=True, **kw)
                assert_same_parts(self, got, want, f"image {i} {kw}")

    def test_labels_numbered_like_scipy(self):
        """The run-based labelling numbers parts as scipy.ndimage.label (8-connected) does, inside a window too."""
        rng = np.random.default_rng(1)
        for i in range(200):
            h, w = (int(v) for v in rng.integers(1, 60, 2))
            mask = (rng.random((h, w)) < rng.uniform(0.2, 0.8)).astype(np.uint8)
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            y1, x1 = int(rng.integers(y0 + 1, h + 1)), int(rng.integers(x0 + 1, w + 1))
            out = np.zeros((h, w), np.int32)
            n = functional_jit._label8(mask, y0, y1, x0, x1, out)
            want = np.zeros((h, w), np.int32)
            want[y0:y1, x0:x1], n_want = ndi.label(mask[y0:y1, x0:x1], np.ones((3, 3), bool))
            self.assertEqual(n, n_want, f"case {i}")
            np.testing.assert_array_equal(out, want, err_msg=f"case {i}")

    def test_same_boxes_through_the_generator(self):
        """The Generator's boxes with the kernels and with their numpy/ATen versions (numba made unimportable)."""
        root = require_real_data(self)
        files = sorted((root / "luna16" / "images").glob("*.png"))[::10][:20]
        imgs = [torch.as_tensor(np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255.0)[None] for f in files]
        gen = LungLobeGenerator(spatial_size=64)
        fast = [gen(im) for im in imgs]
        with without_numba(self) as logs:
            self.assertIsNone(jit_kernels())
            slow = [gen(im) for im in imgs]
            with self.assertRaisesRegex(RuntimeError, "needs numba"):
                find_parts(np.zeros((8, 8), np.float32), jit=True)
        self.assertTrue(any("numba is not available" in m for m in logs.output), logs.output)
        for f, a, b in zip(files, fast, slow):
            self.assertTrue(torch.equal(a.lung_box, b.lung_box), f.name)
            self.assertTrue(torch.equal(a.boxes, b.boxes), f.name)
            self.assertEqual(a.fallback, b.fallback)
            torch.testing.assert_close(a.regions, b.regions, rtol=0, atol=4e-7)


@contextmanager
def without_numba(case: unittest.TestCase) -> Iterator[Any]:
    """Inside the block ``import numba`` (and of the kernels' module) fails and the loaded kernels are forgotten;
    yields the captured warning log records of :mod:`.functional`."""
    package = sys.modules["mstl_monai.transforms.lobe"]
    jit_kernels.cache_clear()
    blocked = {"numba": None, functional_jit.__name__: None}  # None in sys.modules: ImportError on import
    try:
        with mock.patch.dict(sys.modules, blocked), mock.patch.object(package, "functional_jit", create=True):
            delattr(package, "functional_jit")  # `from . import functional_jit` imports again (and fails)
            with case.assertLogs(functional.logger, logging.WARNING) as logs:
                yield logs
    finally:
        jit_kernels.cache_clear()


class TestNoJitSwitch(unittest.TestCase):
    def test_environment_variable_turns_the_kernels_off(self):
        jit_kernels.cache_clear()
        try:
            with mock.patch.dict("os.environ", {functional.NO_JIT_ENV: "1"}):
                with self.assertLogs(functional.logger, logging.INFO) as logs:
                    self.assertIsNone(jit_kernels())
                self.assertIn("MSTL_MONAI_NO_JIT is set", logs.output[0])
                img = torch.rand(1, 30, 30)
                torch.testing.assert_close(  # ATen's kernel: F.interpolate exactly
                    crop_resize(img, [(2, 3, 20, 17)], (9, 9))[0],
                    F.interpolate(img[None, :, 3:20, 2:22], size=(9, 9), mode="bilinear")[0],
                    rtol=0,
                    atol=0,
                )
        finally:
            jit_kernels.cache_clear()
        self.assertIs(jit_kernels(), functional_jit)
        with jit_switch(False):  # the same switch, for a block
            self.assertIsNone(jit_kernels())
        self.assertIs(jit_kernels(), functional_jit)


class TestCropResizeJit(unittest.TestCase):
    def test_within_rounding_of_interpolate(self):
        """Random images (several channels, strided views), boxes and output sizes, up- and downsampling: the
        kernel's crops are those of F.interpolate within float32 rounding (values in [0, 1): 4e-7 is a few ulp)."""
        rng = np.random.default_rng(0)
        big = torch.rand(3, 300, 300)
        worst = 0.0
        for i in range(150):
            c, h, w = int(rng.integers(1, 4)), int(rng.integers(2, 300)), int(rng.integers(2, 300))
            img = big[:c, :w, :h].transpose(1, 2) if i % 4 == 0 else big[:c, :h, :w]
            boxes = []
            for _ in range(5):
                bw, bh = int(rng.integers(1, w + 1)), int(rng.integers(1, h + 1))
                boxes.append((int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1)), bw, bh))
            size = (224, 224) if i % 2 else tuple(int(v) for v in rng.integers(1, 260, 2))
            out = crop_resize(img, boxes, size)
            for (x, y, bw, bh), region in zip(boxes, out):
                ref = F.interpolate(img[None, :, y : y + bh, x : x + bw], size=size, mode="bilinear")[0]
                worst = max(worst, float((region - ref).abs().max()))
        self.assertLess(worst, 4e-7)
        self.assertGreater(worst, 0.0)  # the kernel ran (ATen's would be exact)

    def test_jit_false_is_interpolate_exactly(self):
        img = torch.rand(2, 50, 70)
        boxes = [(0, 0, 70, 50), (5, 7, 20, 30), (60, 40, 20, 30)]  # the last reaches past the image: cut
        out = crop_resize(img, boxes, (33, 21), jit=False)
        fast = crop_resize(img, boxes, (33, 21))
        for (x, y, w, h), a, b in zip(boxes, out, fast):
            ref = F.interpolate(img[None, :, y : y + h, x : x + w], size=(33, 21), mode="bilinear")[0]
            torch.testing.assert_close(a, ref, rtol=0, atol=0)
            torch.testing.assert_close(b, ref, rtol=0, atol=4e-7)

    def test_other_inputs_take_aten(self):
        """A float64 image takes ATen's kernel (exact); an empty crop gives ATen's error, as before."""
        img = torch.rand(1, 40, 40, dtype=torch.float64)
        ref = F.interpolate(img[None, :, 2:30, 3:20], size=(16, 16), mode="bilinear")[0]
        torch.testing.assert_close(crop_resize(img, [(3, 2, 17, 28)], (16, 16))[0], ref, rtol=0, atol=0)
        with self.assertRaises(RuntimeError):  # an empty crop: ATen's error, as before
            crop_resize(torch.rand(1, 10, 10), [(12, 0, 3, 3)], (4, 4))


class TestReduceJit(unittest.TestCase):
    def test_same_numbers_as_reduce_slice(self):
        rng = np.random.default_rng(0)
        for f in (2, 4, 6, 8):
            x = rng.random((f * 37, f * 23)).astype(np.float32)
            np.testing.assert_array_equal(functional_jit.reduce_even(x, f), reduce_slice(x, f))


if __name__ == "__main__":
    unittest.main()
