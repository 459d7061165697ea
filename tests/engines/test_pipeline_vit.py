"""The ViT recipes of the pipeline configs: TL-Med's ViT-B/16 chain (paper scale) and the CPU-scale ViT block."""

from __future__ import annotations

import unittest
from pathlib import Path

from mstl_monai.pipeline import load_pipeline_config, plan_chain
from tests.utils import REPO_ROOT


class TestViTRecipes(unittest.TestCase):
    def test_tl_med_chain(self):
        cfg = load_pipeline_config(REPO_ROOT / "configs" / "paper_scale.yaml")
        chain = next(c for c in cfg["chains"] if c["name"] == "vit_b16_tlmed_stln_stlm")
        self.assertEqual(chain["pretrained"], "vit_b_16-c867db91.pth")
        steps = plan_chain(cfg, chain, REPO_ROOT)
        self.assertEqual([s["stage"] for s in steps], ["stl_m", "finetune", "evaluate"])
        for step in steps[:2]:
            ov = step["overrides"]
            self.assertEqual((ov["backbone"], ov["patch_size"], ov["image_size"]), ("vit_base", 16, 224))
            self.assertEqual((ov["learning_rate"], ov["momentum"], ov["weight_decay"], ov["epochs"]), (0.01, 0.9, 5e-5, 30))
        self.assertTrue(steps[0]["overrides"]["pretrained"].endswith("vit_b_16-c867db91.pth"))
        self.assertTrue(steps[1]["overrides"]["pretrained"].endswith("stl_m/models/model.pt"))

    def test_cpu_scale_vit_chains_are_a_valid_recipe(self):
        """The ViT chains of cpu_scale.yaml are valid chains of ViT-Tiny at 128 px with TL-Med's optimiser."""
        cfg = load_pipeline_config(REPO_ROOT / "configs" / "cpu_scale.yaml")
        vit = [c for c in cfg["chains"] if c["name"].startswith("vit_tiny")]
        self.assertEqual(
            [c["name"] for c in vit],
            ["vit_tiny_base_scratch", "vit_tiny_base_stln", "vit_tiny_base_stln_stlm", "vit_tiny_base_stln_stlm_sstl_ours"],
        )
        cfg["bundle_dir"] = str(REPO_ROOT / "bundle")
        steps = plan_chain(cfg, vit[-1], REPO_ROOT)
        self.assertEqual([s["stage"] for s in steps], ["stl_n", "stl_m", "sstl_m", "finetune", "evaluate"])
        self.assertEqual(steps[0]["overrides"]["image_size"], 64)  # STL-N at Tiny ImageNet's 64 px
        self.assertEqual(steps[1]["overrides"]["image_size"], 128)
        self.assertTrue(all(s["overrides"]["backbone"] == "vit_tiny" for s in steps))
        self.assertTrue(steps[2]["dir"].endswith("vit_tiny_attn0/stl_n/stl_m/sstl_m-ours"))


if __name__ == "__main__":
    unittest.main()
