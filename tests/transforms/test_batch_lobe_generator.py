"""The batched lobe Generator against the per-image one on real CT slices: the same lung boxes, lobe boxes and
fallbacks, crops equal within interpolation tolerance, the same jitter distribution; its connected components
against scikit-image."""

from __future__ import annotations

import unittest

import numpy as np
import torch
from monai.transforms import Compose, Resized, SpatialPadd
from parameterized import parameterized
from scipy.stats import ks_2samp
from skimage.measure import label as sk_label

from mstl_monai.transforms import (
    BatchLungLobeGenerator,
    BatchLungLobeGeneratord,
    LoadCTSliced,
    LungLobeGenerator,
    RandLungLobeGenerator,
    connected_components,
)
from tests.utils import DATA_ROOT, require_real_data

#: the batched Generator runs on each (the per-image reference on CPU): the GPU check of issue 13 where one is present
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

#: per source folder, how many slices (every k-th file, so that the sizes and aspect ratios vary)
SOURCES = (("covid-ct/CT_COVID", 10), ("covid-ct/CT_NonCOVID", 10), ("luna16/images", 6))
#: and slices at the lung bases with stomach and bowel gas, an abdominal slice without lung, a DICOM slice on the table
EXTRA = (
    "luna16/images/1.3.6.1.4.1.14519.5.2.1.6279.6001.179730018513720561213088132029_slice051.png",
    "luna16/images/1.3.6.1.4.1.14519.5.2.1.6279.6001.100953483028192176989979435275_slice026.png",
    "luna16/images/1.3.6.1.4.1.14519.5.2.1.6279.6001.113697708991260454310623082679_slice022.png",
    "ct-series/lung-pet-ct-dx-A0002/1-28.dcm",
    "ct-series/lung-pet-ct-dx-A0002/1-19.dcm",
)


