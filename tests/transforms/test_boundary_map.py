# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""BoundaryMap / BoundaryMapd against the oracle skimage.segmentation.find_boundaries(connectivity=2, mode="thick")."""

from __future__ import annotations

import unittest

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from parameterized import parameterized
from skimage.segmentation import find_boundaries

from mstl_monai.transforms import (
    BoundaryMap,
    BoundaryMapd,
    LoadCTSlice,
    QuantizeLung,
    boundary_map,
    sliding_window_boundary_map,
)
from mstl_monai.transforms.lobe.functional import cpu_single_thread
from tests.utils import require_real_data

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def oracle(labels: np.ndarray) -> np.ndarray:
    """skimage on every 2D image of a (..., H, W) array."""
    flat = labels.reshape(-1, *labels.shape[-2:])
    out = np.stack([find_boundaries(a, connectivity=2, mode="thick") for a in flat])
    return out.reshape(labels.shape)


def blocky(rng: np.random.Generator, shape, n_labels: int, block: int) -> np.ndarray:
    """Random label map made of blocks (regions with straight and diagonal-touching borders), plus noise pixels."""
    *lead, h, w = shape
    small = rng.integers(0, n_labels, size=(*lead, -(-h // block), -(-w // block)))
    big = np.repeat(np.repeat(small, block, -2), block, -1)[..., :h, :w]
    noise = rng.random(big.shape) < 0.01
    big[noise] = rng.integers(0, n_labels, size=int(noise.sum()))
    return big


RANDOM_CASES = []
for i, (shape, n_labels, block, dtype) in enumerate(
    [
        ((1, 37, 53), 2, 1, np.uint8),  # pure noise
        ((3, 64, 48), 3, 4, np.uint8),
        ((2, 2, 40, 40), 5, 3, np.int64),
        ((4, 1, 33, 65), 3, 7, np.int32),
        ((1, 1, 1), 2, 1, np.uint8),  # single pixel: never a boundary
        ((1, 1, 17), 3, 2, np.uint8),  # one row
        ((1, 19, 1), 3, 2, np.int16),  # one column
        ((2, 2, 2), 2, 1, np.uint8),
        ((1, 50, 50), 200, 5, np.float32),
        ((2, 1, 64, 64), 2, 8, np.bool_),
        ((1, 30, 30), 1, 1, np.uint8),  # constant: no boundary at all
    ]
):
    RANDOM_CASES.append([f"{i}_{'x'.join(map(str, shape))}_{np.dtype(dtype).name}", shape, n_labels, block, dtype])


class TestBoundaryMap(unittest.TestCase):
    @parameterized.expand(RANDOM_CASES)
    def test_random_labels_equal_skimage(self, _, shape, n_labels, block, dtype):
        rng = np.random.default_rng(len(shape) * 1000 + n_labels)
        labels = blocky(rng, shape, n_labels, block).astype(dtype)
        expected = oracle(labels)
        # numpy in -> numpy out
        out_np = BoundaryMap()(labels)
        self.assertIsInstance(out_np, np.ndarray)
        self.assertEqual(out_np.dtype, np.bool_)
        np.testing.assert_array_equal(out_np, expected)
        for device in DEVICES:
            t = torch.as_tensor(labels, device=device)
            out = BoundaryMap()(t)
            self.assertEqual(out.device.type, device)
            self.assertEqual(out.shape, t.shape)
            np.testing.assert_array_equal(out.cpu().numpy(), expected)

    def test_many_random_maps(self):
        rng = np.random.default_rng(7)
        for k in range(25):
            h, w = rng.integers(1, 90, size=2)
            labels = blocky(rng, (2, int(h), int(w)), int(rng.integers(2, 6)), int(rng.integers(1, 6))).astype(np.uint8)
            np.testing.assert_array_equal(boundary_map(torch.as_tensor(labels)).numpy(), oracle(labels), err_msg=str(k))
        # tiny chunks exercise the chunk loop
        labels = blocky(rng, (9, 1, 40, 30), 3, 3).astype(np.uint8)
        np.testing.assert_array_equal(
            boundary_map(torch.as_tensor(labels), chunk_bytes=1200).numpy(), oracle(labels)  # one image per chunk
        )

    def test_literal_sliding_window(self):
        rng = np.random.default_rng(3)
        for block in (1, 2, 5):
            labels = blocky(rng, (23, 29), 3, block).astype(np.uint8)
            ref = sliding_window_boundary_map(labels).numpy()
            np.testing.assert_array_equal(ref, find_boundaries(labels, connectivity=2, mode="thick"))
            np.testing.assert_array_equal(boundary_map(torch.as_tensor(labels)).numpy(), ref)

    def test_metatensor_and_dtype(self):
        labels = MetaTensor(torch.randint(0, 3, (1, 20, 20), dtype=torch.uint8), meta={"filename_or_obj": "x"})
        out = BoundaryMap(dtype=torch.float32)(labels)
        self.assertIsInstance(out, MetaTensor)
        self.assertEqual(out.dtype, torch.float32)
        np.testing.assert_array_equal(out.numpy() > 0, oracle(labels.numpy()))

    def test_bad_shape(self):
        with self.assertRaises(ValueError):
            BoundaryMap()(torch.zeros(5, 5))
        with self.assertRaises(ValueError):
            boundary_map(torch.zeros(5))

    def test_dict(self):
        labels = torch.randint(0, 3, (1, 16, 16), dtype=torch.uint8)
        d = BoundaryMapd(keys="seg", output_keys="edges")({"seg": labels})
        np.testing.assert_array_equal(d["edges"].numpy(), oracle(labels.numpy()))
        self.assertIs(d["seg"], labels)
        d2 = BoundaryMapd(keys=["seg"])({"seg": labels})  # in place
        np.testing.assert_array_equal(d2["seg"].numpy(), d["edges"].numpy())
        with self.assertRaises(KeyError):
            BoundaryMapd(keys="seg", output_keys="edges")({"seg": labels, "edges": 1})
        with self.assertRaises(ValueError):
            BoundaryMapd(keys=["a", "b"], output_keys="c")

    def test_real_covid_ct_label_maps(self):
        """The oracle on label maps made from all 746 real COVID19-CT slices (quantised, at most 256 px)."""
        root = require_real_data(self)
        files = sorted((root / "covid-ct").glob("CT_*COVID/*.png"))
        self.assertEqual(len(files), 746)
        load, quant = LoadCTSlice(), QuantizeLung()
        n_boundary = 0
        with cpu_single_thread():  # small ops: OpenMP threads only add barrier waits on a busy 2-core machine
            for f in files:
                n_boundary += self._check_real(f, load, quant)
        self.assertGreater(n_boundary, 0)

    def _check_real(self, f, load, quant) -> int:
        img = load(f).as_tensor()
        h, w = img.shape[-2:]
        s = 256 / max(h, w)
        if s < 1:
            img = F.interpolate(img[None], size=(max(1, round(h * s)), max(1, round(w * s))), mode="area")[0]
        labels = quant(img)
        self.assertEqual(set(torch.unique(labels).tolist()) - {0, 1, 2}, set(), msg=str(f))
        out = BoundaryMap()(labels[None])  # batched (1, 1, H, W)
        expected = find_boundaries(labels[0].numpy(), connectivity=2, mode="thick")
        np.testing.assert_array_equal(out[0, 0].numpy(), expected, err_msg=str(f))
        return int(expected.sum())


if __name__ == "__main__":
    unittest.main()
