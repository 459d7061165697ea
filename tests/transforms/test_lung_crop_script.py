"""scripts/lung_crop_dataset.py: slices cut to their lung boxes, a COVID19-CT folder keeping its layout and split."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import numpy as np
from PIL import Image

from tests.utils import require_real_data

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "lung_crop_dataset.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300, cwd=REPO)


class TestLungCropDataset(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_lungcrop_"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_real_slices_are_cut_to_their_lungs(self):
        data = require_real_data(self)
        src = self.tmp / "src"
        src.mkdir()
        for p in sorted((data / "luna16" / "images").iterdir())[:4]:
            shutil.copy(p, src / p.name)
        proc = run(str(src), str(self.tmp / "out"))
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        whole = int(re.match(r"^4 slices written to .*; (\d) kept whole", proc.stdout).group(1))
        outs = sorted((self.tmp / "out").iterdir())
        self.assertEqual(len(outs), 4)
        shrunk = 0
        for o, p in zip(outs, sorted(src.iterdir())):
            a, b = np.asarray(Image.open(o)), np.asarray(Image.open(p))
            shrunk += a.shape[0] * a.shape[1] < 0.8 * b.shape[0] * b.shape[1]  # the air around the body is gone
        self.assertLessEqual(whole, 1)
        self.assertEqual(shrunk, 4 - whole)
        # an existing, non-empty output folder is refused, naming it
        again = run(str(src), str(self.tmp / "out"))
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("exists and is not empty", again.stderr)

    def test_covid_ct_layout_is_kept(self):
        from mstl_monai.data import covid_ct_datalist

        data = require_real_data(self)
        src = self.tmp / "covid-ct"
        shutil.copytree(data / "covid-ct" / "Data-split", src / "Data-split")
        for cls in ("CT_COVID", "CT_NonCOVID"):
            (src / cls).mkdir(parents=True)
        names = set()
        for item in covid_ct_datalist(data / "covid-ct", "val")[:2] + covid_ct_datalist(data / "covid-ct", "val")[-2:]:
            p = Path(item["image"])
            shutil.copy(p, src / p.parent.name / p.name)
            names.add(p.stem)
        proc = run(str(src), str(self.tmp / "out"), "--margin", "0.05")
        self.assertEqual(proc.returncode, 0, proc.stderr[-2000:])
        self.assertTrue((self.tmp / "out" / "Data-split").is_symlink())
        written = {p.stem for p in (self.tmp / "out").glob("CT_*/*.png")}
        self.assertEqual(written, names)


if __name__ == "__main__":
    unittest.main()
