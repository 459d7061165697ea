"""bundle/configs/cpu.yaml gives each stage configs/cpu_scale.yaml's recipe in one word (and nothing else changes)."""

from __future__ import annotations

import unittest

import yaml
from monai.bundle import ConfigParser
from parameterized import parameterized

from tests.bundle._bundle_utils import CONFIGS
from tests.utils import REPO_ROOT

PIPELINE = yaml.safe_load((REPO_ROOT / "configs" / "cpu_scale.yaml").read_text())


def _parsed(files: list[str], keys: list[str]) -> dict:
    p = ConfigParser()
    p.read_config([str(CONFIGS / f) for f in files])
    p["bundle_root"] = str(CONFIGS.parent)
    return {k: p.get_parsed_content(k) for k in keys}


class TestCpuOverride(unittest.TestCase):
    @parameterized.expand(
        [
            ["finetune", ["train.yaml"]],
            ["stl_n", ["train.yaml", "stl_n.yaml"]],
            ["stl_m", ["train.yaml", "stl_m.yaml"]],
            ["sstl_m", ["sstl_m.yaml"]],
        ]
    )
    def test_matches_pipeline_recipe(self, stage, files):
        keys = ["backbone", "image_size", "resize_size", "batch_size", "epochs", "learning_rate", "lr_milestones", "amp"]
        got = _parsed(files + ["cpu.yaml"], keys)
        want = dict(PIPELINE["common"], **PIPELINE["stage_defaults"].get(stage, {}))
        for k in keys:
            self.assertEqual(got[k], want.get(k, got[k]), f"{stage}: {k}")
        self.assertEqual(got["backbone"], "resnet18")
        if stage == "sstl_m":
            extra = _parsed(files + ["cpu.yaml"], ["region_size", "use_luna16", "queue_size"])
            self.assertEqual(extra, {k: PIPELINE["stage_defaults"]["sstl_m"][k] for k in extra})

    def test_without_it_paper_scale(self):
        got = _parsed(["train.yaml"], ["image_size", "batch_size", "epochs", "learning_rate"])
        self.assertEqual(got, {"image_size": 224, "batch_size": 256, "epochs": 200, "learning_rate": 0.3})


if __name__ == "__main__":
    unittest.main()
