"""MONAI Label app preparation for a ViT checkpoint (core environment, no MONAI Label needed)."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import torch
import yaml

from mstl_monai.networks import build_network
from mstl_monai.label import network_config_from_state_dict, prepare_app


class TestPrepareViT(unittest.TestCase):
    def test_config_and_app_from_vit_checkpoint(self):
        net = build_network("vit_tiny", n_input_channels=1, num_classes=2, img_size=64, patch_size=16)
        cfg = network_config_from_state_dict(net.state_dict(), "vit.pt")
        want = {"backbone": "vit_tiny", "n_attn": 0, "in_channels": 1, "num_classes": 2, "patch_size": 16, "image_size": 64,
                "num_layers": 12}
        self.assertEqual(cfg, want)
        with tempfile.TemporaryDirectory() as d:
            ckpt = Path(d, "model.pt")
            torch.save({"network": net.state_dict()}, ckpt)
            model_dir = prepare_app(Path(d, "app"), ckpt, image_size=224, resize_size=72)
            inf = yaml.safe_load((model_dir / "configs" / "inference.yaml").read_text())
            # the ViT's own input size (from its position-embedding grid) wins over the 224 default
            self.assertEqual((inf["backbone"], inf["image_size"], inf["patch_size"]), ("vit_tiny", 64, 16))
            saved = torch.load(model_dir / "models" / "model.pt", weights_only=True)
            self.assertTrue(all(torch.equal(saved[k], v) for k, v in net.state_dict().items()))

    def test_vit_depth_from_weights(self):
        """A ViT of another depth is read with its depth, and the bundle's checkpoint reader builds it to fit."""
        from mstl_monai.networks.checkpoint import checkpoint_network

        net = build_network("vit_tiny", num_layers=2, num_classes=2, img_size=32)
        self.assertEqual(network_config_from_state_dict(net.state_dict(), "v.pt")["num_layers"], 2)
        with tempfile.TemporaryDirectory() as d:
            ckpt = Path(d, "v.pt")
            torch.save(net.state_dict(), ckpt)
            again = checkpoint_network(ckpt, "vit_tiny", n_attn=0, image_size=32, num_classes=2, img_size=32)
            again.load_state_dict(torch.load(ckpt, weights_only=True))  # strict: same depth
        wide = {k: v for k, v in net.state_dict().items()}
        wide["patch_embedding.patch_embeddings.weight"] = torch.zeros(100, 1, 16, 16)
        with self.assertRaisesRegex(ValueError, "v.pt: a ViT of width 100"):
            network_config_from_state_dict(wide, "v.pt")


if __name__ == "__main__":
    unittest.main()
