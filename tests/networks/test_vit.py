"""ViT backbones: build_network names, the backbone interface, exact torchvision/timm imports, 1-channel and
position-embedding adaptation, stage-to-stage transfer."""

from __future__ import annotations

import math
import tempfile
import unittest
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from parameterized import parameterized

from tests.utils import REPO_ROOT

FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"
TV_FIXTURE = FIXTURES / "torchvision_vit_p16_d192_l2.pt"
TIMM_FIXTURE = FIXTURES / "timm_vit_p16_d192_l2.pt"


def _fixture(path: Path) -> dict:
    if not path.is_file():
        raise unittest.SkipTest(f"fixture {path} not found")
    return torch.load(path, map_location="cpu", weights_only=True)


def _tiny_vit(**kwargs):
    from mstl_monai.networks.nets import VisionTransformer

    cfg = dict(img_size=64, patch_size=16, hidden_size=192, num_layers=2, num_heads=3, num_classes=1000)
    cfg.update(kwargs)
    return VisionTransformer(**cfg).eval()


class _TorchvisionViTReference(nn.Module):
    """torchvision's ``VisionTransformer`` forward (its key names, its ``nn.MultiheadAttention`` encoder blocks),
    written from torch.nn parts, so the torchvision import is checked beyond the fixture's zero-initialised head."""

    def __init__(self, depth=2, dim=192, heads=3, mlp=768, patch=16, num_classes=1000):
        super().__init__()
        self.patch = patch
        self.conv_proj = nn.Conv2d(3, dim, patch, patch)
        self.class_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.encoder = nn.Module()
        self.encoder.pos_embedding = nn.Parameter(torch.zeros(1, 17, dim))
        self.encoder.layers = nn.Module()
        for i in range(depth):
            blk = nn.Module()
            blk.ln_1 = nn.LayerNorm(dim, eps=1e-6)
            blk.self_attention = nn.MultiheadAttention(dim, heads, batch_first=True)
            blk.ln_2 = nn.LayerNorm(dim, eps=1e-6)
            blk.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Dropout(0.0), nn.Linear(mlp, dim), nn.Dropout(0.0))
            setattr(self.encoder.layers, f"encoder_layer_{i}", blk)
        self.encoder.ln = nn.LayerNorm(dim, eps=1e-6)
        self.heads = nn.Module()
        self.heads.head = nn.Linear(dim, num_classes)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.encoder.pos_embedding
        for blk in self.encoder.layers.children():
            y = blk.ln_1(x)
            y, _ = blk.self_attention(y, y, y, need_weights=False)
            x = x + y
            x = x + blk.mlp(blk.ln_2(x))
        return self.heads.head(self.encoder.ln(x)[:, 0])


class TestBuildNetwork(unittest.TestCase):
    @parameterized.expand([["vit_tiny", 192, 3, {}], ["vit_small", 384, 6, {"num_layers": 1}], ["vit_base", 768, 12, {"num_layers": 1}], ["ViT-Tiny", 192, 3, {"num_layers": 1}]])
    def test_names(self, name, width, heads, extra):
        from mstl_monai.networks import build_network
        from mstl_monai.networks.nets import VisionTransformer

        net = build_network(name, n_attn=0, n_input_channels=1, num_classes=2, dropout=0.2, img_size=64, **extra)
        self.assertIsInstance(net, VisionTransformer)
        depth = extra.get("num_layers", 12)
        self.assertEqual((net.hidden_size, net.num_heads, net.num_layers, net.patch_size), (width, heads, depth, (16, 16)))
        self.assertEqual(len(net.blocks), depth)
        self.assertEqual(net.feature_dim, width)
        self.assertEqual(tuple(net.patch_embedding.patch_embeddings.weight.shape), (width, 1, 16, 16))
        self.assertEqual(tuple(net.fc.weight.shape), (2, width))
        self.assertEqual(net.dropout.p, 0.2)

    def test_settings_and_resnet_ignores_them(self):
        from mstl_monai.networks import build_network

        net = build_network("vit_tiny", img_size=32, patch_size=8, num_layers=3, num_heads=4, hidden_size=64)
        self.assertEqual((net.grid_size, net.num_layers, net.num_heads, net.hidden_size), ((4, 4), 3, 4, 64))
        res = build_network("resnet18", img_size=32, patch_size=8, n_input_channels=1, num_classes=2).eval()
        self.assertEqual(tuple(res(torch.zeros(1, 1, 32, 32)).shape), (1, 2))

    def test_n_attn_refused(self):
        from mstl_monai.networks import build_network

        with self.assertRaisesRegex(ValueError, "n_attn"):
            build_network("vit_tiny", n_attn=5)


