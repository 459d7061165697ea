"""The command lines take whole option names only: ``--chain`` is not ``--chains``, and a misspelt option gets the
closest one suggested, exit code 2."""

from __future__ import annotations

import contextlib
import io
import tempfile
import unittest
from pathlib import Path

from parameterized import parameterized

from mstl_monai.pipeline import main
from tests.engines.test_pipeline_reuse import write_cfg


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


class TestPipelineOptions(unittest.TestCase):
    @parameterized.expand(
        [
            ("dryrun", ["--dryrun"], "unknown option --dryrun; did you mean --dry-run?"),
            ("abbreviation", ["--chain", "a"], "unknown option --chain; did you mean --chains?"),
            ("abbreviation_eq", ["--chain=a"], "unknown option --chain; did you mean --chains?"),
            ("prefix", ["--pub"], "unknown option --pub; did you mean --publish?"),
            ("underscore", ["--repo_root", "."], "unknown option --repo_root; did you mean --repo-root?"),
            ("nothing_close", ["--zzzz"], "unknown option --zzzz; the options are"),
        ]
    )
    def test_unknown_option(self, _, argv, message):
        with tempfile.TemporaryDirectory() as d:
            cfg = write_cfg(Path(d))
            code, out, err = _run(["--config", str(cfg), "--repo-root", d, "--list"] + argv)
        self.assertEqual(code, 2)
        self.assertIn(message, err)
        self.assertEqual(out, "", "nothing runs")

    def test_whole_names_still_work(self):
        with tempfile.TemporaryDirectory() as d:
            cfg = write_cfg(Path(d))
            code, out, _ = _run(["--config", str(cfg), "--repo-root", d, "--chains", "a", "--list"])
        self.assertEqual((code, out.split()), (0, ["a"]))


class TestOtherCommandLines(unittest.TestCase):
    def test_no_abbreviations(self):
        from mstl_monai.label.__main__ import main as label_main
        from mstl_monai.metrics.__main__ import main as metrics_main
        from mstl_monai.visualize.explain import main as explain_main

        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        cases = [
            (metrics_main, ["compare", "--a", "x.csv", "--b", "y.csv", "--n-boot", "5"], "--n-boot"),
            (metrics_main, ["leep", "--ck", "m.pt", "--num-source-classes", "2"], "--ck"),
            (explain_main, ["--ckpt", "m.pt", "--input", "x.png", "--output", "o"], "--output"),
            (label_main, ["init", "--app", str(Path(tmp.name) / "app")], "--app"),
            (label_main, ["start", "--app-dir", "x", "--stud", "y"], "--studies"),
        ]
        for fn, argv, word in cases:
            err = io.StringIO()
            with self.subTest(argv=argv):
                with contextlib.redirect_stderr(err), self.assertRaises(SystemExit) as cm:
                    fn(argv)
                self.assertEqual(cm.exception.code, 2, argv)
                self.assertIn(word, err.getvalue())


if __name__ == "__main__":
    unittest.main()
