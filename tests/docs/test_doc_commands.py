"""The commands of the README and docs/ that the other documentation tests do not run are checked here, cheaply.

- The README's two commands: the main job's ``mstl-pipeline`` command runs with ``--dry-run`` (its chain exists and
  every stage's settings pass the pipeline's check), its finetune stage writes the checkpoint that the README, the
  MONAI Label page and tests/docs name as the main job's model, and every page names that one model; the test
  command's ``pytest`` collects the whole suite without an error, and both setup scripts exist.
- docs/PIPELINE.md's ``mstl-pipeline`` commands run with ``--dry-run`` (``--list`` as written).
- docs/RESULTS.md's commands: ``mstl-pipeline`` with ``--dry-run``; each script exists and its ``--help`` lists every
  option the command passes (``make_tables.py`` and ``label_fraction_plot.py`` are run in full by
  tests/docs/test_readme_results.py).
- The README's "In your own MONAI pipeline" snippet runs on a real COVID19-CT slice and gives what its comments say.

The bundle blocks are run by tests/docs/test_readme_commands.py, the MONAI Label walkthrough by
tests/docs/test_readme_label.py.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
import unittest
from pathlib import Path

from tests.docs._readme import (
    LABEL_DOC,
    MAIN_JOB_CKPT,
    PIPELINE_DOC,
    README,
    RESULTS_DOC,
    USAGE,
    bash_blocks,
    code_blocks,
    joined_lines,
    run_script,
    venv_bin,
)
from tests.utils import REPO_ROOT, require_real_data

TWO_COMMANDS = "## Install and the two commands"
#: the main job's checkpoint as the pages write it (from the repository root or from bundle/)
CKPT_PATTERN = re.compile(r"(?:\.\./)?(runs/cpu_scale/\S+?/models/model\.pt)")


def strip_comment(cmd: str) -> str:
    """``cmd`` without a trailing ``# comment``."""
    return re.sub(r"\s+#\s.*$", "", cmd).strip()


def dry_run(cmd: str) -> str:
    """An ``mstl-pipeline`` command with ``--dry-run`` added (unless it already has ``--dry-run`` or ``--list``),
    pointed at this interpreter's environment."""
    if not re.search(r"--(dry-run|list)\b", cmd):
        cmd += " --dry-run"
    return venv_bin(re.sub(r"^mstl-pipeline\b", ".venv/bin/mstl-pipeline", cmd))