class TestVisionTransformer(unittest.TestCase):
    def test_backbone_interface_and_monai_defaults(self):
        net = _tiny_vit(n_input_channels=1, num_classes=2, dropout=0.1)
        x = torch.randn(2, 1, 64, 64)
        tokens = net.forward_features(x)
        self.assertEqual(tuple(tokens.shape), (2, 17, 192))
        self.assertEqual(tuple(net.forward_head(tokens, pre_logits=True).shape), (2, 192))
        self.assertEqual(tuple(net(x).shape), (2, 2))
        # no Tanh after the head, timm/torchvision LayerNorm eps, no unused cross-attention norms
        self.assertFalse(any(isinstance(m, nn.Tanh) for m in net.modules()))
        self.assertEqual({m.eps for m in net.modules() if isinstance(m, nn.LayerNorm)}, {1e-6})
        self.assertFalse(any("norm_cross_attn" in k for k in net.state_dict()))
        # every parameter gets a gradient (DDP without find_unused_parameters)
        net.train()
        net(torch.randn(2, 1, 48, 80)).sum().backward()
        self.assertEqual([n for n, p in net.named_parameters() if p.grad is None], [])
        net.reset_classifier(0)
        self.assertEqual(tuple(net.eval()(x).shape), (2, 192))

    def test_input_smaller_than_a_patch(self):
        with self.assertRaisesRegex(ValueError, "smaller than one"):
            _tiny_vit()(torch.zeros(1, 3, 8, 64))


