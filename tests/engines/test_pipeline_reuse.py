"""A stage is done only for the exact settings it ran with: ``DONE.json`` records them, a rerun with other settings
trains again (saying which keys differ), published results are compared with the full resolved settings, and two
chains of one config may not share a stage folder with other settings."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import yaml

from mstl_monai.pipeline import check_chains, load_pipeline_config, main, plan_chain, results_up_to_date
from tests.engines._fake_bundle import accuracy, fake_bundle
from tests.utils import REPO_ROOT

BUNDLE = str(REPO_ROOT / "bundle")
FT_EVAL = ["finetune", "evaluate"]


def write_cfg(root: Path, stage_defaults: dict | None = None, chains: list | None = None, **extra) -> Path:
    """A pipeline config in ``root`` (runs in ``root/runs/x``, published results in ``root/results/x``)."""
    body = {
        "bundle_dir": BUNDLE,
        "output_root": "runs/x",
        "results_dir": "results/x",
        "common": {"backbone": "resnet18", "n_attn": 0},
        "stage_defaults": stage_defaults if stage_defaults is not None else {"finetune": {"epochs": 2, "learning_rate": 0.01}},
        "chains": chains or [{"name": "a", "stages": FT_EVAL}],
    }
    p = root / "pipe.yaml"
    p.write_text(yaml.safe_dump(dict(body, **extra)))
    return p


def run_main(*argv: str) -> str:
    """``mstl-pipeline`` with the fake bundle; its printed output."""
    out = io.StringIO()
    with fake_bundle(), contextlib.redirect_stdout(out):
        main(list(argv))
    return out.getvalue()


def published_acc(root: Path, chain: str = "a") -> float:
    return json.loads((root / "results" / "x" / chain / "metrics.json").read_text())["accuracy"]["value"]


class TestDoneOnlyForItsSettings(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        self.args = ["--repo-root", str(self.root), "--config", str(self.root / "pipe.yaml")]

    def tearDown(self):
        self._tmp.cleanup()

    def _finetune_dir(self) -> Path:
        cfg = load_pipeline_config(self.root / "pipe.yaml")
        return Path(plan_chain(cfg, cfg["chains"][0], self.root)[0]["dir"])

    def test_changed_stage_defaults_train_again(self):
        write_cfg(self.root)
        out = run_main(*self.args, "--publish")
        self.assertEqual(published_acc(self.root), accuracy({"epochs": 2, "learning_rate": 0.01}))
        write_cfg(self.root, {"finetune": {"epochs": 3, "learning_rate": 0.05}})
        out = run_main(*self.args, "--publish")
        self.assertNotIn("already done", out)
        self.assertRegex(out, r"epochs 2 -> 3")
        self.assertRegex(out, r"learning_rate 0\.01 -> 0\.05")
        self.assertIn("training it again", out)
        # the published files are those of the new settings, and say so
        self.assertEqual(published_acc(self.root), accuracy({"epochs": 3, "learning_rate": 0.05}))
        saved = json.loads((self.root / "results" / "x" / "a" / "chain.json").read_text())
        self.assertEqual(saved["stage_defaults"]["finetune"]["epochs"], 3)
        ft = self._finetune_dir()
        done = json.loads((ft / "DONE.json").read_text())
        self.assertEqual((done["settings"]["epochs"], done["settings"]["learning_rate"]), (3, 0.05))
        self.assertIn("> epochs: 3", (ft / "stage.log").read_text())
        self.assertNotIn("> epochs: 2", (ft / "stage.log").read_text())
        # the old stage folder is kept aside, not resumed from
        old = [p for p in ft.parent.iterdir() if p.name.startswith("finetune.old-")]
        self.assertEqual(len(old), 1)
        self.assertIn("> epochs: 2", (old[0] / "stage.log").read_text())
        # the same settings again (--rerun: not from results/): done, nothing trains
        out = run_main(*self.args, "--rerun")
        self.assertRegex(out, r"finetune\] already done")
        self.assertRegex(out, r"evaluate\] already done")

    def test_chain_and_stage_override_changes_count_too(self):
        write_cfg(self.root)
        run_main(*self.args)
        write_cfg(self.root, chains=[{"name": "a", "overrides": {"weight_decay": 0.001}, "stages": FT_EVAL}])
        out = run_main(*self.args)
        self.assertRegex(out, r"weight_decay \(not set\) -> 0\.001")
        self.assertNotIn("already done", out)
        # an evaluate override changes only the evaluation (its own folder name), a finetune upstream change both
        write_cfg(self.root, chains=[{"name": "a", "stages": [{"stage": "finetune", "overrides": {"epochs": 5}}, "evaluate"]}])
        out = run_main(*self.args)
        self.assertNotIn("already done", out)

    def test_unfinished_stage_resumes_only_for_its_settings(self):
        write_cfg(self.root)
        with mock.patch.dict(os.environ, {"FAKE_STAGE_FAIL": "finetune"}), self.assertRaisesRegex(RuntimeError, "exit code 1"):
            run_main(*self.args)
        ft = self._finetune_dir()
        self.assertTrue((ft / "SETTINGS.json").is_file() and not (ft / "DONE.json").exists())
        out = run_main(*self.args)  # the same settings: it resumes in place
        self.assertNotIn("starting it over", out)
        self.assertEqual([p.name for p in ft.parent.iterdir() if ".old-" in p.name], [])
        self.assertTrue((ft / "DONE.json").is_file())
        (ft / "DONE.json").unlink()  # stopped again (as if killed) before it finished
        write_cfg(self.root, {"finetune": {"epochs": 3, "learning_rate": 0.01}})
        out = run_main(*self.args)  # other settings: not resumed from, started over in a fresh folder
        self.assertRegex(out, r"finetune\] .*finetune holds an unfinished run with other settings \(epochs 2 -> 3\): starting")
        self.assertEqual(len([p for p in ft.parent.iterdir() if p.name.startswith("finetune.old-")]), 1)
        self.assertEqual(json.loads((ft / "DONE.json").read_text())["settings"]["epochs"], 3)
        self.assertNotIn("> epochs: 2", (ft / "stage.log").read_text())

    def test_dry_run_says_what_would_train_and_changes_nothing(self):
        write_cfg(self.root)
        run_main(*self.args)
        before = sorted(str(p) for p in self.root.rglob("*"))
        write_cfg(self.root, {"finetune": {"epochs": 3, "learning_rate": 0.01}})
        out = run_main(*self.args, "--dry-run")
        self.assertRegex(out, r"finetune\] .*was trained with other settings \(epochs 2 -> 3\): would train it again")
        self.assertRegex(out, r"evaluate\] .*finetune would be trained first\): would train it again")
        self.assertEqual(sorted(str(p) for p in self.root.rglob("*")), before)

    def test_records_of_older_versions_are_not_taken_as_done(self):
        write_cfg(self.root)
        cfg = load_pipeline_config(self.root / "pipe.yaml")
        for step in plan_chain(cfg, cfg["chains"][0], self.root):  # DONE.json as the code before this check wrote it
            Path(step["dir"]).mkdir(parents=True, exist_ok=True)
            (Path(step["dir"]) / "DONE.json").write_text(json.dumps({"chain": "a", "stage": step["stage"], "seconds": 1}))
        out = run_main(*self.args)
        self.assertNotIn("already done", out)
        self.assertIn("no settings recorded", out)
        self.assertEqual(json.loads((self._finetune_dir() / "DONE.json").read_text())["settings"]["epochs"], 2)

    def test_upstream_trained_again_invalidates_downstream(self):
        write_cfg(self.root)
        run_main(*self.args)
        ft = self._finetune_dir()
        (ft / "DONE.json").unlink()  # the finetune trains again (e.g. its DONE.json deleted by hand)
        out = run_main(*self.args)
        self.assertRegex(out, r"evaluate\] .*finetune was trained again")
        self.assertNotIn("already done", out)

    def test_published_results_are_not_refreshed_from_runs_of_other_settings(self):
        write_cfg(self.root)
        run_main(*self.args, "--publish")
        before = published_acc(self.root)
        write_cfg(self.root, {"finetune": {"epochs": 3, "learning_rate": 0.01}})
        run_main(*self.args)  # runs/ now holds epochs 3, results/ still epochs 2
        write_cfg(self.root)  # back to the published settings
        out = run_main(*self.args, "--publish")
        self.assertIn("results for these settings are in", out)
        self.assertEqual(published_acc(self.root), before)
        local = self.root / "runs" / "x" / "results" / "a" / "metrics.json"
        self.assertEqual(json.loads(local.read_text())["accuracy"]["value"], accuracy({"epochs": 3, "learning_rate": 0.01}))

    def test_chains_sharing_a_folder_with_other_settings_are_refused(self):
        chains = [{"name": "a", "stages": FT_EVAL}, {"name": "fast", "overrides": {"learning_rate": 0.05}, "stages": FT_EVAL}]
        write_cfg(self.root, chains=chains)
        cfg = load_pipeline_config(self.root / "pipe.yaml")
        problems = check_chains(cfg, cfg["chains"], self.root)
        self.assertEqual(len(problems), 1, problems)
        self.assertRegex(problems[0], r"chains a and fast .*resnet18_attn0/finetune.*learning_rate 0\.01 vs 0\.05")
        for only in ([], ["--chains", "a"]):  # also when running one of them: they would take turns
            with self.assertRaisesRegex(SystemExit, "learning_rate"):
                run_main(*self.args, "--dry-run", *only)
        self.assertEqual(check_chains(cfg, cfg["chains"][:1], self.root), [])


class TestPublishedSettings(unittest.TestCase):
    def test_config_level_pretrained_counts(self):
        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            for f in ("a.pth", "b.pth"):
                (root / f).write_text("weights")
            write_cfg(root, pretrained="a.pth")
            args = ["--repo-root", d, "--config", str(root / "pipe.yaml")]
            run_main(*args, "--publish")
            cfg = load_pipeline_config(root / "pipe.yaml")
            self.assertTrue(results_up_to_date(cfg, cfg["chains"][0], root))
            saved = json.loads((root / "results" / "x" / "a" / "chain.json").read_text())
            self.assertEqual(saved["pretrained"], "a.pth")
            write_cfg(root, pretrained="b.pth")
            cfg = load_pipeline_config(root / "pipe.yaml")
            self.assertFalse(results_up_to_date(cfg, cfg["chains"][0], root))
            write_cfg(root, {"finetune": {"epochs": 2, "learning_rate": 0.05}}, pretrained="a.pth")
            cfg = load_pipeline_config(root / "pipe.yaml")
            self.assertFalse(results_up_to_date(cfg, cfg["chains"][0], root))

    def test_committed_cpu_scale_results_still_count(self):
        """Every chain published in results/cpu_scale (records of the version before the resolved settings were
        saved) is up to date for configs/cpu_scale.yaml as it stands."""
        cfg = load_pipeline_config(REPO_ROOT / "configs" / "cpu_scale.yaml")
        published = [c for c in cfg["chains"] if (REPO_ROOT / cfg["results_dir"] / c["name"] / "chain.json").is_file()]
        self.assertGreater(len(published), 60)
        stale = [c["name"] for c in published if not results_up_to_date(cfg, c, REPO_ROOT)]
        self.assertEqual(stale, [])
        changed = dict(cfg, stage_defaults=dict(cfg["stage_defaults"], finetune=dict(cfg["stage_defaults"]["finetune"], epochs=41)))
        self.assertFalse(results_up_to_date(changed, published[0], REPO_ROOT))


class TestWithTheBundle(unittest.TestCase):
    """The case as a user meets it, with the real bundle (tiny network, phantom images): stage_defaults changed
    from epochs 1, lr 0.01 to epochs 2, lr 0.05 trains again, and what is published is what ran."""

    def test_changed_defaults_with_the_bundle(self):
        from tests.bundle._bundle_utils import TINY, phantom_dataset

        with tempfile.TemporaryDirectory() as d:
            root = Path(d)
            common = dict(TINY, dataset_dir=str(phantom_dataset(root, n_per_class=4)), n_attn=0)
            ev = {"n_bootstrap": 20}
            args = ["--repo-root", d, "--config", str(root / "pipe.yaml"), "--publish"]
            write_cfg(root, {"finetune": {"epochs": 1, "learning_rate": 0.01}, "evaluate": ev}, common=common)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                main(args)
            write_cfg(root, {"finetune": {"epochs": 2, "learning_rate": 0.05}, "evaluate": ev}, common=common)
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                main(args)
            self.assertNotIn("already done", out.getvalue())
            self.assertIn("epochs 1 -> 2, learning_rate 0.01 -> 0.05): training it again", out.getvalue())
            cfg = load_pipeline_config(root / "pipe.yaml")
            ft = Path(plan_chain(cfg, cfg["chains"][0], root)[0]["dir"])
            log = (ft / "stage.log").read_text()
            self.assertIn("Epoch[2] Complete", log)
            self.assertNotIn("Epoch[3]", log)
            saved = json.loads((root / "results" / "x" / "a" / "chain.json").read_text())
            self.assertEqual(saved["resolved"][0]["settings"]["epochs"], 2)
            self.assertEqual(json.loads((ft / "DONE.json").read_text())["settings"]["learning_rate"], 0.05)
            self.assertTrue(results_up_to_date(cfg, cfg["chains"][0], root))


class TestConfigIsCode(unittest.TestCase):
    def test_loader_says_values_run_as_python(self):
        doc = " ".join(load_pipeline_config.__doc__.split())
        self.assertIn("evaluated as Python", doc)
        self.assertIn("run only configs you trust", doc.lower())


if __name__ == "__main__":
    unittest.main()
