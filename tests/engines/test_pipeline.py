"""The pipeline runner's planning: shared stage folders, checkpoint hand-over, config errors, DONE skipping, grids."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import unittest
from pathlib import Path

import yaml
from parameterized import parameterized

from mstl_monai.pipeline import (
    SSTL_METHODS,
    expand_grid,
    load_pipeline_config,
    main,
    plan_chain,
    results_up_to_date,
    run_chain,
)
from tests.utils import REPO_ROOT


def _cfg(tmp: Path, chains: list[dict]) -> dict:
    p = tmp / "grid.yaml"
    # the real bundle: a run checks each stage's settings against its config files
    body = {"bundle_dir": str(REPO_ROOT / "bundle"), "common": {"backbone": "resnet18"}, "stage_defaults": {"finetune": {"epochs": 3}}}
    p.write_text(yaml.safe_dump(dict(body, chains=chains)))
    return load_pipeline_config(p)


class TestResultsInGit(unittest.TestCase):
    """Chains whose results/ files (kept in git) match the settings are not trained again, even in a fresh clone."""

    def _publish(self, root: Path, cfg: dict, chain: dict, spec_version: int = 2) -> Path:
        out = root / cfg["results_dir"] / chain["name"]
        out.mkdir(parents=True)
        (out / "metrics.json").write_text(json.dumps({"accuracy": {"value": 0.7, "ci_low": 0.6, "ci_high": 0.8}, "n": 203}))
        saved = {"chain": chain, "common": cfg.get("common", {}), "stage_defaults": cfg.get("stage_defaults", {})}
        if spec_version > 1:
            saved["spec_version"] = spec_version
        (out / "chain.json").write_text(json.dumps(saved))
        (out / "timing.json").write_text(json.dumps({"finetune": 12.5, "evaluate": 1.0}))
        return out

    def test_skip_and_invalidate(self):
        with tempfile.TemporaryDirectory() as d, tempfile.TemporaryDirectory() as other:
            chain = {"name": "a", "overrides": {"n_attn": 5}, "stages": ["finetune", "evaluate"]}
            cfg = _cfg(Path(d), [chain])
            self.assertFalse(results_up_to_date(cfg, chain, d))
            self._publish(Path(d), cfg, chain)
            self.assertTrue(results_up_to_date(cfg, chain, d))
            # nothing in runs/ and no bundle is called: the chain is taken from results/
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rows = run_chain(cfg, chain, d)
            self.assertIn("skipped", buf.getvalue())
            self.assertEqual([r["stage"] for r in rows], ["finetune", "evaluate"])
            self.assertEqual(rows[1]["metrics"]["accuracy"]["value"], 0.7)
            self.assertEqual(rows[0]["seconds"], 12.5)
            # the same settings with the repository somewhere else (a fresh clone) still match
            cfg2 = _cfg(Path(other), [chain])
            self._publish(Path(other), cfg2, chain)
            self.assertTrue(results_up_to_date(cfg2, chain, other))
            # other settings (a stage default, a chain override) do not
            changed = dict(cfg, stage_defaults={"finetune": {"epochs": 4}})
            self.assertFalse(results_up_to_date(changed, chain, d))
            self.assertFalse(results_up_to_date(cfg, dict(chain, overrides={"n_attn": 1}), d))
            # a setting added to the bundle later matches old records (no spec_version) only at their value
            with tempfile.TemporaryDirectory() as old_root:
                old_cfg = _cfg(Path(old_root), [chain])
                self._publish(Path(old_root), old_cfg, chain, spec_version=1)
                self.assertFalse(results_up_to_date(old_cfg, chain, old_root))  # today's bundle default may differ
                for value, match in ((0.0, True), (0.1, False)):
                    pinned = dict(old_cfg, stage_defaults={"finetune": {"epochs": 3, "selection_min_class_fraction": value}})
                    self.assertEqual(results_up_to_date(pinned, chain, old_root), match)
            # --rerun ignores results/
            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                rows = run_chain(cfg, chain, d, dry_run=True, rerun=True)
            self.assertNotIn("results for these settings", buf.getvalue())

    def test_override_files_are_part_of_the_settings(self):
        """A stage merging an override file (mag_sd.yaml) has its own folder and never takes a plain stage's results;
        a result recorded with the switch the file replaced (``mag_sd: true``) is the chain with the file."""
        with tempfile.TemporaryDirectory() as d:
            plain = {"name": "a", "stages": [{"stage": "finetune", "overrides": {"seed": 1}}, "evaluate"]}
            magsd = {"name": "a", "stages": [{"stage": "finetune", "config": ["train.yaml", "mag_sd.yaml"], "overrides": {"seed": 1}}, "evaluate"]}
            cfg = _cfg(Path(d), [magsd])
            steps = plan_chain(cfg, magsd, d)
            self.assertTrue(steps[0]["dir"].endswith("finetune+mag_sd-seed=1"), steps[0]["dir"])
            self.assertNotEqual(steps[0]["dir"], plan_chain(cfg, plain, d)[0]["dir"])
            self._publish(Path(d), cfg, plain)
            self.assertFalse(results_up_to_date(cfg, magsd, d))
        with tempfile.TemporaryDirectory() as d:
            old = {"name": "a", "stages": [{"stage": "finetune", "overrides": {"seed": 1, "mag_sd": True}}, "evaluate"]}
            cfg = _cfg(Path(d), [magsd])
            self._publish(Path(d), cfg, old)
            self.assertTrue(results_up_to_date(cfg, magsd, d))
            self.assertFalse(results_up_to_date(cfg, plain, d))


class TestPlan(unittest.TestCase):
    def test_prefix_sharing_and_handover(self):
        with tempfile.TemporaryDirectory() as d:
            cfg = _cfg(
                Path(d),
                [
                    {"name": "a", "overrides": {"n_attn": 5}, "stages": ["stl_m", "finetune", "evaluate"]},
                    {"name": "b", "overrides": {"n_attn": 5}, "stages": ["stl_m", {"stage": "sstl_m", "overrides": {"method": "moco"}}, "finetune", "evaluate"]},
                ],
            )
            a = plan_chain(cfg, cfg["chains"][0], d)
            b = plan_chain(cfg, cfg["chains"][1], d)
            self.assertEqual(a[0]["dir"], b[0]["dir"])  # the same STL-M run serves both chains
            self.assertTrue(a[0]["dir"].endswith("resnet18_attn5/stl_m"))
            self.assertTrue(b[1]["dir"].endswith("stl_m/sstl_m-moco"))
            # each stage starts from the previous stage's checkpoint
            self.assertEqual(b[2]["overrides"]["pretrained"], b[1]["checkpoint"])
            self.assertEqual(a[1]["overrides"]["pretrained"], a[0]["checkpoint"])
            self.assertEqual(a[0]["overrides"]["pretrained"], "")
            self.assertEqual(a[1]["overrides"]["epochs"], 3)
            self.assertEqual(a[2]["metrics"], str(Path(a[1]["dir"]) / "eval_test" / "metrics.json"))
            cmd = " ".join(a[1]["cmd"])
            self.assertIn("--n_attn 5", cmd)
            self.assertIn("--backbone resnet18", cmd)

    def test_config_errors(self):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(ValueError):
                _cfg(Path(d), [{"name": "x", "stages": ["pretrain"]}])
            with self.assertRaises(KeyError):
                _cfg(Path(d), [{"stages": ["finetune"]}])
            cfg = _cfg(Path(d), [{"name": "x", "stages": ["evaluate"]}])
            with self.assertRaises(ValueError):
                plan_chain(cfg, cfg["chains"][0], d)
            with self.assertRaises(FileNotFoundError):
                load_pipeline_config(Path(d) / "missing.yaml")

    def test_done_stages_are_skipped(self):
        from unittest import mock

        from tests.engines._fake_bundle import fake_bundle

        with tempfile.TemporaryDirectory() as d:
            cfg = _cfg(Path(d), [{"name": "a", "stages": ["finetune", "evaluate"]}])
            with fake_bundle(), contextlib.redirect_stdout(io.StringIO()):
                run_chain(cfg, cfg["chains"][0], d)  # both stages done for these settings
            buf = io.StringIO()
            with mock.patch("subprocess.Popen", side_effect=AssertionError("nothing may run")), contextlib.redirect_stdout(buf):
                rows = run_chain(cfg, cfg["chains"][0], d)  # nothing is run: both stages are done
            self.assertEqual([r["stage"] for r in rows], ["finetune", "evaluate"])
            self.assertEqual(buf.getvalue().count("already done"), 2)


# the 15 chains configs/cpu_scale.yaml listed by hand before it had a grid (results/cpu_scale/<name>/ use these names)
CPU_CHAINS = [
    f"r18_{v}_{s}"
    for v in ("base", "attn1", "attn5")
    for s in ("scratch", "stlm", "stlm_sstl_ours", "stlm_sstl_moco", "stlm_sstl_simclr")
] + [  # STL-N on Tiny ImageNet
    f"r18_{v}_{s}"
    for v in ("base", "attn1", "attn5")
    for s in ("stln", "stln_stlm", "stln_stlm_sstl_ours", "stln_stlm_sstl_moco", "stln_stlm_sstl_simclr")
]


def _grid_cfg(tmp: Path, grid, chains=None) -> dict:
    p = tmp / "grid.yaml"
    body = {"bundle_dir": str(REPO_ROOT / "bundle"), "common": {"backbone": "resnet18"}, "grid": grid}
    if chains is not None:
        body["chains"] = chains
    p.write_text(yaml.safe_dump(body))
    return load_pipeline_config(p)


class TestGrid(unittest.TestCase):
    @parameterized.expand(
        [
            ("scratch", ["none"], ["ours"], ["r18_base_scratch"]),
            ("stlm", ["stl_m"], ["ours"], ["r18_base_stlm"]),
            ("sstl", ["stl_m+sstl_m"], ["moco", "simclr"], ["r18_base_stlm_sstl_moco", "r18_base_stlm_sstl_simclr"]),
            (
                "methods_only_for_sstl",
                ["none", "stl_m"],
                ["ours", "moco", "simclr"],
                ["r18_base_scratch", "r18_base_stlm"],
            ),
            ("default_method", ["stl_m+sstl_m"], None, ["r18_base_stlm_sstl_ours"]),
        ]
    )
    def test_names(self, _, stage_sets, methods, expected):
        grid = {"backbones": ["resnet18"], "n_attn": [0], "stage_sets": stage_sets}
        if methods is not None:
            grid["methods"] = methods
        chains, skipped = expand_grid(grid)
        self.assertEqual([c["name"] for c in chains], expected)
        self.assertEqual(skipped, [])
        for c in chains:
            self.assertEqual(c["stages"][-2:], ["finetune", "evaluate"])

    @parameterized.expand(
        [
            # backbones, n_attn, stage sets, methods, chains, skipped (STL-N unavailable)
            ("cpu", ["resnet18"], [0, 1, 5], ["none", "stl_m", "stl_m+sstl_m"], ["ours", "moco", "simclr"], 15, 0),
            (
                "paper_all",
                ["resnet50", "resnet101"],
                [0, 1, 5],
                ["none", "stl_n", "stl_m", "stl_n+stl_m", "stl_n+stl_m+sstl_m", "stl_m+sstl_m"],
                ["ours", "moco", "simclr"],
                2 * 3 * 5,
                2 * 3 * 5,
            ),
            ("one_method", ["resnet50"], [5], ["stl_n+stl_m+sstl_m", "stl_m+sstl_m"], ["ours"], 1, 1),
        ]
    )
    def test_counts(self, _, backbones, n_attn, stage_sets, methods, n_chains, n_skipped):
        grid = {
            "backbones": backbones,
            "n_attn": n_attn,
            "stage_sets": stage_sets,
            "methods": methods,
            "stl_n": "unavailable",
        }
        chains, skipped = expand_grid(grid)
        self.assertEqual(len(chains), n_chains)
        self.assertEqual(len(skipped), n_skipped)
        self.assertEqual(len({c["name"] for c in chains}), n_chains)  # names are unique

    def test_cpu_scale_config(self):
        cfg = load_pipeline_config(REPO_ROOT / "configs" / "cpu_scale.yaml")
        guarded = ["r18_attn5_scratch_guard", "r18_attn5_stlm_sstl_simclr_guard"]  # hand-listed, before the grid
        vit = ["vit_tiny_base_scratch", "vit_tiny_base_stln", "vit_tiny_base_stln_stlm", "vit_tiny_base_stln_stlm_sstl_ours"]
        lf = [f"r18_base_{arm}_lf{f}" for f in (10, 25, 50) for arm in ("scratch", "stln_stlm_sstl_ours")]
        px = [f"r18_base_stln_stlm_sstl_ours_px{n}" for n in (96, 192, 224)]
        ft_seeds = [f"r18_base_{arm}_robust{s}" for s in ("", "_ft_s1", "_ft_s2", "_ft_s3", "_ft_s4") for arm in ("scratch", "stln_stlm_sstl_ours")]
        magsd = [f"r18_base_stln_stlm_sstl_ours_robust_magsd{s}" for s in ("", "_ft_s1")]
        lf_seeds = [f"r18_base_{arm}_lf{f}_ft_s{s}" for f in (10, 25, 50) for s in (1, 2) for arm in ("scratch", "stln_stlm_sstl_ours")]
        lf_seeds += [f"r18_base_{arm}_ft_s{s}" for s in (1, 2) for arm in ("scratch", "stln", "stln_stlm", "stln_stlm_sstl_ours")]
        main_job = ["r18_attn5_stlm_sstl_ours_robust"]
        # the README's main job: the shipped STL-N weights -> STL-M -> SSTL-M -> finetune (robust), 5 finetune seeds
        shipped = [f"r18_base_stln40_stlm_sstl_ours_robust{s}" for s in ("", "_ft_s1", "_ft_s2", "_ft_s3", "_ft_s4")]
        want = CPU_CHAINS + guarded + vit + lf + px + ft_seeds + magsd + lf_seeds + main_job + shipped
        self.assertEqual(sorted(c["name"] for c in cfg["chains"]), sorted(want))
        steps = plan_chain(cfg, next(c for c in cfg["chains"] if c["name"] == shipped[4]), REPO_ROOT)
        self.assertTrue(steps[0]["dir"].endswith("resnet18_attn0/init-stl_n_resnet18/stl_m"))  # from the shipped weights
        self.assertEqual(steps[0]["overrides"]["pretrained"], str(REPO_ROOT / "bundle" / "models" / "stl_n_resnet18.pt"))
        self.assertTrue(steps[2]["dir"].endswith("sstl_m-ours/finetune-robust_augmentation=True-seed=4"))
        px_steps = plan_chain(cfg, next(c for c in cfg["chains"] if c["name"] == "r18_base_stln_stlm_sstl_ours_px192"), REPO_ROOT)
        # the evaluation runs at the finetune's input size, not the chain's 128 px
        self.assertEqual([(s["overrides"]["image_size"], s["overrides"]["resize_size"]) for s in px_steps[3:]], [(192, 219)] * 2)
        lf_steps = plan_chain(cfg, next(c for c in cfg["chains"] if c["name"] == "r18_base_stln_stlm_sstl_ours_lf25"), REPO_ROOT)
        self.assertTrue(lf_steps[2]["dir"].endswith("resnet18_attn0/stl_n/stl_m/sstl_m-ours"))  # the 100 % chain's stages
        self.assertTrue(lf_steps[3]["dir"].endswith("sstl_m-ours/finetune-label_fraction=0.25"))
        self.assertEqual(lf_steps[3]["overrides"]["label_fraction"], 0.25)
        vit_chain = next(c for c in cfg["chains"] if c["name"] == "vit_tiny_base_stln_stlm")
        vit_steps = plan_chain(cfg, vit_chain, REPO_ROOT)
        self.assertTrue(vit_steps[1]["dir"].endswith("vit_tiny_attn0/stl_n/stl_m"))
        self.assertEqual(vit_steps[1]["overrides"]["learning_rate"], 0.01)  # TL-Med's optimiser in every stage
        chain = next(c for c in cfg["chains"] if c["name"] == "r18_attn5_stlm_sstl_moco")
        self.assertEqual(chain["overrides"], {"backbone": "resnet18", "n_attn": 5})
        self.assertEqual(
            chain["stages"], ["stl_m", {"stage": "sstl_m", "overrides": {"method": "moco"}}, "finetune", "evaluate"]
        )
        steps = plan_chain(cfg, chain, REPO_ROOT)
        self.assertTrue(steps[1]["dir"].endswith("resnet18_attn5/stl_m/sstl_m-moco"))  # shared with the finished runs
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            self.assertEqual(main(["--config", str(REPO_ROOT / "configs" / "cpu_scale.yaml"), "--list"]), 0)
        self.assertEqual(out.getvalue().split(), [c["name"] for c in cfg["chains"]])
        # the STL-N cells train STL-N first, in a folder shared by every chain of that network
        chain = next(c for c in cfg["chains"] if c["name"] == "r18_attn5_stln_stlm_sstl_ours")
        steps = plan_chain(cfg, chain, REPO_ROOT)
        self.assertEqual([s["stage"] for s in steps], ["stl_n", "stl_m", "sstl_m", "finetune", "evaluate"])
        self.assertTrue(steps[0]["dir"].endswith("resnet18_attn5/stl_n"))
        self.assertIn("stl_n.yaml", " ".join(steps[0]["cmd"]))

    def test_paper_scale_config(self):
        cfg = load_pipeline_config(REPO_ROOT / "configs" / "paper_scale.yaml")
        names = [c["name"] for c in cfg["chains"]]
        self.assertEqual(len(names), 61)  # the 60-cell grid + the TL-Med ViT-B/16 chain
        self.assertEqual(cfg["_grid_skipped"], [])
        chain = next(c for c in cfg["chains"] if c["name"] == "r101_attn1_stln_stlm_sstl_simclr")
        self.assertEqual(chain["pretrained"], "resnet101-63fe2227.pth")
        self.assertEqual(chain["stages"][0], "stl_m")
        self.assertNotIn("pretrained", next(c for c in cfg["chains"] if c["name"] == "r50_attn5_stlm"))

    def test_stl_n_unavailable_is_skipped(self):
        with tempfile.TemporaryDirectory() as d:
            grid = {
                "backbones": ["resnet18"],
                "n_attn": [0, 5],
                "stage_sets": ["none", "stl_n", "stl_n+stl_m"],
                "stl_n": {"unavailable": "no ImageNet here"},
            }
            cfg = _grid_cfg(Path(d), grid)
            self.assertEqual([c["name"] for c in cfg["chains"]], ["r18_base_scratch", "r18_attn5_scratch"])
            self.assertEqual(
                [s["name"] for s in cfg["_grid_skipped"]],
                ["r18_base_stln", "r18_base_stln_stlm", "r18_attn5_stln", "r18_attn5_stln_stlm"],
            )
            self.assertEqual({s["reason"] for s in cfg["_grid_skipped"]}, {"no ImageNet here"})
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                main(["--config", str(Path(d) / "grid.yaml"), "--list"])
            self.assertEqual(out.getvalue().split(), ["r18_base_scratch", "r18_attn5_scratch"])
            self.assertIn("STL-N n/a: no ImageNet here", err.getvalue())
            self.assertIn("r18_attn5_stln_stlm", err.getvalue())
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                main(["--config", str(Path(d) / "grid.yaml"), "--dry-run", "--repo-root", d])
            self.assertIn("STL-N n/a: no ImageNet here", out.getvalue())
            with self.assertRaisesRegex(SystemExit, "STL-N n/a"):
                main(["--config", str(Path(d) / "grid.yaml"), "--chains", "r18_base_stln", "--repo-root", d])

    def test_stl_n_pretrained_and_stage(self):
        with tempfile.TemporaryDirectory() as d:
            grid = {
                "backbones": ["resnet18", "resnet50"],
                "n_attn": [1],
                "stage_sets": ["stl_n", "stl_n+stl_m+sstl_m"],
                "methods": ["ours"],
                "stl_n": {"pretrained": {"resnet18": "w/r18.pth", "resnet50": "w/r50.pth"}},
            }
            cfg = _grid_cfg(Path(d), grid)
            by = {c["name"]: c for c in cfg["chains"]}
            self.assertEqual(
                sorted(by),
                ["r18_attn1_stln", "r18_attn1_stln_stlm_sstl_ours", "r50_attn1_stln", "r50_attn1_stln_stlm_sstl_ours"],
            )
            self.assertEqual(by["r50_attn1_stln"]["pretrained"], "w/r50.pth")
            self.assertEqual(by["r50_attn1_stln"]["stages"], ["finetune", "evaluate"])
            steps = plan_chain(cfg, by["r18_attn1_stln_stlm_sstl_ours"], d)
            self.assertTrue(steps[0]["dir"].endswith("resnet18_attn1/init-r18/stl_m"))
            self.assertEqual(steps[0]["overrides"]["pretrained"], str((Path(d) / "w/r18.pth").resolve()))
            chains, _ = expand_grid(dict(grid, stl_n={"stage": "stl_n"}))
            self.assertEqual(
                chains[1]["stages"],
                ["stl_n", "stl_m", {"stage": "sstl_m", "overrides": {"method": "ours"}}, "finetune", "evaluate"],
            )
            self.assertNotIn("pretrained", chains[1])
            with self.assertRaisesRegex(ValueError, "resnet50"):
                expand_grid(dict(grid, stl_n={"pretrained": {"resnet18": "w/r18.pth"}}))
            with self.assertRaisesRegex(ValueError, "stl_n"):
                expand_grid({k: v for k, v in grid.items() if k != "stl_n"})

    def test_dedupe_with_hand_chains(self):
        with tempfile.TemporaryDirectory() as d:
            hand = [
                {
                    "name": "r18_base_stlm",
                    "overrides": {"n_attn": 0, "seed": 7},
                    "stages": ["stl_m", "finetune", "evaluate"],
                },
                {"name": "extra", "stages": ["finetune", "evaluate"]},
            ]
            cfg = _grid_cfg(Path(d), {"backbones": ["resnet18"], "n_attn": [0], "stage_sets": ["none", "stl_m"]}, hand)
            names = [c["name"] for c in cfg["chains"]]
            self.assertEqual(
                names, ["r18_base_stlm", "extra", "r18_base_scratch"]
            )  # hand chains first, then the grid's new ones
            self.assertEqual(cfg["chains"][0]["overrides"]["seed"], 7)  # the hand-listed chain wins
            # a list of grids, overlapping: each name once
            cfg = _grid_cfg(
                Path(d),
                [
                    {"backbones": ["resnet18"], "n_attn": [0], "stage_sets": ["none"]},
                    {"backbones": ["resnet18"], "n_attn": [0, 5], "stage_sets": ["none"]},
                ],
                [],
            )
            self.assertEqual([c["name"] for c in cfg["chains"]], ["r18_base_scratch", "r18_attn5_scratch"])

    @parameterized.expand(
        [
            ("reversed", "stl_m+stl_n"),
            ("unknown", "stl_x"),
            ("twice", "sstl_m+sstl_m"),
            ("typo", "stlm+sstl_m"),
            ("empty", ""),
        ]
    )
    def test_bad_stage_set(self, _, stage_set):
        with tempfile.TemporaryDirectory() as d:
            with self.assertRaises(ValueError) as cm:
                _grid_cfg(Path(d), {"backbones": ["resnet18"], "n_attn": [0], "stage_sets": ["none", stage_set]})
            self.assertIn(repr(stage_set), str(cm.exception))
            self.assertIn("grid", str(cm.exception))

    def test_grid_config_errors(self):
        with tempfile.TemporaryDirectory() as d:
            base = {"backbones": ["resnet18"], "n_attn": [0], "stage_sets": ["stl_m+sstl_m"]}
            with self.assertRaisesRegex(ValueError, "mocov2"):
                _grid_cfg(Path(d), dict(base, methods=["mocov2"]))
            with self.assertRaisesRegex(ValueError, "stage_set"):
                _grid_cfg(Path(d), {"backbones": ["resnet18"], "n_attn": [0], "stage_set": ["none"]})
            with self.assertRaisesRegex(ValueError, "n_attn"):
                _grid_cfg(Path(d), dict(base, n_attn=["five"]))
            with self.assertRaisesRegex(ValueError, "bad stl_n"):
                _grid_cfg(Path(d), dict(base, stl_n="maybe"))
            p = Path(d) / "empty.yaml"
            p.write_text(yaml.safe_dump({"chains": []}))
            with self.assertRaises(ValueError):  # neither chains nor a grid
                load_pipeline_config(p)

    def test_methods_match_the_engine(self):
        from mstl_monai.networks.nets import SSTL_METHODS as ENGINE_METHODS

        self.assertEqual(tuple(SSTL_METHODS), tuple(ENGINE_METHODS))

if __name__ == "__main__":
    unittest.main()
