"""Checkpoint settings files, the one-line checkpoint loader and the root-cause line of bundle failures."""

from __future__ import annotations

import io
import json
import tempfile
import unittest
from contextlib import redirect_stderr
from pathlib import Path

import torch
from ignite.engine import Engine

from mstl_monai.engines import (
    CheckpointNetworkLoader,
    build_network,
    check_checkpoint_settings,
    checkpoint_info,
    checkpoint_settings,
    read_checkpoint_info,
    write_checkpoint_info,
)
from mstl_monai.utils import _cause_hook, root_cause


def _net(backbone="resnet18", n_attn=1, num_classes=2):
    return build_network(backbone, n_attn=n_attn, n_input_channels=1, num_classes=num_classes)


class TestSettings(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        self.ckpt = self.d / "model.pt"
        torch.save(_net().state_dict(), self.ckpt)

    def tearDown(self):
        self.tmp.cleanup()

    def test_sidecar_round_trip(self):
        write_checkpoint_info(self.ckpt, checkpoint_info("resnet18", 1, 1, 2, 128, 146, ["non-COVID", "COVID"], stage="finetune"))
        self.assertEqual(read_checkpoint_info(self.ckpt)["image_size"], 128)
        s = checkpoint_settings(self.ckpt)
        self.assertEqual((s["backbone"], s["n_attn"], s["image_size"], s["resize_size"], s["settings_source"]), ("resnet18", 1, 128, 146, "sidecar"))
        self.assertIsNone(s["decision_threshold"])
        check_checkpoint_settings(self.ckpt, backbone="ResNet-18", image_size=128)  # same values: fine

    def test_contradiction_names_both_values(self):
        write_checkpoint_info(self.ckpt, checkpoint_info("resnet18", 1, 1, 2, 128, 146))
        with self.assertRaisesRegex(ValueError, r"model.pt .*n_attn=5 \(checkpoint: 1\); image_size=224 \(checkpoint: 128\)"):
            check_checkpoint_settings(self.ckpt, n_attn=5, image_size=224)

    def test_bare_checkpoint_architecture_from_weights(self):
        with self.assertLogs("mstl_monai.engines.checkpoint", "WARNING") as logs:
            s = checkpoint_settings(self.ckpt, image_size=96)
        self.assertEqual((s["backbone"], s["n_attn"], s["image_size"], s["resize_size"]), ("resnet18", 1, 96, 256))
        self.assertIn("no settings file", logs.output[0])
        with self.assertRaisesRegex(ValueError, r"backbone='resnet50' \(checkpoint: 'resnet18'\)"):
            check_checkpoint_settings(self.ckpt, backbone="resnet50", image_size=96)

    def test_sidecar_of_another_network(self):
        write_checkpoint_info(self.ckpt, checkpoint_info("resnet34", 1, 1, 2, 128, 146))
        with self.assertRaisesRegex(ValueError, r"model.pt.json does not describe checkpoint .*backbone='resnet34'"):
            checkpoint_settings(self.ckpt)


class TestCheckpointNetworkLoader(unittest.TestCase):
    def _load(self, path, net):
        CheckpointNetworkLoader(load_path=str(path), load_dict={"network": net})(Engine(lambda e, b: None))

    def test_training_checkpoint_network_entry(self):
        src = _net()
        with tempfile.TemporaryDirectory() as d:
            path = Path(d, "model_final.pt")
            torch.save({"network": src.state_dict(), "optimizer": {"state": {}}, "trainer": {"iteration": 3}}, path)
            dst = _net()
            self._load(path, dst)
            for k, v in src.state_dict().items():
                torch.testing.assert_close(dst.state_dict()[k], v)

    def test_other_architecture_one_line(self):
        with tempfile.TemporaryDirectory() as d:
            path = Path(d, "model.pt")
            torch.save(_net("resnet18", 5).state_dict(), path)
            with self.assertRaises(ValueError) as ctx:
                self._load(path, _net("resnet50", 0))
            msg = str(ctx.exception)
            self.assertEqual(len(msg.splitlines()), 1)
            self.assertIn("model.pt holds a resnet18 +5 ATTN", msg)
            self.assertIn("--backbone resnet18 --n_attn 5", msg)

    def test_unreadable_files_one_line(self):
        with tempfile.TemporaryDirectory() as d:
            for name, content in {"random.pt": bytes(range(256)), "text.pt": b"hello\n", "empty.pt": b""}.items():
                Path(d, name).write_bytes(content)
                with self.assertRaisesRegex(ValueError, rf"checkpoint .*{name} is (not a PyTorch file|an empty file)"):
                    self._load(Path(d, name), _net())


class TestRootCause(unittest.TestCase):
    def _wrapped(self):
        try:
            try:
                try:
                    raise ValueError("checkpoint x.pt is an empty file (0 bytes).")
                except ValueError as e:
                    raise RuntimeError("Failed to instantiate component 'X' with keywords: a") from e
            except RuntimeError as e:
                raise RuntimeError("Failed to evaluate ConfigExpression: $@evaluator.run()") from e
        except RuntimeError as e:
            return e

    def test_root_cause_skips_monai_wrappers(self):
        exc = self._wrapped()
        self.assertEqual(str(root_cause(exc)), "checkpoint x.pt is an empty file (0 bytes).")
        plain = ValueError("plain")
        self.assertIs(root_cause(plain), plain)

    def test_hook_prints_cause_last(self):
        exc = self._wrapped()
        buf = io.StringIO()
        with redirect_stderr(buf):
            _cause_hook(lambda t, v, tb: print("Traceback ...\nRuntimeError: Failed to evaluate", file=buf))(type(exc), exc, None)
        self.assertEqual(buf.getvalue().strip().splitlines()[-1], "ValueError: checkpoint x.pt is an empty file (0 bytes).")


if __name__ == "__main__":
    unittest.main()
