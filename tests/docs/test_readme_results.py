"""The README's generated result blocks are what their commands print from the results kept in git.

Regenerating the results block (``scripts/make_tables.py --readme``) and the label-fraction block
(``scripts/label_fraction_plot.py --readme``) from ``results/cpu_scale`` must leave the README unchanged: a block
edited by hand, or left behind after new results were published, fails here.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests.utils import REPO_ROOT

RESULTS = REPO_ROOT / "results" / "cpu_scale"
README = REPO_ROOT / "README.md"


class TestReadmeResults(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_readme_results_"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.readme = self.tmp / "README.md"
        shutil.copyfile(README, self.readme)

    def test_results_block_is_current(self):
        from mstl_monai.pipeline.tables import build_tables, splice_readme

        md, _ = build_tables(RESULTS)
        splice_readme(self.readme, md, "results/cpu_scale")
        self.assertEqual(self.readme.read_text(), README.read_text(),
                         "the README's results block is stale: run scripts/make_tables.py --results results/cpu_scale "
                         "--readme README.md")

    def test_label_fraction_block_is_current(self):
        results = self.tmp / "cpu_scale"
        shutil.copytree(RESULTS, results)  # the script writes its files beside the results
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "label_fraction_plot.py"), "--results",
                               str(results), "--readme", str(self.readme)],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertEqual(self.readme.read_text(), README.read_text(),
                         "the README's label-fraction block is stale: run scripts/label_fraction_plot.py --readme README.md")
        self.assertEqual((results / "label_fraction.md").read_text(), (RESULTS / "label_fraction.md").read_text())


if __name__ == "__main__":
    unittest.main()
