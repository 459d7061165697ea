"""Misspelt or ill-typed overrides are errors naming the setting (issue 11 item 3): unit checks and real bundle runs."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import yaml
from parameterized import parameterized

from mstl_monai.utils.settings import SettingsError, check_settings, load_config_tree, override_problems
from tests.bundle._bundle_utils import CONFIGS, TINY, run_bundle

#: every way the bundle's configs are run (the pipeline's stages, inference, multi-process training)
CONFIG_SETS = {
    "train": ["train.yaml"],
    "evaluate": ["train.yaml", "evaluate.yaml"],
    "inference": ["inference.yaml"],
    "stl_n": ["train.yaml", "stl_n.yaml"],
    "stl_m": ["train.yaml", "stl_m.yaml"],
    "sstl_m": ["sstl_m.yaml"],
    "multi_gpu_train": ["train.yaml", "multi_gpu_train.yaml"],
}


def _files(name: str) -> list[str]:
    return [str(CONFIGS / f) for f in CONFIG_SETS[name]]


class TestCheckSettings(unittest.TestCase):
    @parameterized.expand([(k,) for k in CONFIG_SETS])
    def test_unknown_key_names_it_and_suggests(self, name):
        with self.assertRaises(SettingsError) as cm:
            check_settings({"bakbone": "resnet18"}, _files(name))
        msg = str(cm.exception)
        self.assertIn("'bakbone'", msg)
        self.assertIn("did you mean 'backbone'", msg)
        self.assertIn(CONFIG_SETS[name][-1], msg)  # names the config files
        self.assertEqual(len(msg.splitlines()), 1)

    @parameterized.expand([(k,) for k in CONFIG_SETS if k != "inference"])
    def test_known_keys_pass(self, name):
        check_settings(dict(TINY, n_attn=5, epochs=1, run_dir="/tmp/x", pretrained="", data_root="/d"), _files(name))

    def test_epoch_suggests_epochs(self):
        with self.assertRaisesRegex(SettingsError, r"unknown setting 'epoch' \(not in train.yaml\): did you mean 'epochs'"):
            check_settings({"epoch": 1}, _files("train"))

    def test_a_setting_of_an_override_file_names_the_file(self):
        # mag_sd.yaml's settings, and the old switch --mag_sd, point to the file to merge
        with self.assertRaisesRegex(SettingsError, r"'mag_sd_maps' \(not in train.yaml\) \(defined in mag_sd.yaml: add it to --config_file"):
            check_settings({"mag_sd_maps": 2}, _files("train"))
        with self.assertRaisesRegex(SettingsError, r"'mag_sd' \(not in train.yaml\) \(the override file mag_sd.yaml"):
            check_settings({"mag_sd": True}, _files("train"))
        check_settings({"mag_sd_maps": 2}, [*_files("train"), str(CONFIGS / "mag_sd.yaml")])

    def test_nested_ids(self):
        files = _files("evaluate")
        # paths that exist, in either separator, and new arguments of a component that takes them
        check_settings(
            {"train#trainer#max_epochs": 1, "validate::dataloader::batch_size": 3, "train#dataloader#pin_memory": True},
            files,
        )
        with self.assertRaisesRegex(SettingsError, r"'train#trainer#max_epoch'.*did you mean 'train#trainer#max_epochs'"):
            check_settings({"train#trainer#max_epoch": 1}, files)
        with self.assertRaisesRegex(SettingsError, r"'trian#trainer#max_epochs'.*did you mean 'train'"):
            check_settings({"trian#trainer#max_epochs": 1}, files)
        with self.assertRaisesRegex(SettingsError, r"'train#handlers' is a list of \d+ entries"):
            check_settings({"train#handlers#99#seed": 1}, files)
        with self.assertRaisesRegex(SettingsError, r"'epochs' is a single value"):
            check_settings({"epochs#x": 1}, files)

    @parameterized.expand(
        [
            ("word_for_int", {"n_attn": "five"}, r"'n_attn' must be a whole number.*got 'five'"),
            ("float_for_int", {"epochs": 1.5}, r"'epochs' must be a whole number.*got 1.5"),
            ("text_for_bool", {"resume": "false"}, r"'resume' must be True or False.*got 'false'"),
            ("text_for_float", {"learning_rate": "fast"}, r"'learning_rate' must be a number.*got 'fast'"),
        ]
    )
    def test_bad_values(self, _, overrides, pattern):
        with self.assertRaisesRegex(SettingsError, pattern):
            check_settings(overrides, _files("train"))

    def test_good_values(self):
        # ints for floats, expressions and references, text for text and expression defaults
        ok = {"learning_rate": 1, "epochs": "$2 + 1", "batch_size": "@num_workers", "backbone": "resnet18", "amp": False}
        self.assertEqual(override_problems(ok, load_config_tree(_files("train"))), [])

    def test_every_problem_in_one_line(self):
        with self.assertRaises(SettingsError) as cm:
            check_settings({"epoch": 1, "bakbone": "resnet18", "n_attn": "five"}, _files("train"))
        msg = str(cm.exception)
        self.assertEqual(len(msg.splitlines()), 1)
        for word in ("'epoch'", "'bakbone'", "'n_attn'"):
            self.assertIn(word, msg)

    def test_keys_come_from_the_files(self):
        """A key added to a config file is known without a list to keep up to date; ``+`` and ``#`` keys merge."""
        with tempfile.TemporaryDirectory() as d:
            base, extra = Path(d) / "a.yaml", Path(d) / "b.yaml"
            base.write_text(yaml.safe_dump({"alpha": 1, "section": {"x": 1}, "imports": ["$import os"]}))
            extra.write_text(yaml.safe_dump({"brand_new": "v", "section#y": 2, "+imports": ["$import sys"]}))
            tree = load_config_tree([base, extra])
            self.assertEqual(tree["section"], {"x": 1, "y": 2})
            self.assertEqual(tree["imports"], ["$import os", "$import sys"])
            check_settings({"brand_new": "w", "section#y": 3, "alpha": 2}, [base, extra])
            with self.assertRaisesRegex(SettingsError, "b.yaml"):
                check_settings({"brand_nwe": "w"}, [base, extra])
            with self.assertRaisesRegex(FileNotFoundError, "missing.yaml"):
                check_settings({"alpha": 1}, [Path(d) / "missing.yaml"])

    def test_build_network_names_n_attn(self):
        from mstl_monai.networks import build_network

        with self.assertRaisesRegex(ValueError, r"n_attn.*'five'"):
            build_network("resnet18", n_attn="five")


