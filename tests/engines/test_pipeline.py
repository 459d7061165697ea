"""The pipeline runner's planning: shared stage folders, checkpoint hand-over, config errors, DONE skipping."""

from __future__ import annotations

import json
import tempfile
import unittest
from pathlib import Path

import yaml

from mstl_monai.pipeline import load_pipeline_config, plan_chain, run_chain


def _cfg(tmp: Path, chains: list[dict]) -> dict:
    p = tmp / "grid.yaml"
    p.write_text(yaml.safe_dump({"common": {"backbone": "resnet18"}, "stage_defaults": {"finetune": {"epochs": 3}}, "chains": chains}))
    return load_pipeline_config(p)


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
        with tempfile.TemporaryDirectory() as d:
            cfg = _cfg(Path(d), [{"name": "a", "stages": ["finetune", "evaluate"]}])
            steps = plan_chain(cfg, cfg["chains"][0], d)
            for st in steps:
                Path(st["dir"]).mkdir(parents=True, exist_ok=True)
                (Path(st["dir"]) / "DONE.json").write_text(json.dumps({"chain": "a", "stage": st["stage"], "seconds": 1}))
            rows = run_chain(cfg, cfg["chains"][0], d)  # nothing is run: both stages are done
            self.assertEqual([r["stage"] for r in rows], ["finetune", "evaluate"])


if __name__ == "__main__":
    unittest.main()