class TestViTImport(unittest.TestCase):
    def test_timm_fixture_exact(self):
        from mstl_monai.networks import load_torchvision_weights, load_vit_weights

        d = _fixture(TIMM_FIXTURE)
        net = _tiny_vit()
        report = load_vit_weights(net, d["state_dict"])
        with torch.no_grad():
            out = net(d["input"])
        torch.testing.assert_close(out, d["output"], rtol=1e-5, atol=1e-5)
        self.assertGreater(float(d["output"].abs().max()), 0.1)  # a non-trivial head
        self.assertEqual(report["adapted"], ["cls_token"])  # the CLS position folded into the CLS token
        self.assertEqual(report["new"], [])
        self.assertEqual(report["dropped"], [])
        self.assertEqual(len(report["loaded"]), len(net.state_dict()) - 1)
        # the ResNet entry point dispatches to the ViT import
        net2 = _tiny_vit()
        load_torchvision_weights(net2, d["state_dict"])
        with torch.no_grad():
            torch.testing.assert_close(net2(d["input"]), out, rtol=0, atol=0)

    def test_torchvision_fixture_exact(self):
        from mstl_monai.networks import load_vit_weights

        d = _fixture(TV_FIXTURE)
        net = _tiny_vit()
        report = load_vit_weights(net, d["state_dict"])
        with torch.no_grad():
            out = net(d["input"])
        torch.testing.assert_close(out, d["output"], rtol=1e-5, atol=1e-5)
        self.assertEqual((report["adapted"], report["new"], report["dropped"]), (["cls_token"], [], []))
        # torchvision zero-initialises its head, so the fixture's output is all zeros: check the features too,
        # against torchvision's encoder written with torch.nn.MultiheadAttention, loaded strictly by key name
        ref = _TorchvisionViTReference().eval()
        sd = {k: v.float() for k, v in d["state_dict"].items()}
        ref.load_state_dict(sd, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(ref(d["input"]), d["output"], rtol=1e-5, atol=1e-5)
        torch.manual_seed(0)
        sd["heads.head.weight"] = torch.randn(1000, 192) * 0.05
        sd["heads.head.bias"] = torch.randn(1000) * 0.05
        ref.load_state_dict(sd, strict=True)
        net = _tiny_vit()
        load_vit_weights(net, sd)
        with torch.no_grad():
            expected, got = ref(d["input"]), net(d["input"])
        self.assertGreater(float(expected.abs().max()), 0.1)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

    def test_rgb_patch_kernel_summed_for_one_channel(self):
        from mstl_monai.networks import load_vit_weights

        d = _fixture(TIMM_FIXTURE)
        rgb = _tiny_vit()
        load_vit_weights(rgb, d["state_dict"])
        grey_net = _tiny_vit(n_input_channels=1)
        report = load_vit_weights(grey_net, d["state_dict"])
        self.assertIn("patch_embedding.patch_embeddings.weight", report["adapted"])
        grey = d["input"][:, :1]
        with torch.no_grad():
            torch.testing.assert_close(grey_net(grey), rgb(grey.expand(-1, 3, -1, -1)), rtol=1e-5, atol=1e-5)

    def test_position_embeddings_resized(self):
        """A 64-px checkpoint into a 128-px network: the grid is resized bicubically (timm's rule), the CLS part
        kept; the result equals the 64-px network resampling on the fly, and a constant grid stays constant."""
        from mstl_monai.networks import load_vit_weights

        d = _fixture(TIMM_FIXTURE)
        big = _tiny_vit(img_size=128)
        report = load_vit_weights(big, d["state_dict"])
        self.assertIn("patch_embedding.position_embeddings", report["adapted"])
        self.assertEqual(tuple(big.patch_embedding.position_embeddings.shape), (1, 64, 192))
        small = _tiny_vit()
        load_vit_weights(small, d["state_dict"])
        x = torch.randn(2, 3, 128, 128)
        with torch.no_grad():
            torch.testing.assert_close(big(x), small(x), rtol=1e-5, atol=1e-5)
        # timm's resample_abs_pos_embed: F.interpolate(bicubic, antialias=True) on the (D, gh, gw) grid
        grid = d["state_dict"]["pos_embed"][:, 1:].float().reshape(1, 4, 4, 192).permute(0, 3, 1, 2)
        want = F.interpolate(grid, size=(8, 8), mode="bicubic", antialias=True, align_corners=False)
        want = want.permute(0, 2, 3, 1).reshape(1, 64, 192)
        torch.testing.assert_close(big.patch_embedding.position_embeddings.data, want)

    def test_resample_keeps_orientation_and_prefix(self):
        from mstl_monai.networks.nets import resample_position_embeddings

        rows = torch.arange(4.0).reshape(4, 1).expand(4, 6)  # varies along the height only
        pos = torch.cat([torch.full((1, 1, 2), 7.0), torch.stack([rows, -rows], -1).reshape(1, 24, 2)], dim=1)
        out = resample_position_embeddings(pos, (8, 3), old_grid=(4, 6), num_prefix_tokens=1)
        self.assertEqual(tuple(out.shape), (1, 25, 2))
        torch.testing.assert_close(out[:, 0], torch.full((1, 2), 7.0))
        g = out[0, 1:, 0].reshape(8, 3)
        torch.testing.assert_close(g, g[:, :1].expand(8, 3))  # still constant along the width
        self.assertTrue(bool((g[1:, 0] >= g[:-1, 0]).all()))  # still increasing along the height
        const = resample_position_embeddings(torch.full((1, 16, 3), 0.5), (7, 5))
        torch.testing.assert_close(const, torch.full((1, 35, 3), 0.5))
        with self.assertRaisesRegex(ValueError, "square"):
            resample_position_embeddings(torch.zeros(1, 15, 3), (4, 4))

    def test_load_pretrained_detects_format_from_file(self):
        from mstl_monai.networks import build_network, load_pretrained

        with tempfile.TemporaryDirectory() as tmp:
            for fixture, fmt in ((TIMM_FIXTURE, "timm"), (TV_FIXTURE, "torchvision")):
                path = Path(tmp) / f"{fmt}.pth"
                torch.save(_fixture(fixture)["state_dict"], path)
                net = build_network("vit_tiny", num_layers=2, n_input_channels=1, num_classes=2, img_size=128)
                with self.assertLogs("mstl_monai.networks.weights", level="INFO") as logs:
                    report = load_pretrained(net, str(path))
                self.assertIn(f"loaded {fmt} ViT checkpoint", "\n".join(logs.output))
                self.assertEqual(sorted(report["new"]), ["fc.bias", "fc.weight"])  # 1000-way head dropped
                self.assertIn("fc.weight", report["dropped"])
                self.assertEqual(
                    sorted(report["adapted"]),
                    ["cls_token", "patch_embedding.patch_embeddings.weight", "patch_embedding.position_embeddings"],
                )

    def test_stage_checkpoint_transfer(self):
        """An SSTL-M-style checkpoint (backbone under encoder_q.backbone.) into the next stage: backbone loaded,
        head new; a depth mismatch raises naming the file."""
        from mstl_monai.networks import load_pretrained

        src = _tiny_vit(n_input_channels=1, num_classes=3)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "sstl.pt"
            sd = {f"encoder_q.backbone.{k}": v for k, v in src.state_dict().items()}
            sd.update({f"encoder_k.backbone.{k}": v * 0 for k, v in src.state_dict().items()})
            sd["queue"] = torch.zeros(8, 4)
            torch.save({"network": sd}, path)
            dst = _tiny_vit(n_input_channels=1, num_classes=2)
            report = load_pretrained(dst, str(path))
            self.assertEqual(sorted(report["new"]), ["fc.bias", "fc.weight"])
            self.assertIn("queue", report["dropped"])
            x = torch.randn(1, 1, 64, 64)
            with torch.no_grad():
                torch.testing.assert_close(dst.forward_features(x), src.forward_features(x))
            deeper = _tiny_vit(n_input_channels=1, num_layers=3)
            with self.assertRaisesRegex(ValueError, "sstl.pt does not fit.*depth 2.*depth 3"):
                load_pretrained(deeper, str(path))
            wider = _tiny_vit(n_input_channels=1, hidden_size=96)
            with self.assertRaisesRegex(ValueError, "sstl.pt does not fit"):
                load_pretrained(wider, str(path))

    def test_unsupported_timm_variant_refused(self):
        from mstl_monai.networks import load_vit_weights

        sd = dict(_fixture(TIMM_FIXTURE)["state_dict"])
        sd["blocks.0.ls1.gamma"] = torch.ones(192)
        with self.assertRaisesRegex(ValueError, "variant"):
            load_vit_weights(_tiny_vit(), sd)
        with self.assertRaisesRegex(ValueError, "no ViT"):
            load_vit_weights(_tiny_vit(), {"conv1.weight": torch.zeros(64, 3, 7, 7)})


if __name__ == "__main__":
    unittest.main()