def real_batch(resize: int) -> torch.Tensor:
    """Real slices as the SSTL-M loader gives them: longest side resized to ``resize``, padded square."""
    tf = Compose(
        [
            LoadCTSliced(keys="image"),
            Resized(keys="image", spatial_size=resize, size_mode="longest", mode="area"),
            SpatialPadd(keys="image", spatial_size=[resize, resize]),
        ]
    )
    files = []
    for folder, n in SOURCES:
        found = sorted((DATA_ROOT / folder).glob("*.png"))
        files += found[:: max(1, len(found) // n)][:n]
    files += [DATA_ROOT / name for name in EXTRA]
    return torch.stack([tf({"image": str(f)})["image"].as_tensor() for f in files])


class TestBatchLungLobeGenerator(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.batches = {}

    def batch(self, resize: int) -> torch.Tensor:
        require_real_data(self)
        if resize not in self.batches:
            self.batches[resize] = real_batch(resize)
        return self.batches[resize]

    @parameterized.expand([[146, 64], [256, 224], [40, 32]])
    def test_same_boxes_as_per_image(self, resize, size):
        """No jitter: lung boxes, lobe boxes and fallbacks identical to LungLobeGenerator image by image."""
        imgs = self.batch(resize).clone()
        imgs[3] = 0.5  # a constant slice: no lung, the fallback box
        ref = LungLobeGenerator(spatial_size=size)
        refs = [ref(im) for im in imgs]
        for device in DEVICES:
            out = BatchLungLobeGenerator(spatial_size=size)(imgs.to(device))
            self.assertEqual(out.regions.device.type, device)
            self.assertEqual(out.regions.shape, (len(imgs), 5, 1, size, size))
            for i, r in enumerate(refs):
                where = f"image {i} on {device}"
                self.assertEqual(out.lung_box[i].tolist(), r.lung_box.tolist(), f"lung box of {where}")
                self.assertEqual(out.boxes[i].tolist(), r.boxes.tolist(), f"lobe boxes of {where}")
                self.assertEqual(bool(out.fallback[i]), r.fallback, f"fallback of {where}")
                torch.testing.assert_close(out.regions[i].cpu(), r.regions, rtol=0, atol=2e-5, msg=lambda m, w=where: f"{w}: {m}")
            self.assertTrue(bool(out.fallback[3]))
            self.assertEqual(int(out.fallback.sum()), sum(r.fallback for r in refs))
            self.assertEqual(out.labels.tolist(), [[0, 1, 2, 3, 4]] * len(imgs))

    @parameterized.expand(
        [
            ["trim", {"trim": 0.05}],
            ["thin_slits", {"open_size": 3}],
            ["multiotsu", {"method": "multiotsu"}],
            ["fixed_threshold", {"threshold": 0.4}],
            ["walls_as_they_are", {"open_walls": 1, "min_component_ratio": 0.0}],
            ["larger_locate_size", {"locate_size": 160, "min_box_fraction": 0.2}],
        ]
    )
    def test_same_boxes_with_options(self, _, kwargs):
        """The locator's options: lung boxes and fallbacks identical to the per-image locator."""
        imgs = self.batch(146).clone()
        imgs[3] = 0.5
        refs = [LungLobeGenerator(spatial_size=8, **kwargs).locate(im) for im in imgs]
        for device in DEVICES:
            boxes, fallback = BatchLungLobeGenerator(spatial_size=8, **kwargs).locate(imgs.to(device))
            for i, (box, fell, _) in enumerate(refs):
                self.assertEqual(boxes[i].tolist(), list(box), f"lung box of image {i} on {device} with {kwargs}")
                self.assertEqual(bool(fallback[i]), fell, f"fallback of image {i} on {device} with {kwargs}")

    def test_same_boxes_with_the_same_jitter(self):
        """The per-image transform's own draws fed to the batched one: identical jittered boxes."""
        imgs = self.batch(146)
        per_image = RandLungLobeGenerator(spatial_size=64, jitter=0.1).set_random_state(7)
        refs, lung_off, off = [], [], []
        for im in imgs:
            refs.append(per_image(im))
            lung_off.append(per_image._lung_offsets)
            off.append(per_image._offsets)
        out = BatchLungLobeGenerator(spatial_size=64, jitter=0.1)(
            imgs, lung_offsets=np.stack(lung_off), offsets=np.stack(off)
        )
        for i, r in enumerate(refs):
            self.assertEqual(out.lung_box[i].tolist(), r.lung_box.tolist(), f"jittered lung box of image {i}")
            self.assertEqual(out.boxes[i].tolist(), r.boxes.tolist(), f"jittered lobe boxes of image {i}")
            torch.testing.assert_close(out.regions[i], r.regions, rtol=0, atol=2e-5)

    def test_jitter_distribution(self):
        """One slice 400 times: the offsets stay in [-jitter, jitter], are uniform, and the box statistics match
        the per-image transform's."""
        img = self.batch(146)[0]
        n, j = 400, 0.1
        gen = BatchLungLobeGenerator(spatial_size=32, jitter=j).set_random_state(0)
        out = gen(img[None].expand(n, -1, -1, -1))
        for o in (gen._lung_offsets, gen._offsets):
            self.assertTrue(np.all(np.abs(o) <= j))
            self.assertLess(abs(o.mean()), 0.01)
            self.assertAlmostEqual(o.std(), j / np.sqrt(3), delta=0.005)  # uniform on [-j, j]
        self.assertEqual(len({tuple(b.reshape(-1).tolist()) for b in out.boxes}), n, "independent draws per image")
        per_image = RandLungLobeGenerator(spatial_size=32, jitter=j).set_random_state(1)
        ref = torch.stack([per_image(img).boxes for _ in range(n)]).double()
        ours = out.boxes.double()
        # same means (within 4 standard errors) and the same distribution of every box coordinate (two-sample KS)
        se = torch.sqrt(ref.var(0) / n + ours.var(0) / n)
        self.assertTrue(bool(((ours.mean(0) - ref.mean(0)).abs() <= 4 * se + 1e-9).all()))
        p = [ks_2samp(ours[:, k, c].numpy(), ref[:, k, c].numpy()).pvalue for k in range(5) for c in range(4)]
        self.assertGreater(min(p), 1e-4, f"KS p-values of the 20 box coordinates: {np.round(p, 4).tolist()}")
        # and a deliberately wrong jitter (0.2) is told apart
        wide = BatchLungLobeGenerator(spatial_size=32, jitter=0.2).set_random_state(0)
        wrong = wide(img[None].expand(n, -1, -1, -1)).boxes.double()
        p = [ks_2samp(wrong[:, k, 2].numpy(), ref[:, k, 2].numpy()).pvalue for k in range(5)]
        self.assertLess(min(p), 1e-4)
        # prob: about half of the images keep their deterministic boxes
        det = LungLobeGenerator(spatial_size=32)(img).boxes
        half = BatchLungLobeGenerator(spatial_size=32, jitter=j, prob=0.5).set_random_state(0)
        kept = (half(img[None].expand(n, -1, -1, -1)).boxes == det).all(-1).all(-1).float().mean()
        self.assertAlmostEqual(float(kept), 0.5, delta=0.1)

    def test_dictionary_and_seed(self):
        imgs = self.batch(146)[:4]
        t = BatchLungLobeGeneratord("image", output_key="regions", spatial_size=32, jitter=0.1)
        a = t.set_random_state(3)({"image": imgs})
        b = t.set_random_state(3)({"image": imgs})
        self.assertEqual(a["regions"].shape, (4, 5, 1, 32, 32))
        for k in ("regions_boxes", "regions_labels", "regions_fallback", "regions_lung_box"):
            self.assertIn(k, a)
        torch.testing.assert_close(a["regions_boxes"], b["regions_boxes"], rtol=0, atol=0)
        with self.assertRaises(KeyError):
            t(a)

    def test_bad_input(self):
        with self.assertRaisesRegex(ValueError, "bilinear"):
            BatchLungLobeGenerator(mode="nearest")
        with self.assertRaisesRegex(ValueError, r"\(B, C, H, W\)"):
            BatchLungLobeGenerator()(torch.zeros(1, 64, 64))
        with self.assertRaisesRegex(ValueError, "jitter"):
            BatchLungLobeGenerator(jitter=1.5)


class TestConnectedComponents(unittest.TestCase):
    def assert_same_partition(self, mask: torch.Tensor):
        comp = connected_components(mask)
        self.assertTrue(bool((comp[~mask] == -1).all()))
        for i in range(mask.shape[0]):
            ref = sk_label(mask[i].numpy(), connectivity=2)
            ours = comp[i].numpy()
            fg = mask[i].numpy()
            # the same partition: a one-to-one map between our labels and scikit-image's
            pairs = set(zip(ours[fg].tolist(), ref[fg].tolist()))
            self.assertEqual(len(pairs), len({p[0] for p in pairs}))
            self.assertEqual(len(pairs), len({p[1] for p in pairs}))
            self.assertEqual(len(pairs), int(ref.max()))
            # each label is the flat index of its component's first pixel
            base = i * mask.shape[1] * mask.shape[2]
            for lab in {p[0] for p in pairs}:
                self.assertEqual(lab - base, int(np.flatnonzero((ours == lab).ravel())[0]))

    def test_random_masks(self):
        g = torch.Generator().manual_seed(0)
        for density in (0.3, 0.5, 0.6):
            self.assert_same_partition(torch.rand(3, 40, 57, generator=g) < density)

    def test_spiral_and_empty(self):
        m = torch.zeros(2, 31, 31, dtype=torch.bool)
        for k in range(0, 15, 2):  # concentric square rings joined at one corner: a long winding component
            m[0, k, k : 31 - k] = m[0, 30 - k, k : 31 - k] = m[0, k : 31 - k, k] = m[0, k : 31 - k, 30 - k] = True
            m[0, k + 1, k + 1] = True
        self.assert_same_partition(m)


if __name__ == "__main__":
    unittest.main()
