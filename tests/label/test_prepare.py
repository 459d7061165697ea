"""Core-environment tests of the MONAI Label helpers (no MONAI Label needed)."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import torch
import yaml
from parameterized import parameterized

from mstl_monai.engines import build_network
from mstl_monai.label import network_config_from_state_dict, parse_class_label, prepare_app

CLASSES = ["non-COVID", "COVID"]


class TestNetworkConfig(unittest.TestCase):
    @parameterized.expand([("resnet18", 0), ("resnet18", 5), ("resnet34", 1), ("resnet50", 5), ("resnet101", 1)])
    def test_round_trip(self, backbone, n_attn):
        net = build_network(backbone, n_attn=n_attn, n_input_channels=1, num_classes=3)
        cfg = network_config_from_state_dict(net.state_dict())
        self.assertEqual(cfg, {"backbone": backbone, "n_attn": n_attn, "in_channels": 1, "num_classes": 3})

    def test_not_a_resnet(self):
        with self.assertRaisesRegex(ValueError, "my.pt.*conv1"):
            network_config_from_state_dict({"weight": torch.zeros(1)}, "my.pt")


class TestParseClassLabel(unittest.TestCase):
    @parameterized.expand(
        [('{"label": "COVID"}', 1), ('{"label": "non-covid"}', 0), ('{"label": 0}', 0), ("COVID\n", 1), ("1", 1), (b"non-COVID", 0)]
    )
    def test_valid(self, text, want):
        self.assertEqual(parse_class_label(text, CLASSES, "x"), want)

    @parameterized.expand(
        [
            ('{"label": "pneumonia"}', "pneumonia"),
            ('{"label": 2}', "outside"),
            ("{broken", "not valid JSON"),
            ('{"class": "COVID"}', "no 'label' key"),
            ("", "empty"),
            (b"\xff\xfe\x00", "binary"),
            ('{"label": true}', "not one of"),
        ]
    )
    def test_invalid(self, text, message):
        with self.assertRaisesRegex(ValueError, message):
            parse_class_label(text, CLASSES, "label for image 'a'")


class TestPrepareApp(unittest.TestCase):
    def test_from_checkpoint(self):
        net = build_network("resnet18", n_attn=1, n_input_channels=1, num_classes=2)
        with tempfile.TemporaryDirectory() as d:
            ckpt = Path(d, "model.pt")
            torch.save({"network": net.state_dict()}, ckpt)  # the bundle's best-checkpoint layout
            model_dir = prepare_app(Path(d, "app"), ckpt, image_size=96, resize_size=110, overrides={"epochs": 3})
            self.assertTrue(Path(d, "app", "main.py").is_file())
            inf = yaml.safe_load((model_dir / "configs" / "inference.yaml").read_text())
            train = yaml.safe_load((model_dir / "configs" / "train.yaml").read_text())
            for cfg in (inf, train):
                self.assertEqual((cfg["backbone"], cfg["n_attn"], cfg["image_size"], cfg["resize_size"]), ("resnet18", 1, 96, 110))
            self.assertEqual(train["epochs"], 3)
            self.assertEqual(train["learning_rate"], 0.01)  # finetuning default, not the paper's from-scratch 0.3
            saved = torch.load(model_dir / "models" / "model.pt", weights_only=True)
            self.assertTrue(all(torch.equal(saved[k], v) for k, v in net.state_dict().items()))
            # a second init keeps weights trained through /train unless forced
            torch.save({k: v + 1 if v.is_floating_point() else v for k, v in saved.items()}, model_dir / "models" / "model.pt")
            prepare_app(Path(d, "app"), ckpt)
            kept = torch.load(model_dir / "models" / "model.pt", weights_only=True)
            self.assertFalse(torch.equal(kept["conv1.weight"], saved["conv1.weight"]))
            prepare_app(Path(d, "app"), ckpt, force=True)
            forced = torch.load(model_dir / "models" / "model.pt", weights_only=True)
            self.assertTrue(torch.equal(forced["conv1.weight"], saved["conv1.weight"]))
            self.assertEqual(json.loads((model_dir / "app_settings.json").read_text())["source_checkpoint"], str(ckpt))

    def test_settings_from_checkpoint(self):
        """init reads image/resize size and architecture from the checkpoint's settings file; a contradicting
        option is an error naming both values."""
        from mstl_monai.engines import checkpoint_info, read_checkpoint_info, write_checkpoint_info

        net = build_network("resnet18", n_attn=5, n_input_channels=1, num_classes=2)
        with tempfile.TemporaryDirectory() as d:
            ckpt = Path(d, "model.pt")
            torch.save(net.state_dict(), ckpt)
            write_checkpoint_info(ckpt, checkpoint_info("resnet18", 5, 1, 2, 128, 146, ["non-COVID", "COVID"], stage="finetune"))
            model_dir = prepare_app(Path(d, "app"), ckpt)
            inf = yaml.safe_load((model_dir / "configs" / "inference.yaml").read_text())
            self.assertEqual((inf["backbone"], inf["n_attn"], inf["image_size"], inf["resize_size"]), ("resnet18", 5, 128, 146))
            self.assertEqual(read_checkpoint_info(model_dir / "models" / "model.pt")["image_size"], 128)
            with self.assertRaisesRegex(ValueError, r"model.pt .*image_size=224 \(checkpoint: 128\)"):
                prepare_app(Path(d, "app2"), ckpt, image_size=224)
            with self.assertRaisesRegex(ValueError, r"n_attn=0 \(checkpoint: 5\)"):
                prepare_app(Path(d, "app3"), ckpt, n_attn=0)

    def test_bad_checkpoints(self):
        with tempfile.TemporaryDirectory() as d:
            three = build_network("resnet18", n_attn=0, n_input_channels=1, num_classes=3)
            torch.save(three.state_dict(), Path(d, "three.pt"))
            with self.assertRaisesRegex(ValueError, "three.pt has 3 classes"):
                prepare_app(Path(d, "app"), Path(d, "three.pt"))
            Path(d, "trunc.pt").write_bytes(Path(d, "three.pt").read_bytes()[:1000])
            with self.assertRaisesRegex(ValueError, "trunc.pt"):
                prepare_app(Path(d, "app"), Path(d, "trunc.pt"))
            with self.assertRaises(FileNotFoundError):
                prepare_app(Path(d, "app"), Path(d, "missing.pt"))
            self.assertFalse(Path(d, "app").exists())  # nothing half-written


if __name__ == "__main__":
    unittest.main()


class TestPrintedCommand(unittest.TestCase):
    def test_init_prints_this_interpreter(self):
        """`init` tells the user to start the app with the interpreter that has MONAI Label, not plain `python`."""
        import sys

        from mstl_monai.label.__main__ import _python_cmd

        cmd = _python_cmd()
        self.assertTrue(Path(cmd).is_absolute() or not cmd.startswith("python"), cmd)
        self.assertEqual(Path(cmd).resolve(), Path(sys.executable).resolve())