#: overrides that make each config fail fast for a reason other than its settings (no data, no checkpoint, no
#: torchrun): on today's code without the check the run stops there, so the test sees the check or nothing
FAIL_FAST = {
    "train": {"dataset_dir": "/nonexistent/covid-ct"},
    "evaluate": {"dataset_dir": "/nonexistent/covid-ct", "eval_ckpt": "/nonexistent/model.pt"},
    "inference": {"ckpt_path": "/nonexistent/model.pt", "input": "/nonexistent"},
    "stl_n": {"dataset_dir": "/nonexistent/natural"},
    "stl_m": {"dataset_dir": "/nonexistent/cxr"},
    "sstl_m": {"dataset_dir": "/nonexistent/covid-ct", "use_luna16": False},
    "multi_gpu_train": {"dataset_dir": "/nonexistent/covid-ct"},
}


class TestBundleRejectsUnknownOverrides(unittest.TestCase):
    """``python -m monai.bundle run ... --bakbone resnet18`` stops before anything runs, in one line."""

    @parameterized.expand([(k,) for k in CONFIG_SETS])
    def test_misspelt_override(self, name):
        with tempfile.TemporaryDirectory() as d:
            run_dir = Path(d) / "run"
            ov = dict(FAIL_FAST[name], bakbone="resnet18", run_dir=str(run_dir), output_dir=str(run_dir / "out"))
            if name == "inference":
                ov.pop("run_dir")
            proc = run_bundle(CONFIG_SETS[name], ov, check=False, timeout=300)
            self.assertNotEqual(proc.returncode, 0)
            last = proc.stderr.strip().splitlines()[-1]
            self.assertIn("unknown setting 'bakbone'", last, proc.stderr[-3000:])
            self.assertIn("did you mean 'backbone'", last)
            self.assertNotIn("Traceback", proc.stderr)
            self.assertFalse(run_dir.exists(), "nothing is written before the check")

    def test_bad_value_and_nested_ids(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        proc = run_bundle(["train.yaml"],
            {"dataset_dir": "/nonexistent/covid-ct", "n_attn": "five", "train#trainer#max_epoch": 1},
            check=False,
            timeout=300,
        )
        last = proc.stderr.strip().splitlines()[-1]
        self.assertIn("'n_attn' must be a whole number", last, proc.stderr[-3000:])
        self.assertIn("'five'", last)
        self.assertIn("did you mean 'train#trainer#max_epochs'", last)
        # nested ids that exist pass the check: the run goes on and stops at the missing data set instead
        proc = run_bundle(["train.yaml"],
            {
                "dataset_dir": "/nonexistent/covid-ct",
                "run_dir": tmp.name,
                "train#trainer#max_epochs": 1,
                "validate::dataloader::batch_size": 2,
            },
            check=False,
            timeout=300,
        )
        self.assertNotEqual(proc.returncode, 0)
        out = proc.stdout + proc.stderr
        self.assertNotIn("bad override", out)
        self.assertIn("/nonexistent/covid-ct", out)


class TestCommandLine(unittest.TestCase):
    """The hook reads the run's config files and overrides from the command line it is given (no stack walking)."""

    def setUp(self):
        import monai.bundle.scripts

        self.main = str(Path(monai.bundle.scripts.__file__).with_name("__main__.py"))

    def test_misspelt_override_on_the_command_line_stops_with_a_suggestion(self):
        from mstl_monai.utils.settings import check_overrides

        argv = [self.main, "run", "--config_file", str(_files("evaluate")), "--epochs", "3",
                "--bakbone", "resnet18", "--meta_file", str(CONFIGS / "metadata.json")]
        with self.assertRaises(SystemExit) as cm:
            check_overrides(argv)
        self.assertRegex(str(cm.exception), r"^bad override: unknown setting 'bakbone' \(not in train.yaml \+ "
                                            r"evaluate.yaml\): did you mean 'backbone'\?$")
        # --key=value, the run id as an option, a file list given as one path
        argv = [self.main, "run", "--run_id", "run", f"--config_file={CONFIGS / 'train.yaml'}", "--epoch=3"]
        with self.assertRaisesRegex(SystemExit, "'epoch' .*did you mean 'epochs'"):
            check_overrides(argv)
        check_overrides([self.main, "run", "run", "--config_file", str(CONFIGS / "train.yaml"), "--epochs", "3"])

    def test_other_programs_are_not_checked(self):
        from mstl_monai.utils.settings import bundle_command_line, check_overrides

        self.assertIsNone(bundle_command_line(["/usr/bin/monailabel", "start_server", "--bakbone", "x"]))
        self.assertIsNone(bundle_command_line([self.main, "verify_metadata", "--bakbone", "x"]))
        with self.assertLogs("mstl_monai.utils.settings", "INFO") as logs:
            check_overrides(["/usr/bin/monailabel", "start_server"])
        self.assertIn("overrides not checked", logs.output[0])


if __name__ == "__main__":
    unittest.main()
