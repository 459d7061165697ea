"""Core-environment tests of the MONAI Label helpers (no MONAI Label needed)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import torch
import yaml
from parameterized import parameterized

from mstl_monai.networks import build_network
from mstl_monai.label import network_config_from_state_dict, parse_class_label, prepare_app
from mstl_monai.label.__main__ import main
from mstl_monai.label.prepare import MAIN_PY
from tests.utils import REPO_ROOT

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
            # a second init refuses to touch weights trained through /train unless forced
            torch.save({k: v + 1 if v.is_floating_point() else v for k, v in saved.items()}, model_dir / "models" / "model.pt")
            with self.assertRaisesRegex(FileExistsError, "app.*--force"):
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
        from mstl_monai.networks.sidecar import checkpoint_info, read_checkpoint_info, write_checkpoint_info

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



class TestPrintedCommand(unittest.TestCase):
    def test_init_prints_this_interpreter(self):
        """`init` tells the user to start the app with the interpreter that has MONAI Label, not plain `python`."""
        import sys

        from mstl_monai.label.__main__ import _python_cmd

        cmd = _python_cmd()
        self.assertTrue(Path(cmd).is_absolute() or not cmd.startswith("python"), cmd)
        self.assertEqual(Path(cmd).resolve(), Path(sys.executable).resolve())


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


class TestInitExistingApp(unittest.TestCase):
    """`init` into an existing app: refused without --force; with it, everything replaced at once."""

    def setUp(self):
        self.d = Path(tempfile.mkdtemp(prefix="mstl-init-"))
        self.addCleanup(shutil.rmtree, self.d, ignore_errors=True)
        self.app = self.d / "app"
        for name, n_attn in (("a.pt", 1), ("b.pt", 0)):
            torch.manual_seed(n_attn)
            torch.save(build_network("resnet18", n_attn=n_attn, n_input_channels=1, num_classes=2).state_dict(), self.d / name)
        self.model_dir = prepare_app(self.app, self.d / "a.pt", image_size=64, resize_size=72)
        (self.model_dir / "train_runs").mkdir()  # what /train leaves
        (self.model_dir / "train_runs" / "log.txt").write_text("run 1")

    def _init(self, *args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["init", "--app-dir", str(self.app), *args])
        return code, out.getvalue(), err.getvalue()

    def test_refused_without_force(self):
        before = _tree(self.app)
        code, out, err = self._init("--checkpoint", str(self.d / "b.pt"), "--image-size", "64", "--resize-size", "72")
        self.assertEqual(code, 2, err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertIn(str(self.app), err)
        self.assertIn("--force", err)
        self.assertNotIn("app ready", out)
        self.assertEqual(_tree(self.app), before)

    def test_users_main_py_is_not_overwritten(self):
        other = self.d / "other"
        other.mkdir()
        (other / "main.py").write_text("print('my own app')\n")
        with self.assertRaisesRegex(FileExistsError, r"other.*main.py.*--force"):
            prepare_app(other, self.d / "b.pt")
        self.assertEqual((other / "main.py").read_text(), "print('my own app')\n")
        self.assertFalse((other / "model").exists())

    def test_force_replaces_everything(self):
        (self.model_dir.parent / f".{self.model_dir.name}.init-stale").mkdir()  # left by an init that was killed
        (self.app / "main.py").write_text("# edited\n")
        code, out, err = self._init("--checkpoint", str(self.d / "b.pt"), "--force")
        self.assertEqual(code, 0, err)
        self.assertIn("app ready", out)
        want = torch.load(self.d / "b.pt", weights_only=True)
        got = torch.load(self.model_dir / "models" / "model.pt", weights_only=True)
        self.assertEqual(set(got), set(want))
        self.assertTrue(all(torch.equal(got[k], want[k]) for k in want))
        info = json.loads((self.model_dir / "models" / "model.pt.json").read_text())
        self.assertEqual(info["n_attn"], 0)
        for f in ("inference.yaml", "train.yaml", "inference_scan.yaml"):
            cfg = yaml.safe_load((self.model_dir / "configs" / f).read_text())
            self.assertEqual((cfg["n_attn"], cfg["image_size"]), (0, 224), f)  # b.pt has no settings file: defaults
        self.assertEqual(json.loads((self.model_dir / "app_settings.json").read_text())["source_checkpoint"], str(self.d / "b.pt"))
        self.assertEqual((self.app / "main.py").read_text(), MAIN_PY)
        self.assertFalse((self.model_dir / "train_runs").exists())
        self.assertEqual(sorted(p.name for p in self.model_dir.parent.iterdir()), [self.model_dir.name])

    def test_killed_midway_leaves_the_old_app(self):
        before = _tree(self.app)

        def killed(*args, **kwargs):  # the process dies while the new configs are written
            raise KeyboardInterrupt

        with mock.patch("mstl_monai.label.prepare._set_top_level", killed):
            with self.assertRaises(KeyboardInterrupt):
                prepare_app(self.app, self.d / "b.pt", force=True)
        self.assertEqual(_tree(self.app), before)
        # without the system's atomic exchange of two folders: the old one is renamed aside, the new one in; a kill
        # in between leaves the old bundle aside, and the next init puts it back
        real_rename, renames = os.rename, []

        def rename(src, dst):
            renames.append((src, dst))
            if len(renames) == 2:
                raise KeyboardInterrupt
            real_rename(src, dst)

        with mock.patch("mstl_monai.label.prepare._exchange", return_value=False), mock.patch("os.rename", rename):
            with self.assertRaises(KeyboardInterrupt):
                prepare_app(self.app, self.d / "b.pt", force=True)
        self.assertFalse(self.model_dir.exists())
        with self.assertRaisesRegex(FileExistsError, "--force"):
            prepare_app(self.app, self.d / "b.pt")
        self.assertEqual(_tree(self.app), before)
        with mock.patch("mstl_monai.label.prepare._exchange", return_value=False):
            prepare_app(self.app, self.d / "b.pt", force=True)
        self.assertEqual(json.loads((self.model_dir / "models" / "model.pt.json").read_text())["n_attn"], 0)
        self.assertEqual(sorted(p.name for p in self.model_dir.parent.iterdir()), [self.model_dir.name])


class TestScanRunnerLoadFailure(unittest.TestCase):
    """The scan task's runner names a checkpoint it cannot load in one line (the server answers 503 with it)."""

    def test_truncated_and_foreign_checkpoints(self):
        from mstl_monai.label.scan import CheckpointLoadError, ScanInferRunner

        with tempfile.TemporaryDirectory() as d:
            model_dir = prepare_app(Path(d, "app"), None, backbone="resnet18", n_attn=0, image_size=64, resize_size=72)
            model_pt = model_dir / "models" / "model.pt"
            model_pt.write_bytes(model_pt.read_bytes()[:5000])
            runner = ScanInferRunner(model_dir, {"device": "cpu"})
            with self.assertRaises(CheckpointLoadError) as e:
                runner(Path(d, "no_scan_needed.nii.gz"))
            self.assertRegex(str(e.exception), r"^cannot load models/model.pt: .*truncated")
            self.assertEqual(len(str(e.exception).splitlines()), 1)
            self.assertNotIn(d, str(e.exception))  # the server's folders stay out of the answer
            torch.save(build_network("resnet34", n_attn=0, n_input_channels=1, num_classes=2).state_dict(), model_pt)
            with self.assertRaisesRegex(CheckpointLoadError, r"^cannot load models/model.pt: .*"):
                runner(Path(d, "no_scan_needed.nii.gz"))


