# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""At the end of a run ``mstl-pipeline`` shows the chains it ran first, each with its test metrics at 0.5 and at the
checkpoint's threshold and where its evaluation is, before the summary of every chain with results."""

from __future__ import annotations

import tempfile
import unittest
from pathlib import Path

from tests.engines._fake_bundle import accuracy
from tests.engines.test_pipeline_reuse import run_main, write_cfg


class TestChainsOfThisRunFirst(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.root = Path(self._tmp.name)
        self.args = ["--repo-root", str(self.root), "--config", str(self.root / "pipe.yaml")]
        def chain(name: str, lr: float) -> dict:  # a finetune folder of its own (its overrides name it)
            return {"name": name, "stages": [{"stage": "finetune", "overrides": {"learning_rate": lr}}, "evaluate"]}

        chains = [chain("old_a", 0.01), chain("old_b", 0.02), chain("old_c", 0.03)]
        write_cfg(self.root, chains=chains)
        run_main(*self.args, "--publish")  # three published chains
        chains.append(chain("mine", 0.04))
        write_cfg(self.root, chains=chains)

    def test_newcomers_chain_comes_first_with_both_thresholds_and_its_log(self):
        out = run_main(*self.args, "--chains", "mine")
        head, sep, summary = out.partition("\nSummary of every chain")
        self.assertTrue(sep, out)
        section = head[head.index("Chains run by this command"):]
        acc = 100 * accuracy({"epochs": 2, "learning_rate": 0.04})
        self.assertRegex(section, r"\nmine \(trained now\)\n")
        self.assertIn(f"at 0.5: acc {acc:.1f} [{acc - 5:.1f}, {acc + 5:.1f}]", section)
        self.assertIn(f"at the checkpoint threshold 0.4375: acc {acc + 2:.1f} [{acc - 3:.1f}, {acc + 7:.1f}]", section)
        log = next((self.root / "runs" / "x").rglob("finetune-learning_rate=0.04/eval_test/stage.log"))
        self.assertIn(f"evaluate: {log}", section)
        self.assertIn("evaluation on 4 test images", log.read_text())
        for name in ("old_a", "old_b", "old_c"):
            self.assertNotIn(name, section)  # only the chains of this command, the others in the summary below
            self.assertIn(name, summary)

    def test_published_chains_are_shown_as_such(self):
        out = run_main(*self.args, "--chains", "old_b")
        section = out[out.index("Chains run by this command"):out.index("\nSummary of every chain")]
        self.assertRegex(section, r"\nold_b \(published results for these settings\)\n")
        self.assertIn(f"published {self.root / 'results' / 'x' / 'old_b' / 'metrics.json'}", section)
        self.assertIn("at the checkpoint threshold 0.4375", section)


if __name__ == "__main__":
    unittest.main()
