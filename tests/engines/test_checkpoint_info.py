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
from parameterized import parameterized

from mstl_monai.handlers import CheckpointNetworkLoader
from mstl_monai.networks import build_network
from mstl_monai.networks.checkpoint import check_checkpoint_settings, checkpoint_settings
from mstl_monai.networks.sidecar import checkpoint_info, read_checkpoint_info, write_checkpoint_info
from mstl_monai.networks.sidecar import SIDECAR_FIELDS
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
        with self.assertLogs("mstl_monai.networks.checkpoint", "WARNING") as logs:
            s = checkpoint_settings(self.ckpt, image_size=96)
        self.assertEqual((s["backbone"], s["n_attn"], s["image_size"], s["resize_size"]), ("resnet18", 1, 96, 256))
        self.assertIn("no settings file", logs.output[0])
        with self.assertRaisesRegex(ValueError, r"backbone='resnet50' \(checkpoint: 'resnet18'\)"):
            check_checkpoint_settings(self.ckpt, backbone="resnet50", image_size=96)

    def test_sidecar_of_another_network(self):
        write_checkpoint_info(self.ckpt, checkpoint_info("resnet34", 1, 1, 2, 128, 146))
        with self.assertRaisesRegex(ValueError, r"model.pt.json does not describe checkpoint .*backbone=\"resnet34\""):
            checkpoint_settings(self.ckpt)


def _vit(img_size=32):
    return build_network("vit_tiny", n_input_channels=1, num_classes=2, img_size=img_size, patch_size=16, num_layers=1)


