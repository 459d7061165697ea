"""The configs that read a checkpoint (evaluate, inference, scan inference) derive the same settings from it.

Each of ``evaluate.yaml``, ``inference.yaml`` and ``inference_scan.yaml`` reads the checkpoint's settings file with
:func:`~mstl_monai.networks.checkpoint.checkpoint_settings` and exposes every value as a key a user can override
(``--image_size``, ``--tta``, ``--threshold`` ...). These keys must mean the same thing in the three configs: a
scan's slices get the probabilities ``inference.yaml`` gives them, and evaluate scores what inference would answer.
"""

from __future__ import annotations

import unittest

import yaml

from tests.bundle._bundle_utils import CONFIGS

# every setting a checkpoint-reading config takes from the checkpoint's settings file
CHECKPOINT_KEYS = (
    "backbone", "n_attn", "in_channels", "num_classes", "class_names", "image_size", "resize_size", "patch_size",
    "threshold", "operating_point", "temperature", "normalize", "tta",
)
READERS = ("evaluate.yaml", "inference.yaml", "inference_scan.yaml")


def load(name: str) -> dict:
    with open(CONFIGS / name) as f:
        return yaml.safe_load(f)


class TestCheckpointKeys(unittest.TestCase):
    def test_every_reader_derives_the_same_settings(self):
        configs = {name: load(name) for name in READERS}
        for name, cfg in configs.items():
            with self.subTest(config=name):
                self.assertIn("checkpoint_settings(", cfg["ckpt_settings"])
                missing = [k for k in CHECKPOINT_KEYS if k not in cfg]
                self.assertEqual(missing, [], f"{name} does not take {missing} from the checkpoint")
        reference = configs["inference.yaml"]
        for name, cfg in configs.items():
            for key in CHECKPOINT_KEYS:
                with self.subTest(config=name, key=key):
                    self.assertEqual(cfg[key], reference[key], f"{name}: {key} differs from inference.yaml's")

    def test_scan_classifier_uses_the_settings(self):
        classifier = load("inference_scan.yaml")["classifier"]
        for key in ("temperature", "tta"):
            with self.subTest(key=key):
                self.assertEqual(classifier.get(key), f"@{key}")


if __name__ == "__main__":
    unittest.main()
