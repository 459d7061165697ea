"""``--publish`` replaces a chain's published folder atomically: a run killed at any moment leaves the complete old
or the complete new folder, and the next run restores or cleans what a killed publish left behind."""

from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
import tempfile
import unittest
from pathlib import Path
from unittest import mock

from tests.engines.test_pipeline_reuse import run_main, write_cfg


class Killed(BaseException):
    """A kill at this moment (not an Exception: nothing may catch it)."""


def digest(folder: Path) -> dict:
    if not folder.is_dir():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


class TestAtomicPublish(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        self.args = ["--repo-root", str(self.root), "--config", str(self.root / "pipe.yaml")]
        # published: epochs 2; then epochs 3 trained in runs/ but not published yet
        write_cfg(self.root)
        run_main(*self.args, "--publish")
        write_cfg(self.root, {"finetune": {"epochs": 3, "learning_rate": 0.01}})
        run_main(*self.args)
        self.target = self.root / "results" / "x" / "a"
        self.old = digest(self.target)
        self.assertEqual(set(self.old), {"chain.json", "metrics.json", "predictions.csv", "timing.json"})
        keep = self.root / "keep"
        shutil.copytree(self.target, keep)
        run_main(*self.args, "--publish")
        self.new = digest(self.target)
        self.assertNotEqual(self.new["metrics.json"], self.old["metrics.json"])
        self.assertNotEqual(self.new["chain.json"], self.old["chain.json"])
        shutil.rmtree(self.target)
        shutil.copytree(keep, self.target)

    def tearDown(self):
        self._tmp.cleanup()

    def _publish_killed_at(self, k: int) -> bool:
        """Publish with a kill at the ``k``-th file-system change; whether the kill happened."""
        calls = {"n": 0}

        def wrap(fn):
            def inner(*a, **kw):
                calls["n"] += 1
                if calls["n"] == k:
                    raise Killed(f"killed at change {k}: {fn.__name__}{a[:2]}")
                return fn(*a, **kw)

            return inner

        patches = [
            mock.patch.object(os, "rename", wrap(os.rename)),
            mock.patch.object(os, "replace", wrap(os.replace)),
            mock.patch.object(shutil, "copyfile", wrap(shutil.copyfile)),
            mock.patch.object(shutil, "rmtree", wrap(shutil.rmtree)),
            mock.patch.object(pathlib.Path, "write_text", wrap(pathlib.Path.write_text)),
            mock.patch.object(pathlib.Path, "unlink", wrap(pathlib.Path.unlink)),
        ]
        try:
            with contextlib_exit(patches):
                run_main(*self.args, "--publish")
        except Killed:
            return True
        return False

    def test_a_kill_at_any_moment_leaves_old_or_new(self):
        k, seen = 1, set()
        while True:
            shutil.rmtree(self.root / "results" / "x")
            shutil.copytree(self.root / "keep", self.target)
            killed = self._publish_killed_at(k)
            state = digest(self.target)
            self.assertIn(state, (self.old, self.new, {}), f"kill at change {k}: a mixed folder {state}")
            if state == {}:  # killed between moving the old folder aside and renaming the new one into place
                seen.add("missing")
                out = run_main(*self.args, "--dry-run")  # a dry run reports it and changes nothing
                self.assertRegex(out, r"interrupted publish of .*results/x/a")
                self.assertEqual(digest(self.target), {})
            # the next run restores the old folder or finds the new one, and leaves no debris
            out = run_main(*self.args)
            if state == {}:
                self.assertRegex(out, r"restored .*results/x/a from .*interrupted publish")
            state = digest(self.target)
            self.assertIn(state, (self.old, self.new), f"kill at change {k}: after the next run {state}")
            seen.add("old" if state == self.old else "new")
            self.assertEqual("results for these settings are in" in out, state == self.new)
            self.assertFalse((self.root / "results" / "x" / ".publishing").exists(), f"kill at change {k}: debris")
            run_main(*self.args, "--publish")
            self.assertEqual(digest(self.target), self.new)
            self.assertEqual(sorted(p.name for p in (self.root / "results" / "x").iterdir()), ["a", "summary.md"])
            if not killed:
                break
            k += 1
        self.assertEqual(seen, {"old", "new", "missing"})

    def test_files_of_others_in_the_folder_are_kept(self):
        (self.target / "localization.csv").write_text("x,y\n")
        out = run_main(*self.args, "--publish")
        self.assertEqual((self.target / "localization.csv").read_text(), "x,y\n")
        self.assertIn("kept localization.csv", out)
        self.assertEqual(digest(self.target)["metrics.json"], self.new["metrics.json"])


class contextlib_exit:
    """Enter a list of patches as one context."""

    def __init__(self, patches):
        self.patches = patches

    def __enter__(self):
        for p in self.patches:
            p.start()

    def __exit__(self, *exc):
        for p in reversed(self.patches):
            p.stop()
        return False


if __name__ == "__main__":
    unittest.main()