class TestBundleFolder(unittest.TestCase):
    """An installed package has no bundle/ beside it: the bundle is the one given, $MSTL_BUNDLE_DIR or ./bundle."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-bundle-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.env = mock.patch.dict(os.environ)
        self.env.start()
        self.addCleanup(self.env.stop)
        os.environ.pop("MSTL_BUNDLE_DIR", None)
        self.cwd = contextlib.chdir(self.tmp)  # a folder without bundle/
        self.cwd.__enter__()
        self.addCleanup(self.cwd.__exit__, None, None, None)
        self.kw = {"backbone": "resnet18", "n_attn": 0, "image_size": 64, "resize_size": 72}

    def test_no_bundle_is_a_clear_error(self):
        with self.assertRaises(FileNotFoundError) as e:
            prepare_app(self.tmp / "app", None, **self.kw)
        msg = str(e.exception)
        self.assertEqual(len(msg.splitlines()), 1)
        self.assertIn(str(self.tmp / "bundle"), msg)
        self.assertIn("configs/inference.yaml", msg)
        self.assertRegex(msg, r"pass the bundle folder \(--bundle\) or set MSTL_BUNDLE_DIR")
        self.assertFalse((self.tmp / "app" / "main.py").exists())

    def test_bundle_from_the_environment_or_the_current_folder(self):
        os.environ["MSTL_BUNDLE_DIR"] = str(REPO_ROOT / "bundle")
        model_dir = prepare_app(self.tmp / "app", None, **self.kw)
        self.assertTrue((model_dir / "configs" / "inference.yaml").is_file())
        del os.environ["MSTL_BUNDLE_DIR"]
        os.symlink(REPO_ROOT / "bundle", self.tmp / "bundle")
        model_dir = prepare_app(self.tmp / "app2", None, **self.kw)
        self.assertTrue((model_dir / "configs" / "train.yaml").is_file())

    def test_given_folder_without_configs(self):
        (self.tmp / "empty").mkdir()
        with self.assertRaisesRegex(FileNotFoundError, r"empty' \(--bundle\) has no configs/inference.yaml"):
            prepare_app(self.tmp / "app", None, bundle_dir=self.tmp / "empty", **self.kw)


if __name__ == "__main__":
    unittest.main()
