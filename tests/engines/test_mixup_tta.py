"""mixup as a prepare_batch, flip test-time augmentation, label-fraction subsets (issue 15), on hand-made tensors."""

from __future__ import annotations

import unittest

import torch

from mstl_monai.data import label_fraction_subset
from mstl_monai.engines import BatchMixUp, MixUpPrepareBatch, mixup_label_postprocessing
from mstl_monai.inferers import FlipTTAInferer


class TestMixUp(unittest.TestCase):
    def test_mixes_images_and_labels_with_the_same_weights(self):
        torch.manual_seed(0)
        x = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 1, 2, 2).contiguous()
        labels = torch.tensor([0, 1, 1, 0, 1])
        prep = MixUpPrepareBatch(num_classes=2, alpha=0.4)
        xm, ym = prep({"image": x, "label": labels}, torch.device("cpu"))
        weight, perm, _ = prep.mixer._params
        self.assertEqual(ym.shape, (5, 2))
        for i in range(5):
            w, j = float(weight[i]), int(perm[i])
            self.assertAlmostEqual(float(xm[i, 0, 0, 0]), w * i + (1 - w) * j, places=5)
            onehot = torch.nn.functional.one_hot(labels, 2).float()
            self.assertTrue(torch.allclose(ym[i], w * onehot[i] + (1 - w) * onehot[j], atol=1e-6))
        self.assertTrue(torch.allclose(ym.sum(1), torch.ones(5)))  # still a distribution per image

    def test_any_batch_size_and_seeded_by_torch(self):
        mix = BatchMixUp(alpha=0.2)
        for n in (32, 9, 1):  # a loader's last batch is smaller
            self.assertEqual(mix(torch.rand(n, 1, 4, 4)).shape, (n, 1, 4, 4))
        x = torch.rand(8, 1, 4, 4)
        torch.manual_seed(3)
        a = mix(x)
        torch.manual_seed(3)
        self.assertTrue(torch.equal(a, mix(x)))  # the epoch reseed (set_determinism) reproduces the mixes

    def test_off_is_the_default_prepare_batch(self):
        x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 0, 1])
        xo, yo = MixUpPrepareBatch(num_classes=2, alpha=0.0)({"image": x, "label": y}, None)
        self.assertTrue(torch.equal(xo, x))
        self.assertTrue(torch.equal(yo, y))

    def test_soft_targets_train_with_cross_entropy(self):
        logits = torch.tensor([[2.0, 0.0]])
        soft = torch.tensor([[0.7, 0.3]])
        want = -(0.7 * torch.log_softmax(logits, 1)[0, 0] + 0.3 * torch.log_softmax(logits, 1)[0, 1])
        self.assertAlmostEqual(float(torch.nn.CrossEntropyLoss()(logits, soft)), float(want), places=6)

    def test_bad_settings(self):
        with self.assertRaisesRegex(ValueError, "mixup_alpha"):
            MixUpPrepareBatch(num_classes=2, alpha=-1)
        with self.assertRaisesRegex(ValueError, "prob"):
            MixUpPrepareBatch(num_classes=2, alpha=0.2, prob=2)

    def test_metric_postprocessing_takes_the_dominant_class(self):
        post = mixup_label_postprocessing(0.2, 2)[0]
        out = post({"pred_label": torch.tensor([0.2, 0.8]), "label": torch.tensor([0.65, 0.35])})
        self.assertEqual(out["pred_label"].tolist(), [0.0, 1.0])
        self.assertEqual(out["label"].tolist(), [1.0, 0.0])


class TestFlipTTA(unittest.TestCase):
    def test_averages_the_probabilities_of_the_image_and_its_mirror(self):
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
        x = torch.rand(3, 1, 8, 8)
        out = FlipTTAInferer(enabled=True)(x, net)
        want = (torch.softmax(net(x), 1) + torch.softmax(net(torch.flip(x, dims=(3,))), 1)) / 2
        self.assertTrue(torch.allclose(torch.softmax(out, 1), want, atol=1e-6))
        self.assertFalse(torch.allclose(torch.softmax(net(x), 1), want, atol=1e-4))  # the mirror changed something
        self.assertTrue(torch.equal(FlipTTAInferer(enabled=False)(x, net), net(x)))

    def test_mirror_symmetric_network_is_unchanged(self):
        net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
        x = torch.rand(2, 1, 6, 6)
        self.assertTrue(torch.allclose(torch.softmax(FlipTTAInferer()(x, net), 1), torch.softmax(net(x), 1), atol=1e-6))


class TestLabelFraction(unittest.TestCase):
    def setUp(self):
        self.items = [{"image": f"{i}.png", "label": int(i % 3 == 0)} for i in range(60)]  # 20 positives, 40 negatives

    def test_stratified_and_nested(self):
        kept = {}
        for f in (0.1, 0.25, 0.5, 1.0):
            sub = label_fraction_subset(self.items, f, seed=1)
            kept[f] = {d["image"] for d in sub}
            self.assertEqual(sum(d["label"] for d in sub), max(1, round(20 * f)))
            self.assertEqual(len(sub) - sum(d["label"] for d in sub), max(1, round(40 * f)))
        self.assertTrue(kept[0.1] <= kept[0.25] <= kept[0.5] <= kept[1.0])
        self.assertNotEqual(kept[0.25], {d["image"] for d in label_fraction_subset(self.items, 0.25, seed=2)})

    def test_bad_fraction_and_missing_label(self):
        for f in (0, 1.5, -0.1):
            with self.assertRaisesRegex(ValueError, "label fraction"):
                label_fraction_subset(self.items, f)
        with self.assertRaisesRegex(KeyError, "'label'"):
            label_fraction_subset([{"image": "a.png"}], 0.5)


if __name__ == "__main__":
    unittest.main()
