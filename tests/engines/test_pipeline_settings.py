"""The pipeline runner checks settings before anything trains (issue 11 items 3, 8) and keeps the published results in
git apart from a user's runs (issue 11 item 7, issue 12 item 1)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import tempfile
import unittest
from pathlib import Path

import yaml
from parameterized import parameterized

from mstl_monai.pipeline import load_pipeline_config, main, plan_chain
from mstl_monai.pipeline.done import stage_records, with_ids
from tests.utils import REPO_ROOT

BUNDLE = str(REPO_ROOT / "bundle")


def _write(tmp: Path, body: dict) -> Path:
    p = tmp / "pipe.yaml"
    p.write_text(yaml.safe_dump(dict({"bundle_dir": BUNDLE, "output_root": "runs/x", "results_dir": "results/x"}, **body)))
    return p


def _main(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(list(argv))
    return out.getvalue()


FT_EVAL = ["finetune", "evaluate"]


class TestSettingsCheckedFirst(unittest.TestCase):
    @parameterized.expand(
        [
            ("n_attn_3", {"overrides": {"n_attn": 3}}, r"n_attn must be one of \[0, 1, 5\].*got 3"),
            ("n_attn_word", {"overrides": {"n_attn": "five"}}, r"n_attn.*got 'five'"),
            ("misspelt_chain_override", {"overrides": {"bakbone": "resnet18"}}, r"unknown setting 'bakbone'.*did you mean 'backbone'"),
            ("unknown_backbone", {"overrides": {"backbone": "resnet19"}}, r"unknown backbone 'resnet19'"),
            (
                "misspelt_stage_override",
                {"stages": [{"stage": "finetune", "overrides": {"epoch": 1}}, "evaluate"]},
                r"unknown setting 'epoch'.*did you mean 'epochs'.*a/finetune",
            ),
            ("bad_value_type", {"overrides": {"learning_rate": "fast"}}, r"'learning_rate' must be a number"),
        ]
    )
    def test_dry_run_rejects(self, _, chain_part, pattern):
        with tempfile.TemporaryDirectory() as d:
            good = {"name": "first_ok", "stages": FT_EVAL}
            bad = dict({"name": "a", "stages": FT_EVAL}, **chain_part)
            cfg = _write(Path(d), {"common": {"backbone": "resnet18"}, "chains": [good, bad]})
            for extra in (["--dry-run"], []):
                out = io.StringIO()
                with self.assertRaisesRegex(SystemExit, pattern), contextlib.redirect_stdout(out):
                    main(["--config", str(cfg), "--repo-root", d] + extra)
                self.assertNotIn("first_ok 1/2", out.getvalue(), "nothing runs, not even the chains before it")
            self.assertFalse((Path(d) / "runs").exists())

    def test_misspelt_common_and_stage_default(self):
        with tempfile.TemporaryDirectory() as d:
            cfg = _write(Path(d), {"common": {"n_atn": 5}, "chains": [{"name": "a", "stages": FT_EVAL}]})
            with self.assertRaisesRegex(SystemExit, r"unknown setting 'n_atn'.*did you mean 'n_attn'"):
                _main("--config", str(cfg), "--repo-root", d, "--dry-run")
            cfg = _write(Path(d), {"stage_defaults": {"finetune": {"epoch": 1}}, "chains": [{"name": "a", "stages": FT_EVAL}]})
            with self.assertRaisesRegex(SystemExit, r"unknown setting 'epoch'.*did you mean 'epochs'"):
                _main("--config", str(cfg), "--repo-root", d, "--dry-run")

    def test_shipped_configs_pass(self):
        from mstl_monai.pipeline import check_chains

        for name in ("cpu_scale", "paper_scale"):
            cfg = load_pipeline_config(REPO_ROOT / "configs" / f"{name}.yaml")
            self.assertEqual(check_chains(cfg, cfg["chains"], REPO_ROOT), [], name)

    @parameterized.expand(
        [
            ("stages_as_text", {"chains": [{"name": "a", "stages": "finetune"}]}, r"chain a: 'stages' must be a list.*'finetune'"),
            ("chain_key", {"chains": [{"name": "a", "overide": {"n_attn": 5}, "stages": FT_EVAL}]}, r"unknown key 'overide'.*'overrides'"),
            ("top_key", {"stage_default": {}, "chains": [{"name": "a", "stages": FT_EVAL}]}, r"unknown key 'stage_default'.*'stage_defaults'"),
            ("default_stage", {"stage_defaults": {"fintune": {}}, "chains": [{"name": "a", "stages": FT_EVAL}]}, r"unknown stage 'fintune'.*'finetune'"),
            ("step_key", {"chains": [{"name": "a", "stages": [{"stage": "finetune", "overides": {}}, "evaluate"]}]}, r"unknown key 'overides'"),
            ("grid_n_attn", {"grid": {"backbones": ["resnet18"], "n_attn": [0, 3], "stage_sets": ["none"]}}, r"n_attn.*got 3"),
        ]
    )
    def test_config_mistakes(self, _, body, pattern):
        with tempfile.TemporaryDirectory() as d:
            cfg = _write(Path(d), body)
            with self.assertRaisesRegex(ValueError, pattern):
                load_pipeline_config(cfg)
            with self.assertRaisesRegex(SystemExit, pattern):
                _main("--config", str(cfg), "--repo-root", d, "--dry-run")

    def test_constants_match_the_networks(self):
        from mstl_monai.networks import BACKBONES as ENGINE_BACKBONES
        from mstl_monai.networks.nets.attentive_resnet import ATTN_STAGE_COUNTS
        from mstl_monai.pipeline import ATTN_COUNTS, BACKBONES

        self.assertEqual(tuple(ATTN_COUNTS), tuple(sorted(ATTN_STAGE_COUNTS)))
        self.assertEqual(tuple(BACKBONES), tuple(ENGINE_BACKBONES))


def _metrics(acc: float) -> dict:
    return {"accuracy": {"value": acc, "ci_low": acc - 0.05, "ci_high": acc + 0.05}, "n": 203}


def _tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


class TestPublishedResults(unittest.TestCase):
    """A run writes to the run folder; results/ (kept in git) changes only with --publish and keeps every chain."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        chains = [{"name": n, "overrides": {"n_attn": k}, "stages": FT_EVAL} for n, k in (("a", 0), ("b", 1), ("c", 5))]
        self.cfg_path = _write(self.root, {"common": {"backbone": "resnet18"}, "chains": chains})
        self.cfg = load_pipeline_config(self.cfg_path)
        # published results of a and b, made with these settings (as a clone from git has them)
        for chain, acc in zip(self.cfg["chains"][:2], (0.60, 0.70)):
            out = self.root / "results" / "x" / chain["name"]
            out.mkdir(parents=True)
            (out / "metrics.json").write_text(json.dumps(_metrics(acc)))
            saved = {"chain": chain, "common": self.cfg["common"], "stage_defaults": {}, "spec_version": 2}
            (out / "chain.json").write_text(json.dumps(saved))
            (out / "timing.json").write_text(json.dumps({"finetune": 100.0, "evaluate": 5.0}))
        (self.root / "results" / "x" / "summary.md").write_text("published summary\n")
        # b trained again here: its stages are done in runs/ (for these settings) with a new evaluation
        steps = plan_chain(self.cfg, self.cfg["chains"][1], self.root)
        ids: list = []
        for step, record in zip(steps, stage_records(steps, (self.root / "runs" / "x").resolve())):
            Path(step["dir"]).mkdir(parents=True, exist_ok=True)
            if "metrics" in step:
                Path(step["metrics"]).parent.mkdir(parents=True, exist_ok=True)
                Path(step["metrics"]).write_text(json.dumps(_metrics(0.80)))
            done = dict(with_ids(record, ids), seconds=42.0, id=f"run-of-{step['stage']}")
            (Path(step["dir"]) / "DONE.json").write_text(json.dumps(done))
            ids.append(done["id"])

    def tearDown(self):
        self._tmp.cleanup()

    def test_rerun_leaves_published_results_alone(self):
        published = self.root / "results" / "x"
        before = _tree_digest(published)
        out = _main("--config", str(self.cfg_path), "--repo-root", str(self.root), "--chains", "b", "--rerun")
        self.assertEqual(_tree_digest(published), before, "results/ (kept in git) must not change without --publish")
        local = self.root / "runs" / "x" / "results" / "b"
        self.assertEqual(json.loads((local / "metrics.json").read_text())["accuracy"]["value"], 0.80)
        self.assertTrue((local / "chain.json").is_file() and (local / "timing.json").is_file())
        # the summary of the run folder holds every chain with results: b from this run, a from results/ (marked)
        summary = (self.root / "runs" / "x" / "summary.md").read_text()
        self.assertIn("| b | 84 | 80.0", summary)
        self.assertIn("| a * | 105 | 60.0", summary)
        self.assertNotIn("| c |", summary)  # no results for c
        self.assertIn("published results in results/x", summary)
        self.assertIn("| b | 84 | 80.0", out)  # printed too
        self.assertIn(str(local.parent), out)

    def test_publish_updates_that_chain_and_keeps_the_others(self):
        _main("--config", str(self.cfg_path), "--repo-root", str(self.root), "--chains", "b", "--rerun", "--publish")
        published = self.root / "results" / "x"
        self.assertEqual(json.loads((published / "b" / "metrics.json").read_text())["accuracy"]["value"], 0.80)
        self.assertEqual(json.loads((published / "a" / "metrics.json").read_text())["accuracy"]["value"], 0.60)
        lines = (published / "summary.md").read_text().splitlines()
        self.assertEqual([ln.split("|")[1].strip() for ln in lines[2:]], ["a", "b"])  # every published chain, config order
        self.assertNotIn("*", "".join(lines))

    def test_skipping_published_chains_still_works(self):
        out = _main("--config", str(self.cfg_path), "--repo-root", str(self.root), "--chains", "a", "--dry-run")
        self.assertIn("results for these settings are in", out)

    @parameterized.expand([("comma", ","), ("empty", ""), ("spaces", " , ")])
    def test_empty_chain_list_is_an_error(self, _, chains):
        before = _tree_digest(self.root / "results" / "x")
        with self.assertRaisesRegex(SystemExit, "names no chain"):
            _main("--config", str(self.cfg_path), "--repo-root", str(self.root), "--chains", chains)
        self.assertEqual(_tree_digest(self.root / "results" / "x"), before)
        self.assertFalse((self.root / "runs" / "x" / "summary.md").exists())

    def test_published_summary_is_rebuilt_from_every_chain(self):
        """The committed results/cpu_scale/summary.md is what --publish rebuilds from results/cpu_scale/*/."""
        from mstl_monai.pipeline import summary_table

        cfg = load_pipeline_config(REPO_ROOT / "configs" / "cpu_scale.yaml")
        table, _ = summary_table(cfg, REPO_ROOT, published_only=True)
        self.assertEqual(table + "\n", (REPO_ROOT / "results" / "cpu_scale" / "summary.md").read_text())


if __name__ == "__main__":
    unittest.main()


class TestStageProgress(unittest.TestCase):
    def test_epoch_eta_and_times(self):
        import io

        from mstl_monai.pipeline import StageProgress, _cmd_epochs, _hms

        self.assertEqual(_cmd_epochs(["python", "-m", "x", "--epochs", "40", "--seed", "0"]), 40)
        self.assertIsNone(_cmd_epochs(["python", "--n_bootstrap", "1000"]))
        self.assertEqual(_hms(75), "1m15s")
        self.assertEqual(_hms(3725), "1h02m05s")
        buf = io.StringIO()
        p = StageProgress("[c 1/3 finetune]", 40, t0=100.0, out=buf)
        line = "2026-11-30 10:00:00,000 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[4] Complete. Time taken: 00:00:10"
        self.assertIsNone(p.update("2026 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[4] Complete."))
        # resumed at epoch 4: one epoch done in this run in 10 s, 36 left -> ETA 6 min
        self.assertEqual(p.update(line, now=110.0), "[c 1/3 finetune] epoch 4/40, elapsed 0m10s, ETA 6m00s")
        self.assertIn("epoch 4/40", buf.getvalue())
