"""SSTL-M engine pieces on hand-made tensors: Eq. 6, the three methods, the trainer step, probes, backbone export."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import torch
import torch.nn.functional as F
from monai.losses import ContrastiveLoss
from parameterized import parameterized

from mstl_monai.data import sstl_datalist
from mstl_monai.engines import SSTLTrainer, sstl_scalar_terms
from mstl_monai.handlers import BackboneSaver, ProbeHandler, knn_probe, knn_scores
from mstl_monai.inferers import AutocastInferer
from mstl_monai.losses import SSTLLoss
from mstl_monai.networks import build_network, load_pretrained
from mstl_monai.networks.nets import SSTL_METHODS, SSTLNetwork, simclr_logits
from tests.utils import DATA_ROOT, require_real_data


_THREADS = torch.get_num_threads()


def setUpModule():
    # tiny networks: one thread is faster than two on a shared 2-core machine (no OpenMP contention)
    torch.set_num_threads(1)


def tearDownModule():
    torch.set_num_threads(_THREADS)


def _net(method: str, n_attn: int = 0, queue_size: int = 16) -> SSTLNetwork:
    torch.manual_seed(0)
    bb = build_network("resnet18", n_attn=n_attn, n_input_channels=1, num_classes=2)
    return SSTLNetwork(bb, method=method, queue_size=queue_size)


def _batches(n: int, b: int = 4, size: int = 32, region: int = 32, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "view1": torch.randn(b, 1, size, size, generator=g),
            "view2": torch.randn(b, 1, size, size, generator=g),
            "regions": torch.randn(b, 5, 1, region, region, generator=g),
            "regions_labels": torch.arange(5).repeat(b, 1),
            "regions_fallback": torch.tensor([True] + [False] * (b - 1)),
        }
        for _ in range(n)
    ]


class TestSSTLDatalist(unittest.TestCase):
    def test_train_images_only_without_labels(self):
        require_real_data(self)
        from mstl_monai.data import covid_ct_datalist

        root = DATA_ROOT / "covid-ct"
        items = sstl_datalist(root)
        self.assertEqual(len(items), 425)  # 191 + 234 official training slices
        self.assertTrue(all(set(d) == {"image", "source"} for d in items), "no label may reach the SSL stage")
        held_out = {d["image"] for split in ("val", "test") for d in covid_ct_datalist(root, split)}
        self.assertFalse(held_out & {d["image"] for d in items}, "val/test images must never be SSL training data")
        with_luna = sstl_datalist(root, use_luna16=True)
        self.assertEqual(len(with_luna), 625)
        self.assertEqual(sum(d["source"] == "luna16" for d in with_luna), 200)
        with self.assertRaisesRegex(FileNotFoundError, "nowhere"):
            sstl_datalist(DATA_ROOT / "nowhere")
        with self.assertRaisesRegex(FileNotFoundError, "luna"):
            sstl_datalist(root, use_luna16=True, luna16_dir=DATA_ROOT / "no_luna")


class TestSSTLLoss(unittest.TestCase):
    def test_eq6_on_hand_made_tensors(self):
        """L = a1 * CE(moco logits, 0) + a2 * mean over images of the sum over the 5 crops of CE (Eq. 5, 6)."""
        torch.manual_seed(1)
        logits = torch.randn(3, 1 + 7)
        labels = torch.zeros(3, dtype=torch.long)
        region_logits = torch.randn(3, 5, 5)
        region_labels = torch.tensor([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0]])
        a1, a2 = 0.8, 0.3
        # by hand: log-softmax of the positive column, crop by crop
        l_cons = -torch.stack([logits[i].log_softmax(0)[0] for i in range(3)]).mean()
        per_image = torch.stack(
            [-sum(region_logits[i, r].log_softmax(0)[region_labels[i, r]] for r in range(5)) for i in range(3)]
        )
        expected = a1 * l_cons + a2 * per_image.mean()
        loss = SSTLLoss(alpha1=a1, alpha2=a2)
        terms = loss.terms(logits, labels, region_logits, region_labels)
        torch.testing.assert_close(terms["loss_cons"], l_cons)
        torch.testing.assert_close(terms["loss_region"], per_image.mean())
        torch.testing.assert_close(terms["loss"], expected)
        torch.testing.assert_close(loss(logits, labels, region_logits, region_labels), expected)
        # the literal sum over the images of the batch (query + its negatives)
        summed = SSTLLoss(alpha1=a1, alpha2=a2, image_reduction="sum")(logits, labels, region_logits, region_labels)
        torch.testing.assert_close(summed, a1 * l_cons + a2 * per_image.sum())
        # flat (B * 5, 5) logits and (B * 5,) labels give the same
        flat = loss(logits, labels, region_logits.reshape(15, 5), region_labels.reshape(15))
        torch.testing.assert_close(flat, expected)
        # baselines: no region term
        torch.testing.assert_close(loss(logits, labels), a1 * l_cons)

    def test_bad_arguments(self):
        with self.assertRaises(ValueError):
            SSTLLoss(alpha1=-1.0)
        with self.assertRaises(ValueError):
            SSTLLoss(image_reduction="none")
        with self.assertRaises(ValueError):
            SSTLLoss()(torch.randn(4, 3), None, torch.randn(4, 5, 5), torch.zeros(3, 5, dtype=torch.long))


class TestSSTLNetwork(unittest.TestCase):
    def test_simclr_logits_equal_ntxent(self):
        torch.manual_seed(2)
        z1, z2 = torch.randn(6, 16), torch.randn(6, 16)
        logits, labels = simclr_logits(z1, z2, 0.1)
        torch.testing.assert_close(F.cross_entropy(logits, labels), ContrastiveLoss(temperature=0.1)(z1, z2))
        # the SSTL network's SimCLR loss is SimCLR's own
        net = _net("simclr").eval()
        x1, x2 = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
        out = net(x1, x2)
        ce = F.cross_entropy(out["cons_logits"], out["cons_labels"])
        torch.testing.assert_close(ce, net.simclr(x1, x2), rtol=1e-4, atol=1e-5)

    @parameterized.expand([[m] for m in SSTL_METHODS])
    def test_forward_shapes(self, method):
        net = _net(method, n_attn=1)
        b = _batches(1)[0]
        out = net(b["view1"], b["view2"], b["regions"])
        n = 4 if method != "simclr" else 8
        self.assertEqual(out["cons_logits"].shape[0], n)
        self.assertEqual(out["cons_labels"].shape, (n,))
        if method == "ours":
            self.assertEqual(tuple(out["region_logits"].shape), (4, 5, 5))
            self.assertIsNotNone(net.region_head)
        else:
            self.assertNotIn("region_logits", out)
            self.assertIsNone(net.region_head)
        self.assertFalse(hasattr(net.backbone.fc, "weight"), "the classifier is removed from the SSL backbone")

    def test_regions_one_backbone_call(self):
        """The B x 5 crops go through the backbone as one batch."""
        net = _net("ours")
        calls = []
        net.backbone.conv1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
        b = _batches(1, b=3)[0]
        net.region_logits(b["regions"])
        self.assertEqual(calls, [15])

    def test_missing_regions_and_bad_method(self):
        net = _net("ours")
        b = _batches(1)[0]
        with self.assertRaises(ValueError):
            net(b["view1"], b["view2"], None)
        with self.assertRaises(ValueError):
            _net("byol")

    def test_queue_checks(self):
        net = _net("moco", queue_size=16)
        with self.assertRaises(ValueError):
            net.check_queue_size(10)
        with self.assertRaises(ValueError):
            net.check_queue_size(100, global_batch_size=32)
        net.check_queue_size(100, global_batch_size=16)
        _net("simclr").check_queue_size(1)  # no queue: nothing to check

    def test_load_backbone_syncs_key_encoder(self):
        src = build_network("resnet18", n_attn=0, n_input_channels=1, num_classes=3)
        with torch.no_grad():
            for p in src.parameters():
                p.add_(0.5)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "stl_m.pt"
            torch.save(src.state_dict(), path)
            net = _net("ours")
            report = net.load_backbone(str(path))
        self.assertIn("fc.weight", report["dropped"])
        torch.testing.assert_close(net.backbone.conv1.weight, src.conv1.weight)
        torch.testing.assert_close(net.moco.encoder_k.backbone.conv1.weight, src.conv1.weight)
        torch.testing.assert_close(net.moco.encoder_k.head[0].weight, net.moco.encoder_q.head[0].weight)


class TestSSTLTrainer(unittest.TestCase):
    @parameterized.expand([[m] for m in SSTL_METHODS])
    def test_steps_log_finite_terms(self, method):
        net = _net(method, n_attn=1)
        before = net.backbone.conv1.weight.detach().clone()
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
        trainer = SSTLTrainer("cpu", 2, _batches(3), net, opt, inferer=AutocastInferer(enabled=True))
        trainer.run()
        terms = sstl_scalar_terms(trainer.state.output)
        expected = {"loss", "loss_cons", "instance_acc"}
        if method == "ours":
            expected |= {"loss_region", "region_acc", "region_fallback_rate"}
            self.assertAlmostEqual(terms["region_fallback_rate"], 0.25)
        self.assertEqual(set(terms), expected)
        for k, v in terms.items():
            self.assertTrue(torch.isfinite(torch.tensor(v)), f"{k}={v}")
        for k in trainer.scalar_terms:
            self.assertIn(f"epoch_{k}", trainer.state.metrics)
        self.assertFalse(torch.equal(before, net.backbone.conv1.weight), "the backbone must be trained")
        if method != "simclr":
            self.assertEqual(int(net.moco.queue_ptr[0]), (2 * 3 * 4) % 16)

    def test_missing_batch_key(self):
        net = _net("ours")
        data = [{k: v for k, v in b.items() if k != "regions"} for b in _batches(1)]
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
        with self.assertRaisesRegex(KeyError, "regions"):
            SSTLTrainer("cpu", 1, data, net, opt).run()

    def test_empty_loader(self):
        net = _net("moco")
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
        with self.assertRaisesRegex(ValueError, "no full batch"):
            SSTLTrainer("cpu", 1, [], net, opt)


class TestProbes(unittest.TestCase):
    def test_knn_on_hand_made_features(self):
        train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
        y = torch.tensor([0, 0, 1, 1])
        val = torch.tensor([[1.0, 0.05], [0.05, 1.0], [0.6, 0.4]])
        vy = torch.tensor([0, 1, 0])
        scores = knn_scores(train, y, val, k=2, num_classes=2)
        self.assertEqual(scores.argmax(1).tolist(), [0, 1, 0])
        torch.testing.assert_close(scores.sum(1), torch.ones(3))
        res = knn_probe(train, y, val, vy, k=2)
        self.assertEqual(res["accuracy"], 1.0)
        self.assertEqual(res["auc"], 1.0)
        # k = 1 with a mislabelled nearest neighbour flips the answer
        res = knn_probe(train, torch.tensor([1, 0, 1, 1]), val[:1], vy[:1], k=1, num_classes=2)
        self.assertEqual(res["accuracy"], 0.0)

    def test_probe_handler_before_after(self):
        net = _net("ours")
        calls = []

        def probe(backbone, head):
            calls.append(head is not None)
            return {"knn": {"accuracy": 0.5 + 0.1 * len(calls), "auc": 0.6}}

        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "probe.json"
            opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01)
            handler = ProbeHandler(probe, net, out, interval=1)
            trainer = SSTLTrainer("cpu", 2, _batches(2), net, opt, train_handlers=[handler])
            trainer.run()
            data = json.loads(out.read_text())
        self.assertEqual(calls, [True, True, True])  # before, after epoch 1, after (epoch 2)
        self.assertAlmostEqual(data["before"]["knn"]["accuracy"], 0.6)
        self.assertAlmostEqual(data["after"]["knn"]["accuracy"], 0.8)
        self.assertEqual(list(data["during"]), ["1"])
        self.assertAlmostEqual(data["delta"]["probe_knn_accuracy"], 0.2)
        self.assertAlmostEqual(trainer.state.probe["after"]["knn"]["accuracy"], 0.8)
        self.assertEqual(list(trainer.state.probe["during"]), [1])


class TestBackboneSaver(unittest.TestCase):
    def test_model_pt_loads_into_finetune_network(self):
        net = _net("ours", n_attn=5)
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "models" / "model.pt"
            BackboneSaver(net, path).save()
            sd = torch.load(path, map_location="cpu", weights_only=True)
            self.assertIn("conv1.weight", sd)
            self.assertTrue(any(k.startswith("attn.") for k in sd))
            self.assertFalse(any(k.startswith(("encoder", "moco", "head", "region", "fc")) for k in sd), sorted(sd)[:5])
            ft = build_network("resnet18", n_attn=5, n_input_channels=1, num_classes=2)
            report = load_pretrained(ft, str(path))
            self.assertEqual(set(report["new"]), {"fc.weight", "fc.bias"})
            torch.testing.assert_close(ft.layer4[1].conv2.weight, net.backbone.layer4[1].conv2.weight)
            self.assertEqual(list(Path(d, "models").iterdir()), [path])  # no temporary file left


if __name__ == "__main__":
    unittest.main()
