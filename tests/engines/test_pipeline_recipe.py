"""bundle/configs/cpu.yaml is written from configs/cpu_scale.yaml: the file in git is what the config writes, and a
bundle stage merging it takes the settings the pipeline gives that stage."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import yaml
from monai.bundle import ConfigParser

from mstl_monai.pipeline import load_pipeline_config, main
from mstl_monai.pipeline.config import STAGES
from mstl_monai.pipeline.recipe import TRAINING_STAGES, bundle_recipe
from tests.utils import REPO_ROOT

CONFIG = "configs/cpu_scale.yaml"
TARGET = "bundle/configs/cpu.yaml"


def _parsed(files: list[Path], key: str):
    parser = ConfigParser()
    parser.read_config([str(f) for f in files])
    return parser.get_parsed_content(key)


class TestBundleRecipe(unittest.TestCase):
    def test_the_file_in_git_is_what_the_config_writes(self):
        cfg = load_pipeline_config(REPO_ROOT / CONFIG)
        want = bundle_recipe(cfg, CONFIG, TARGET, REPO_ROOT)
        self.assertEqual((REPO_ROOT / TARGET).read_text(), want,
                         f"{TARGET} is stale: run mstl-pipeline --config {CONFIG} --write-bundle-recipe {TARGET}")

    def test_each_stage_takes_the_pipeline_settings(self):
        cfg = load_pipeline_config(REPO_ROOT / CONFIG)
        configs = REPO_ROOT / "bundle" / "configs"
        for stage in TRAINING_STAGES:
            without = [configs / f for f in STAGES[stage][0]]
            own = dict(cfg["common"], **cfg["stage_defaults"].get(stage, {}))
            for key, value in own.items():
                try:
                    _parsed(without, key)
                except KeyError:
                    continue  # a setting this stage's configs do not read
                with self.subTest(stage=stage, key=key):
                    self.assertEqual(_parsed(without + [configs / "cpu.yaml"], key), value)

    def test_written_by_the_cli_with_another_recipe(self):
        with tempfile.TemporaryDirectory() as d:
            cfg = {"bundle_dir": str(REPO_ROOT / "bundle"), "common": {"backbone": "resnet18", "image_size": 96},
                   "stage_defaults": {"finetune": {"epochs": 7}, "stl_n": {"image_size": 64}},
                   "chains": [{"name": "a", "stages": ["finetune", "evaluate"]}]}
            (Path(d) / "p.yaml").write_text(yaml.safe_dump(cfg))
            self.assertEqual(main(["--config", str(Path(d) / "p.yaml"), "--repo-root", d, "--write-bundle-recipe", "r.yaml"]), 0)
            text = (Path(d) / "r.yaml").read_text()
            self.assertIn("image_size: \"${'stl_n': 64}.get(@stage, 96)\"", text)
            self.assertIn("epochs:", text)
            files = [REPO_ROOT / "bundle" / "configs" / "train.yaml", Path(d) / "r.yaml"]
            self.assertEqual(_parsed(files, "epochs"), 7)
            stl_m = [REPO_ROOT / "bundle" / "configs" / f for f in STAGES["stl_m"][0]]
            self.assertEqual(_parsed(stl_m + [Path(d) / "r.yaml"], "epochs"), _parsed(stl_m, "epochs"))

    def test_refuses_to_destroy_a_file(self):
        """The config itself, a file this command did not write, a folder or a path under a file: one line, no write."""
        import contextlib
        import io

        with tempfile.TemporaryDirectory() as d:
            cfg = {"bundle_dir": str(REPO_ROOT / "bundle"), "common": {"image_size": 96},
                   "chains": [{"name": "a", "stages": ["finetune", "evaluate"]}]}
            config = Path(d) / "p.yaml"
            config.write_text(yaml.safe_dump(cfg))
            (Path(d) / "mine.yaml").write_text("keep: me\n")
            (Path(d) / "out").mkdir()
            cases = {"p.yaml": "is the pipeline config itself", "mine.yaml": "is not a recipe this command wrote",
                     "out": "is a folder", "mine.yaml/r.yaml": "is a file, not a folder"}
            for target, message in cases.items():
                with self.subTest(target=target), contextlib.redirect_stderr(io.StringIO()):
                    with self.assertRaises(SystemExit) as cm:
                        main(["--config", str(config), "--repo-root", d, "--write-bundle-recipe", target])
                    self.assertIn(message, str(cm.exception.code))
                    self.assertEqual(len(str(cm.exception.code).splitlines()), 1)
            self.assertEqual(yaml.safe_load(config.read_text()), cfg)
            self.assertEqual((Path(d) / "mine.yaml").read_text(), "keep: me\n")
            args = ["--config", str(config), "--repo-root", d, "--write-bundle-recipe", "r.yaml"]
            self.assertEqual(main(args), 0)
            self.assertEqual(main(args), 0)  # its own recipe is rewritten

    def test_bad_or_missing_config_is_one_line(self):
        with tempfile.TemporaryDirectory() as d:
            png = Path(d) / "x.png"
            png.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
            for path, message in ((png, f"pipeline config {str(png)!r} is not a YAML text file"),
                                  (Path(d) / "missing.yaml", "does not exist")):
                with self.assertRaises(SystemExit) as cm:
                    main(["--config", str(path), "--list"])
                self.assertIn(message, str(cm.exception.code))
                self.assertEqual(len(str(cm.exception.code).splitlines()), 1)


if __name__ == "__main__":
    unittest.main()