class TestSettingsSchema(unittest.TestCase):
    """``model.pt.json`` is read with a schema: a wrong type, range or count is one line naming the file, the field
    and the value, before any reader uses it."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.d = Path(self.tmp.name)
        self.ckpt = self.d / "model.pt"
        torch.save(_net().state_dict(), self.ckpt)
        self.info = checkpoint_info("resnet18", 1, 1, 2, 32, 36, ["non-COVID", "COVID"], stage="finetune", tta=False)

    def tearDown(self):
        self.tmp.cleanup()

    def _write(self, info, ckpt=None):
        Path(f"{ckpt or self.ckpt}.json").write_text(json.dumps(info))

    def _refused(self, pattern, ckpt=None, **changes):
        self._write(dict(self.info, **changes), ckpt)
        with self.assertRaises(ValueError) as ctx:
            checkpoint_settings(ckpt or self.ckpt)
        msg = str(ctx.exception)
        self.assertEqual(len(msg.splitlines()), 1, msg)
        self.assertIn(f"{ckpt or self.ckpt}.json", msg)
        self.assertRegex(msg, pattern)
        return msg

    @parameterized.expand(
        [
            ("names_count", {"class_names": ["a", "b", "c"]}, r"class_names=\[\"a\", \"b\", \"c\"\] names 3 classes but num_classes is 2"),
            ("names_string", {"class_names": "non-COVID,COVID"}, r"class_names=\"non-COVID,COVID\" is not a list of names"),
            ("names_repeated", {"class_names": ["a", "a"]}, r"class_names=.* repeats 'a'"),
            ("size_negative", {"image_size": -8}, r"image_size=-8 is not a positive integer"),
            ("size_string", {"image_size": "abc"}, r"image_size=\"abc\" is not a positive integer"),
            ("size_bool", {"resize_size": True}, r"resize_size=true is not a positive integer"),
            ("size_float", {"image_size": 32.5}, r"image_size=32.5 is not a positive integer"),
            ("tta_string", {"tta": "false"}, r"tta=\"false\" is not true or false"),
            ("threshold_range", {"decision_threshold": 1.5}, r"decision_threshold=1.5 is not a number in \(0, 1\)"),
            ("threshold_string", {"decision_threshold": "0.4"}, r"decision_threshold=\"0.4\" is not a number in \(0, 1\)"),
            ("threshold_nan", {"decision_threshold": float("nan")}, r"decision_threshold=NaN is not a number in \(0, 1\)"),
            ("backbone_unknown", {"backbone": "resnet19"}, r"backbone=\"resnet19\" is not one of .*resnet18"),
            ("n_attn_negative", {"n_attn": -1}, r"n_attn=-1 is not a non-negative integer"),
            ("dropout_range", {"dropout": 1.0}, r"dropout=1.0 is not a number in \[0, 1\)"),
            ("normalize_zero", {"normalize": {"subtrahend": 0.4, "divisor": 0}}, r"normalize=\{.*\} has divisor 0"),
            ("stage_number", {"stage": 3}, r"stage=3 is not a string"),
            ("temperature_zero", {"temperature": 0}, r"temperature=0 is not a finite number > 0"),
            ("temperature_string", {"temperature": "1.5"}, r"temperature=\"1.5\" is not a finite number > 0"),
            ("operating_points_range", {"operating_points": {"youden": 0.4, "sensitivity_90": 1.2}}, r"operating_points=.* has sensitivity_90=1.2, which is not a number in \[0, 1\]"),
            ("operating_points_list", {"operating_points": [0.4]}, r"operating_points=\[0.4\] is not an object"),
            ("calibration_string", {"calibration": "val"}, r"calibration=\"val\" is not an object"),
            ("unknown_field", {"decision_treshold": 0.3}, r"unknown field 'decision_treshold' \(did you mean 'decision_threshold'\?\)"),
        ]
    )
    def test_bad_field_is_one_line(self, _, changes, pattern):
        self._refused(pattern, **changes)

    def test_several_problems_in_one_line(self):
        msg = self._refused(r"image_size=-8 .*; tta=\"false\"", image_size=-8, tta="false")
        self.assertNotIn("\n", msg)

    def test_missing_required_fields_named(self):
        self._write({"format": self.info["format"]})
        with self.assertRaisesRegex(
            ValueError,
            r"model\.pt\.json: required field\(s\) missing: backbone, n_attn, in_channels, num_classes, image_size, "
            r"resize_size",
        ):
            read_checkpoint_info(self.ckpt)

    def test_documented_defaults(self):
        """Only the required fields: the optional ones get their documented defaults, every reader sees them."""
        required = ("format", "backbone", "n_attn", "in_channels", "num_classes", "image_size", "resize_size")
        self._write({k: self.info[k] for k in required})
        info = read_checkpoint_info(self.ckpt)
        self.assertEqual((info["decision_threshold"], info["tta"], info["class_names"], info["attention_maps"]), (None, False, None, 0))
        s = checkpoint_settings(self.ckpt)
        self.assertEqual((s["decision_threshold"], s["tta"], s["class_names"]), (None, False, ["non-COVID", "COVID"]))
        self.assertEqual(s["image_size"], 32)

    def test_not_an_object(self):
        Path(f"{self.ckpt}.json").write_text("[1, 2]")
        with self.assertRaisesRegex(ValueError, r"model\.pt\.json .*is not a 'mstl_monai\.checkpoint/1' file"):
            read_checkpoint_info(self.ckpt)

    @parameterized.expand(
        [
            ("num_classes", {"num_classes": 3, "class_names": None}, r"it says num_classes=3 but the weights have num_classes=2"),
            ("in_channels", {"in_channels": 3}, r"it says in_channels=3 but the weights have in_channels=1"),
            ("n_attn", {"n_attn": 5}, r"it says n_attn=5 but the weights have n_attn=1"),
            ("backbone", {"backbone": "resnet34"}, r"it says backbone=\"resnet34\" but the weights have backbone=\"resnet18\""),
            ("attention_maps", {"attention_maps": 3}, r"it says attention_maps=3 but the weights have attention_maps=0"),
        ]
    )
    def test_against_the_weights(self, _, changes, pattern):
        self._refused(pattern, **changes)

    def test_vit_image_size_against_position_embeddings(self):
        vit = self.d / "vit.pt"
        torch.save(_vit(32).state_dict(), vit)
        info = checkpoint_info("vit_tiny", 0, 1, 2, 32, 36, ["non-COVID", "COVID"])
        self._write(info, vit)
        self.assertEqual(checkpoint_settings(vit)["image_size"], 32)
        self._write(dict(info, image_size=64), vit)
        with self.assertRaisesRegex(ValueError, r"vit\.pt\.json does not describe .*image_size=64 .*position embeddings.*32"):
            checkpoint_settings(vit)

    def test_string_names_not_blamed_on_an_override(self):
        """The settings the bundle passes back from the file itself are not 'overrides'."""
        self._write(dict(self.info, class_names="non-COVID,COVID"))
        with self.assertRaises(ValueError) as ctx:
            check_checkpoint_settings(self.ckpt, image_size=32)
        self.assertNotIn("override", str(ctx.exception))
        self.assertIn("class_names", str(ctx.exception))

    def test_override_of_wrong_type_named(self):
        self._write(self.info)
        with self.assertRaisesRegex(ValueError, r"image_size='abc' \(given\) is not an integer"):
            check_checkpoint_settings(self.ckpt, image_size="abc")
        with self.assertRaisesRegex(ValueError, r"class_names='a,b' \(given\) is not a list of names"):
            check_checkpoint_settings(self.ckpt, class_names="a,b")

    def test_calibration_and_provenance_fields(self):
        """What the finetune's DecisionThresholdHandler and scripts/ship_model.py add reads back; their defaults."""
        cal = {"temperature": 1.7, "operating_points": {"youden": 0.42, "sensitivity_90": 0.0}, "decision_threshold": 0.42,
               "calibration": {"method": "temperature scaling on val", "n_val": 118, "val_ece_before": 0.1, "val_ece_after": 0.05},
               "provenance": {"sha256": "ab", "weights_dtype": "float16", "test_metrics": None}}
        self._write(dict(self.info, **cal))
        s = checkpoint_settings(self.ckpt)
        self.assertEqual({k: s[k] for k in cal}, cal)
        self._write(self.info)
        s = checkpoint_settings(self.ckpt)
        self.assertEqual((s["temperature"], s["operating_points"], s["calibration"], s["provenance"]), (1.0, {}, None, None))

    def test_written_files_pass(self):
        """Everything the writers produce (with and without optional fields) reads back unchanged."""
        for info in (self.info, checkpoint_info("resnet18", 1, 1, 2, 32, 36), dict(self.info, decision_threshold=0.42, tta=True)):
            self._write(info)
            read = read_checkpoint_info(self.ckpt)
            self.assertEqual({k: read[k] for k in info}, {k: SIDECAR_FIELDS[k].default if v is None else v for k, v in info.items()})
            checkpoint_settings(self.ckpt)