def check(proc, what: str, test: unittest.TestCase) -> None:
    test.assertEqual(proc.returncode, 0, f"{what} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


class TestTwoCommands(unittest.TestCase):
    def blocks(self) -> list[list[str]]:
        blocks = [joined_lines(b) for b in bash_blocks(README, TWO_COMMANDS)]
        self.assertEqual([len(b) for b in blocks], [1, 1], "the README's two commands should be two one-line blocks")
        return [b[0].split(" && ") for b in blocks]

    def test_main_job_command(self):
        main = self.blocks()[0]
        self.assertEqual(main[0], "bash scripts/setup_env.sh")
        self.assertTrue((REPO_ROOT / "scripts" / "setup_env.sh").is_file())
        (pipeline,) = main[1:]
        self.assertTrue(pipeline.startswith(".venv/bin/mstl-pipeline "), pipeline)
        proc = run_script(dry_run(pipeline), REPO_ROOT, env={"OMP_NUM_THREADS": "1"}, timeout=300)
        check(proc, f"the main job with --dry-run ({pipeline})", self)
        run_dirs = re.findall(r"^\[\S+ \d+/\d+ finetune\] .* --run_dir (\S+)", proc.stdout, re.M)
        self.assertEqual(len(run_dirs), 1, proc.stdout[-3000:])
        ckpt = Path(run_dirs[0]) / "models" / "model.pt"
        self.assertEqual(ckpt, REPO_ROOT / MAIN_JOB_CKPT,
                         "the main job's chain changed: update its model's path in the README, docs/MONAI_LABEL.md "
                         "and tests/docs/_readme.py (MAIN_JOB_CKPT)")
        for page in (README, USAGE, LABEL_DOC):
            named = set(CKPT_PATTERN.findall(page.read_text()))
            self.assertLessEqual(named, {MAIN_JOB_CKPT}, f"{page.name} names another model as the main job's")
        self.assertIn(MAIN_JOB_CKPT, README.read_text())

    def test_test_command(self):
        setup_env, setup_label, pytest = self.blocks()[1]
        for cmd in (setup_env, setup_label):
            script = shlex.split(cmd)
            self.assertEqual(script[0], "bash", cmd)
            self.assertTrue((REPO_ROOT / script[1]).is_file(), cmd)
        self.assertTrue(pytest.startswith(".venv/bin/python -m pytest "), pytest)
        proc = run_script(venv_bin(pytest) + " --collect-only -p no:cacheprovider", REPO_ROOT,
                          env={"OMP_NUM_THREADS": "1"}, timeout=900)
        check(proc, f"collecting the test command's tests ({pytest})", self)
        self.assertRegex(proc.stdout, r"\d+ tests collected")
        self.assertNotIn("error", proc.stdout.splitlines()[-1].lower())


class TestDocsCommands(unittest.TestCase):
    def test_pipeline_doc_commands(self):
        cmds = [strip_comment(c) for c in joined_lines(bash_blocks(PIPELINE_DOC, "# The pipeline runner")[0])]
        self.assertTrue(cmds and all(c.startswith("mstl-pipeline ") for c in cmds), cmds)
        for cmd in cmds:
            proc = run_script(dry_run(cmd), REPO_ROOT, env={"OMP_NUM_THREADS": "1"}, timeout=300)
            check(proc, cmd, self)
            self.assertTrue(proc.stdout.strip(), cmd)

    def test_results_doc_commands(self):
        cmds = [strip_comment(c) for c in joined_lines(bash_blocks(RESULTS_DOC, "## How the numbers were made")[0])]
        self.assertGreaterEqual(len(cmds), 5, cmds)
        for cmd in cmds:
            args = shlex.split(cmd)
            if args[0].endswith("mstl-pipeline"):
                proc = run_script(dry_run(cmd), REPO_ROOT, env={"OMP_NUM_THREADS": "1"}, timeout=300)
                check(proc, cmd, self)
                continue
            self.assertEqual(args[0], ".venv/bin/python", cmd)
            script = REPO_ROOT / args[1]
            self.assertTrue(script.is_file(), cmd)
            proc = run_script(f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} --help", REPO_ROOT,
                              env={"OMP_NUM_THREADS": "1"}, timeout=300)
            check(proc, f"{args[1]} --help", self)
            for opt in (a.split("=")[0] for a in args[2:] if a.startswith("--")):
                self.assertRegex(proc.stdout, rf"{re.escape(opt)}\b", f"{args[1]} has no option {opt}: {cmd}")


class TestTransformsSnippet(unittest.TestCase):
    def test_snippet_runs_on_a_real_slice(self):
        data = require_real_data(self)
        (snippet,) = code_blocks(README, "### In your own MONAI pipeline", "python")
        scope: dict = {}
        exec(compile(snippet, "README.md (In your own MONAI pipeline)", "exec"), scope)
        slice_png = data / "covid-ct" / "CT_COVID" / "2020.03.22.20040782-p25-1542.png"
        out = scope["pipeline"]({"ct": os.fspath(slice_png)})
        ct = out["ct"]
        self.assertEqual((ct.ndim, ct.shape[0]), (3, 1))  # (1, H, W)
        self.assertGreaterEqual(float(ct.min()), 0.0)
        self.assertLessEqual(float(ct.max()), 1.0)
        self.assertEqual(tuple(out["lobes"].shape), (5, 1, 96, 96))
        self.assertEqual(tuple(out["lobes_boxes"].shape), (5, 4))


if __name__ == "__main__":
    unittest.main()
