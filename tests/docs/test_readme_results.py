"""The generated result blocks of docs/RESULTS.md are what their commands print from the results kept in git, and the
README's headline table quotes those results.

Regenerating the results block (``scripts/make_tables.py --results_doc``) and the label-fraction block
(``scripts/label_fraction_plot.py --results_doc``) from ``results/cpu_scale`` must leave docs/RESULTS.md unchanged: a
block edited by hand, or left behind after new results were published, fails here. The README's "Does the transfer
help?" table and its copies in RESULTS.md and bundle/docs/README.md must show the seed means of the Seeds table
(``seeds.csv``) and the ‡ gains of Table 2/4 and of the Finetune settings table (``table2.csv``, ``recipes.csv``).
"""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests.docs._readme import BUNDLE_DOCS, README, RESULTS_DOC, markdown_table
from tests.utils import REPO_ROOT

RESULTS = REPO_ROOT / "results" / "cpu_scale"
#: the headline table's heading in the README, and the rows it must hold: recipe -> (transfer chain's stages in the
#: Seeds table, no-transfer stages, (csv, row match, gain column) of the seed-averaged gain)
HEADLINE = "## Does the transfer help?"
ROWS = {
    "default": ("STL-N → STL-M → SSTL-M (ours)", "none", ("table2.csv", ("resnet18", "baseline", "STL-N → STL-M → SSTL-M"), "ΔAUC")),
    "robust augmentation (chosen on val)": (
        "STL-N → STL-M → SSTL-M (ours) [finetune robust_augmentation=True]",
        "none [finetune robust_augmentation=True]",
        ("recipes.csv", ("resnet18", "baseline", "STL-N → STL-M → SSTL-M (ours)", "robust_augmentation=True"),
         "ΔAUC vs no transfer (same setting)"),
    ),
    "robust, STL-N 40 epochs (the main job; shipped)": (
        "STL-N → STL-M → SSTL-M (ours) [finetune robust_augmentation=True, stl_n_weights=stl_n_resnet18.pt]",
        "none [finetune robust_augmentation=True]",
        ("recipes.csv", ("resnet18", "baseline", "STL-N → STL-M → SSTL-M (ours)", "robust_augmentation=True, stl_n_weights=stl_n_resnet18.pt"),
         "ΔAUC vs no transfer (same setting)"),
    ),
}
NUM = r"[+\-−]?\d+(?:\.\d+)?"


def numbers(cell: str) -> list[float]:
    """The numbers of a table cell, in order (``80.7 [74.8, 86.4] ±0.4`` -> [80.7, 74.8, 86.4, 0.4])."""
    return [float(x.replace("−", "-")) for x in re.findall(NUM, cell.replace("±", " "))]


def read_csv(name: str) -> list[dict]:
    with open(RESULTS / name, newline="") as f:
        return list(csv.DictReader(f))


class TestReadmeResults(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_readme_results_"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.doc = self.tmp / "RESULTS.md"
        shutil.copyfile(RESULTS_DOC, self.doc)

    def test_results_block_is_current(self):
        from mstl_monai.pipeline.tables import build_tables, splice_readme

        md, _ = build_tables(RESULTS)
        splice_readme(self.doc, md, "results/cpu_scale")
        self.assertEqual(self.doc.read_text(), RESULTS_DOC.read_text(),
                         "docs/RESULTS.md's results block is stale: run scripts/make_tables.py --results results/cpu_scale "
                         "--results_doc docs/RESULTS.md")

    def test_label_fraction_block_is_current(self):
        results = self.tmp / "cpu_scale"
        shutil.copytree(RESULTS, results)  # the script writes its files beside the results
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "label_fraction_plot.py"), "--results",
                               str(results), "--results_doc", str(self.doc)],
                              capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertEqual(self.doc.read_text(), RESULTS_DOC.read_text(),
                         "docs/RESULTS.md's label-fraction block is stale: run scripts/label_fraction_plot.py "
                         "--results_doc docs/RESULTS.md")
        self.assertEqual((results / "label_fraction.md").read_text(), (RESULTS / "label_fraction.md").read_text())

    def test_headline_table_quotes_the_results(self):
        seeds = read_csv("seeds.csv")

        def seed_auc(stages: str) -> list[float]:
            (row,) = [r for r in seeds if (r["backbone"], r["variant"], r["stages"]) == ("resnet18", "baseline", stages)]
            return numbers(row["AUC"])

        readme = markdown_table(README, HEADLINE)
        section = RESULTS_DOC.read_text().split("## Transfer vs no transfer", 1)[1]
        in_results = markdown_table(section, "")
        self.assertEqual(readme, in_results, "the README's headline table and docs/RESULTS.md's differ")
        self.assertEqual(readme, markdown_table(BUNDLE_DOCS, "## Results"), "bundle/docs/README.md's results table differs")
        self.assertEqual([r["finetune recipe"] for r in readme], list(ROWS))
        for row in readme:
            transfer, none, (name, match, column) = ROWS[row["finetune recipe"]]
            self.assertEqual(numbers(row["transfer"]), seed_auc(transfer), row)
            self.assertEqual(numbers(row["no transfer"]), seed_auc(none), row)
            n_seeds = len(next(r for r in seeds if r["stages"] == transfer)["seeds"].split(","))
            self.assertEqual(int(row["seeds"]), n_seeds, row)
            (gain_row,) = [r for r in read_csv(name) if tuple(r[k] for k in list(r)[: len(match)]) == match]
            want = numbers(gain_row[column])
            got = numbers(row["transfer gain [95% CI]"])
            # the headline may quote the lower end with one more digit (+0.03 where the table rounds to +0.0)
            self.assertEqual([round(x, 1) for x in got], want, (row, gain_row[column]))
            self.assertIn("‡", gain_row[column], "the headline gain must be the seed-averaged one")


if __name__ == "__main__":
    unittest.main()
