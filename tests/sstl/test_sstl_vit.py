"""SSTL-M with a ViT backbone: the CLS token as representation, lobe crops through the same ViT, MoCo without the
shuffled BN (a ViT has no BatchNorm), and a tiny sstl_m.yaml run with --backbone vit_tiny."""

from __future__ import annotations

import math
import shutil
import tempfile
import unittest
from pathlib import Path

import torch
import torch.nn.functional as F

from tests.sstl.test_sstl_bundle import TINY, _TERM_RE, mini_covid_ct, run_sstl
from tests.utils import DATA_ROOT, require_real_data


def _vit(**kw):
    from mstl_monai.networks import build_network

    return build_network("vit_tiny", img_size=32, num_layers=2, n_input_channels=1, num_classes=3, **kw)


class TestSSTLViTUnits(unittest.TestCase):
    def test_moco_keys_without_shuffle(self):
        """No BatchNorm: the keys are the key encoder's outputs in order, computed without drawing a permutation."""
        from mstl_monai.networks.nets import MoCo

        torch.manual_seed(0)
        moco = MoCo(_vit(), K=16, shuffle_bn_splits=2).train()
        x = torch.randn(4, 1, 32, 32)
        with torch.no_grad():
            expected = F.normalize(moco.encoder_k(x), dim=1)
            state = torch.get_rng_state()
            keys = moco._compute_keys(x)
        self.assertTrue(torch.equal(state, torch.get_rng_state()), "no shuffle permutation is drawn for a ViT")
        torch.testing.assert_close(keys, expected, rtol=0, atol=0)
        self.assertFalse(moco.has_batchnorm)

    def test_sstl_network_cls_feature_and_lobe_crops(self):
        from mstl_monai.networks.nets import SSTLNetwork

        torch.manual_seed(0)
        net = SSTLNetwork(_vit(), method="ours", queue_size=16)
        self.assertEqual(net.region_head is not None, True)
        view = torch.randn(2, 1, 32, 32)
        regions = torch.randn(2, 5, 1, 16, 16)  # crops of one patch: the same ViT, its grid resized to 1x1
        out = net(view, view.clone(), regions)
        self.assertEqual(tuple(out["region_logits"].shape), (2, 5, 5))
        self.assertEqual(tuple(out["cons_logits"].shape), (2, 17))
        bb = net.backbone
        feats = bb.forward_head(bb.forward_features(view), pre_logits=True)
        torch.testing.assert_close(feats, bb.forward_features(view)[:, 0])  # the CLS token
        with self.assertRaisesRegex(ValueError, "smaller than one"):
            net.region_logits(torch.randn(2, 5, 1, 8, 8))


class TestSSTLViTBundle(unittest.TestCase):
    def setUp(self):
        require_real_data(self)
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_sstl_vit_"))

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_ours_with_vit_tiny_hands_over(self):
        if not (DATA_ROOT / "covid-ct").is_dir():
            self.skipTest("no COVID19-CT data")
        mini_covid_ct(self.tmp / "data")
        run_dir = self.tmp / "run"
        ov = dict(TINY, backbone="vit_tiny", n_attn=0, data_root=str(self.tmp / "data"), method="ours")
        ov.update({"run_dir": str(run_dir), "epochs": 1, "network_def::num_layers": 2})
        proc = run_sstl(ov)
        log = proc.stdout + proc.stderr
        values = {}
        for name, value in _TERM_RE.findall(log):
            values.setdefault(name, []).append(float(value))
        self.assertEqual(set(values), {"loss", "loss_cons", "instance_acc", "loss_region", "region_acc", "region_fallback_rate"})
        self.assertTrue(all(math.isfinite(v) for vs in values.values() for v in vs), values)
        self.assertNotIn("reach layer4", log)  # the ResNet-only crop-size warning
        sd = torch.load(run_dir / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.assertIn("patch_embedding.position_embeddings", sd)
        # the backbone goes on to a finetune ViT
        from mstl_monai.networks import build_network, load_pretrained

        ft = build_network("vit_tiny", img_size=32, num_layers=2, n_input_channels=1, num_classes=2)
        report = load_pretrained(ft, str(run_dir / "models" / "model.pt"))
        self.assertEqual(sorted(report["new"]), ["fc.bias", "fc.weight"])


if __name__ == "__main__":
    unittest.main()