class TestSettingValues(unittest.TestCase):
    """The values a run uses for checkpoint settings (overrides) follow the settings file's rules."""

    @parameterized.expand(
        [
            ("negative_temperature", {"temperature": -1}, r"^setting temperature=-1 is not a finite number > 0"),
            ("zero_temperature", {"temperature": 0}, r"temperature=0 is not a finite number > 0"),
            ("text_temperature", {"temperature": "abc"}, r'temperature="abc" is not a finite number'),
            ("text_normalize", {"normalize": "none"}, r'normalize="none" is not \{"subtrahend"'),
            ("text_tta", {"tta": "false"}, r'tta="false" is not true or false'),
            ("zero_size", {"image_size": 0}, r"image_size=0 is not a positive integer"),
            ("names_as_text", {"class_names": "COVID"}, r'class_names="COVID" is not a list of names'),
        ]
    )
    def test_bad_values_name_the_setting(self, _, values, pattern):
        from mstl_monai.networks.sidecar import check_setting_values

        with self.assertRaisesRegex(ValueError, pattern):
            check_setting_values(**values)

    def test_good_values_and_unknown_names(self):
        from mstl_monai.networks.sidecar import check_setting_values

        check_setting_values(
            temperature=2, normalize={"subtrahend": 0.449, "divisor": 0.226}, tta=False, image_size=128,
            resize_size=146, class_names=["non-COVID", "COVID"],
        )
        with self.assertRaisesRegex(KeyError, "'temprature' is not a checkpoint setting"):
            check_setting_values(temprature=2.0)

    def test_report_refuses_a_bootstrap_it_cannot_draw_before_the_run(self):
        from mstl_monai.handlers import ClassificationReport

        for n in (0, -5, 2.5):
            with self.subTest(n_bootstrap=n), self.assertRaisesRegex(ValueError, "n_bootstrap must be a positive integer"):
                ClassificationReport(tempfile.gettempdir(), ["non-COVID", "COVID"], n_bootstrap=n)


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
