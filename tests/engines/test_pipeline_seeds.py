"""``seeds:`` in a pipeline config (issue 15 item 1): each chain cell once per seed, seed 0 unchanged."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

import yaml

from mstl_monai.pipeline import check_chains, load_pipeline_config, plan_chain
from tests.utils import REPO_ROOT


def _cfg(tmp: Path, **body) -> dict:
    p = tmp / "grid.yaml"
    base = {"bundle_dir": str(REPO_ROOT / "bundle"), "common": {"backbone": "resnet18", "seed": 0}}
    p.write_text(yaml.safe_dump(dict(base, **body)))
    return load_pipeline_config(p)


class TestSeeds(unittest.TestCase):
    def test_each_cell_once_per_seed(self):
        with tempfile.TemporaryDirectory() as d:
            grid = {"backbones": ["resnet18"], "n_attn": [0], "stage_sets": ["none", "stl_m+sstl_m"]}
            cfg = _cfg(Path(d), grid=grid, seeds=[0, 1, 2])
            names = [c["name"] for c in cfg["chains"]]
            self.assertEqual(
                names,
                ["r18_base_scratch", "r18_base_scratch_s1", "r18_base_scratch_s2",
                 "r18_base_stlm_sstl_ours", "r18_base_stlm_sstl_ours_s1", "r18_base_stlm_sstl_ours_s2"],
            )
            plain = _cfg(Path(d), grid=grid)
            self.assertEqual(cfg["chains"][0], plain["chains"][0])  # seed 0: the chain as before (results stay valid)
            s2 = cfg["chains"][5]
            self.assertEqual(s2["overrides"]["seed"], 2)
            self.assertEqual(check_chains(cfg, cfg["chains"], REPO_ROOT), [])  # every stage takes `seed`
            p0, p2 = plan_chain(cfg, cfg["chains"][3], d), plan_chain(cfg, s2, d)
            self.assertEqual([s["dir"] for s in p0], [s["dir"] for s in plan_chain(plain, plain["chains"][1], d)])
            self.assertIn("resnet18_attn0_seed2", p2[0]["dir"])
            self.assertNotIn("seed", p0[0]["dir"])
            for step in p2:  # every stage of the seed-2 chain runs with seed 2, in its own folders
                self.assertEqual(step["overrides"]["seed"], 2)
                self.assertIn("resnet18_attn0_seed2", step["dir"])

    def test_bad_seeds_and_explicit_seed(self):
        with tempfile.TemporaryDirectory() as d:
            chains = [{"name": "a", "stages": ["finetune", "evaluate"]}, {"name": "b", "overrides": {"seed": 7}, "stages": ["finetune", "evaluate"]}]
            cfg = _cfg(Path(d), chains=chains, seeds=[0, 3])
            self.assertEqual([c["name"] for c in cfg["chains"]], ["a", "a_s3", "b"])
            for bad in ([], [1, 1], ["x"], [-1], 1.5):
                with self.assertRaisesRegex(ValueError, "seeds"):
                    _cfg(Path(d), chains=chains, seeds=bad)


if __name__ == "__main__":
    unittest.main()
