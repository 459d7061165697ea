# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import os
import tempfile
import unittest
from pathlib import Path

import torch
from monai.networks import eval_mode
from parameterized import parameterized

from mstl_monai.networks import load_stage_checkpoint, load_torchvision_weights
from mstl_monai.networks.nets import AttentiveResNet, MoCo, RegionHead
from tests.utils import FIXTURES_ROOT

FIXTURE = FIXTURES_ROOT / "torchvision_bottleneck_resnet_1111.pt"
SMALL = {"block": "basic", "layers": [2, 2, 2, 2], "block_inplanes": [8, 16, 16, 32]}


def _fixture(testcase: unittest.TestCase) -> dict:
    if not FIXTURE.is_file():
        if os.environ.get("CI"):
            testcase.fail(f"fixture {FIXTURE} is missing in CI")
        testcase.skipTest(f"fixture {FIXTURE} not found")
    return torch.load(FIXTURE, map_location="cpu", weights_only=True)


class _Unsafe:
    """An arbitrary class: weights_only loading must refuse to unpickle it."""


class TestTorchvisionImport(unittest.TestCase):
    @parameterized.expand([[0], [1]])
    def test_fixture_reproduced(self, n_attn):
        fx = _fixture(self)
        net = AttentiveResNet("bottleneck", [1, 1, 1, 1], n_attn=n_attn, num_classes=1000)
        report = load_torchvision_weights(net, FIXTURE)
        self.assertEqual(sorted(report["loaded"]), sorted(fx["state_dict"]))
        self.assertEqual(report["dropped"], [])
        self.assertEqual(report["adapted"], [])
        self.assertEqual(report["new"], [k for k in net.state_dict() if k.startswith("attn.")])
        self.assertEqual(len(report["new"]) > 0, n_attn > 0)
        self.assertEqual(net.conv1.weight.dtype, torch.float32)
        with eval_mode(net):
            out = net(fx["input"])
        torch.testing.assert_close(out, fx["output"], rtol=1e-5, atol=1e-5)

    def test_one_channel_and_other_head(self):
        fx = _fixture(self)
        ref = AttentiveResNet("bottleneck", [1, 1, 1, 1])
        load_torchvision_weights(ref, fx["state_dict"])
        gray = AttentiveResNet("bottleneck", [1, 1, 1, 1], n_attn=1, n_input_channels=1, num_classes=2)
        report = load_torchvision_weights(gray, fx["state_dict"])
        self.assertEqual(report["adapted"], ["conv1.weight"])
        self.assertEqual(sorted(report["dropped"]), ["fc.bias", "fc.weight"])
        self.assertIn("fc.weight", report["new"])
        x = fx["input"][:, :1]
        with eval_mode(ref, gray):
            # a grey image through the summed kernel == the same grey replicated to RGB through the RGB kernel
            torch.testing.assert_close(
                gray.forward_features(x), ref.forward_features(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-5
            )

    def test_without_batch_counters(self):
        """torchvision's older ImageNet files have no num_batches_tracked: they load and give the same output."""
        fx = _fixture(self)
        sd = {k: v for k, v in fx["state_dict"].items() if not k.endswith("num_batches_tracked")}
        net = AttentiveResNet("bottleneck", [1, 1, 1, 1])
        report = load_torchvision_weights(net, sd)
        self.assertEqual(len(report["loaded"]), len(sd))
        self.assertTrue(all(k.endswith("num_batches_tracked") for k in report["new"]))
        with eval_mode(net):
            torch.testing.assert_close(net(fx["input"]), fx["output"], rtol=1e-5, atol=1e-5)

    @parameterized.expand([["state_dict"], ["model"], ["network"], ["net"]])
    def test_wrapped_and_prefixed(self, key):
        fx = _fixture(self)
        sd = {f"module.{k}": v for k, v in fx["state_dict"].items()}
        net = AttentiveResNet("bottleneck", [1, 1, 1, 1]).to(torch.float64)
        report = load_torchvision_weights(net, {key: sd, "epoch": 3})
        self.assertEqual(len(report["loaded"]), len(fx["state_dict"]))
        self.assertEqual(net.conv1.weight.dtype, torch.float64)
        torch.testing.assert_close(net.conv1.weight, fx["state_dict"]["conv1.weight"].double())

    def test_wrong_architecture(self):
        fx = _fixture(self)
        with self.assertRaisesRegex(ValueError, r"layers \[2, 2, 2, 2\]"):
            load_torchvision_weights(AttentiveResNet("basic", [2, 2, 2, 2]), fx["state_dict"])
        with self.assertRaisesRegex(ValueError, "bias_downsample=False"):
            biased = AttentiveResNet("bottleneck", [1, 1, 1, 1], bias_downsample=True)
            load_torchvision_weights(biased, fx["state_dict"])
        with self.assertRaisesRegex(ValueError, "another shape"):
            load_torchvision_weights(AttentiveResNet("bottleneck", [1, 1, 1, 1], spatial_dims=3), fx["state_dict"])
        with self.assertWarnsRegex(UserWarning, "conv1_t_stride=2"):
            load_torchvision_weights(AttentiveResNet("bottleneck", [1, 1, 1, 1], conv1_t_stride=1), fx["state_dict"])

    def test_bad_files(self):
        net = AttentiveResNet(**SMALL)
        with tempfile.TemporaryDirectory() as tmp:
            garbage = Path(tmp) / "garbage.pt"
            rng = torch.Generator().manual_seed(0)
            for i in range(50):  # damaged bytes make the unpickler raise many kinds of errors: all become ValueError
                garbage.write_bytes(torch.randint(0, 256, (256,), generator=rng, dtype=torch.uint8).numpy().tobytes())
                with self.assertRaisesRegex(ValueError, "garbage.pt", msg=f"draw {i}"):
                    load_torchvision_weights(net, garbage)
            truncated = Path(tmp) / "truncated.pt"
            torch.save(net.state_dict(), truncated)
            truncated.write_bytes(truncated.read_bytes()[:2000])
            with self.assertRaisesRegex(ValueError, "truncated.pt"):
                load_stage_checkpoint(net, truncated)
            unsafe = Path(tmp) / "unsafe.pt"
            torch.save({"conv1.weight": torch.zeros(1), "payload": _Unsafe()}, unsafe)
            with self.assertRaisesRegex(ValueError, "unsafe.pt.*weights_only"):
                load_torchvision_weights(net, unsafe)
            empty = Path(tmp) / "empty.pt"
            torch.save({"epoch": 3}, empty)
            with self.assertRaisesRegex(ValueError, "empty.pt holds no tensors"):
                load_stage_checkpoint(net, empty)
            with self.assertRaises(FileNotFoundError):
                load_stage_checkpoint(net, Path(tmp) / "missing.pt")


class TestStageTransfer(unittest.TestCase):
    def setUp(self):
        torch.manual_seed(0)
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self.tmp.name)

    def tearDown(self):
        self.tmp.cleanup()

    def _trained(self, **kwargs) -> AttentiveResNet:
        net = AttentiveResNet(**{**SMALL, **kwargs})
        with torch.no_grad():  # move every tensor away from its initialisation, attention blocks included
            for v in net.state_dict().values():
                if v.is_floating_point():
                    v.add_(torch.rand_like(v) * 0.1)
        return net

    def _assert_backbone_equal(self, a: AttentiveResNet, b: AttentiveResNet):
        x = torch.randn(2, a.n_input_channels, 32, 32)
        with eval_mode(a, b):
            torch.testing.assert_close(a.forward_features(x), b.forward_features(x), rtol=0, atol=0)

    def test_ignite_checkpoint_new_head(self):
        prev = self._trained(n_attn=5, num_classes=3)
        opt = torch.optim.SGD(prev.parameters(), lr=0.1, momentum=0.9)
        path = self.dir / "stl_m.pt"
        torch.save({"network": prev.state_dict(), "optimizer": opt.state_dict(), "trainer": {"epoch": 30}}, path)
        nxt = AttentiveResNet(**SMALL, n_attn=5, num_classes=2)
        report = load_stage_checkpoint(nxt, path)
        self.assertEqual(report["new"], ["fc.weight", "fc.bias"])
        self.assertEqual(sorted(report["dropped"]), ["fc.bias", "fc.weight"])
        self.assertEqual(len(report["loaded"]), len(nxt.state_dict()) - 2)
        self._assert_backbone_equal(nxt, prev)

    def test_head_rules(self):
        prev = self._trained(num_classes=3)
        same = AttentiveResNet(**SMALL, num_classes=3)
        report = load_stage_checkpoint(same, prev.state_dict(), exclude_prefixes=())
        self.assertIn("fc.weight", report["loaded"])
        torch.testing.assert_close(same.fc.weight, prev.fc.weight)
        other = AttentiveResNet(**SMALL, num_classes=2)
        report = load_stage_checkpoint(other, prev.state_dict(), exclude_prefixes=())
        self.assertIn("fc.weight", report["new"])
        self.assertIn("fc.weight", report["dropped"])

    def test_moco_checkpoint(self):
        moco = MoCo(self._trained(n_attn=1), dim=8, K=16)
        head = RegionHead(moco.encoder_q_backbone.feature_dim)
        path = self.dir / "sstl.pt"
        # the SSTL trainer may save several objects without a wrapper key: nested dicts are flattened
        torch.save({"moco": moco.state_dict(), "region_head": head.state_dict(), "optimizer": {"state": {}}}, path)
        nxt = AttentiveResNet(**SMALL, n_attn=1, num_classes=2)
        report = load_stage_checkpoint(nxt, path)
        self.assertEqual(report["new"], ["fc.weight", "fc.bias"])
        self.assertIn("moco.queue", report["dropped"])
        self.assertIn("moco.encoder_q.head.0.weight", report["dropped"])
        self.assertIn("region_head.classifier.0.weight", report["dropped"])
        self.assertTrue(any(k.startswith("moco.encoder_k.") for k in report["dropped"]))
        self._assert_backbone_equal(nxt, moco.encoder_q_backbone)
        # and a plain MoCo state dict (prefix encoder_q.backbone.), query encoder preferred over the key encoder
        with torch.no_grad():
            for p in moco.encoder_k.parameters():
                p.zero_()
        again = AttentiveResNet(**SMALL, n_attn=1, num_classes=2)
        load_stage_checkpoint(again, moco.state_dict())
        self._assert_backbone_equal(again, moco.encoder_q_backbone)

    def test_baseline_into_attentive(self):
        prev = self._trained(n_attn=0, num_classes=3)
        nxt = AttentiveResNet(**SMALL, n_attn=5, num_classes=2)
        report = load_stage_checkpoint(nxt, prev.state_dict())
        self.assertTrue(all(k.startswith(("attn.", "fc.")) for k in report["new"]))
        self._assert_backbone_equal(nxt, prev)  # new blocks are the identity

    @parameterized.expand(
        [
            ["attn_5_into_0", {"n_attn": 5}, {"n_attn": 0}, "non-local blocks"],
            ["attn_1_into_5", {"n_attn": 1}, {"n_attn": 5}, "another n_attn"],
            ["depth", {"layers": [2, 2, 2, 2]}, {"layers": [1, 2, 2, 2]}, r"layers \[2, 2, 2, 2\].*\[1, 2, 2, 2\]"],
            [
                "block",
                {"block": "bottleneck", "block_inplanes": [4, 4, 8, 8]},
                {"block_inplanes": [16, 16, 32, 32]},
                "bottleneck blocks",
            ],
            ["width", {}, {"block_inplanes": [8, 16, 16, 64]}, "another shape"],
        ]
    )
    def test_does_not_fit(self, _, prev_kwargs, next_kwargs, message):
        path = self.dir / "previous_stage.pt"
        torch.save(AttentiveResNet(**{**SMALL, **prev_kwargs}).state_dict(), path)
        net = AttentiveResNet(**{**SMALL, **next_kwargs})
        before = {k: v.clone() for k, v in net.state_dict().items()}
        with self.assertRaisesRegex(ValueError, "previous_stage.pt") as ctx:
            load_stage_checkpoint(net, path)
        self.assertRegex(str(ctx.exception), message)
        for k, v in net.state_dict().items():  # nothing was loaded
            torch.testing.assert_close(v, before[k])

    def test_rgb_stem_fold_is_exact(self):
        """STL-N (RGB) -> CT (1 channel): the summed stem gives the RGB network's output on a grey image x 3."""
        prev = self._trained(n_attn=1, num_classes=3)
        rgb = AttentiveResNet(**SMALL, n_attn=1, n_input_channels=3, num_classes=7)
        with torch.no_grad():
            for p, q in zip(rgb.parameters(), prev.parameters()):
                if p.shape == q.shape:
                    p.copy_(q + 0.01 * torch.randn_like(q))
            rgb.conv1.weight.normal_()
        rgb.double()
        grey = AttentiveResNet(**SMALL, n_attn=1, n_input_channels=1, num_classes=2).double()
        report = load_stage_checkpoint(grey, rgb.state_dict())
        self.assertEqual(report["adapted"], ["conv1.weight"])
        x = torch.randn(2, 1, 32, 32, dtype=torch.float64)
        with eval_mode(rgb, grey):
            torch.testing.assert_close(
                grey.forward_features(x), rgb.forward_features(x.expand(-1, 3, -1, -1)), rtol=1e-9, atol=1e-9
            )

    def test_no_backbone(self):
        path = self.dir / "head_only.pt"
        torch.save(RegionHead(32).state_dict(), path)
        with self.assertRaisesRegex(ValueError, "head_only.pt holds no ResNet backbone"):
            load_stage_checkpoint(AttentiveResNet(**SMALL), path)


if __name__ == "__main__":
    unittest.main()
