"""The README's bundle commands after the main job (inference, evaluation, TorchScript export) run as written.

The commands are read from the README itself (the first bash block under "### As a MONAI bundle", up to the
"# the stages one by one" comment); the block runs from the repository root as the README says; only the main job's checkpoint (``CKPT=...``) is swapped for a small one trained
here, and the output folder ``../runs`` for a temporary one. The stage-by-stage training commands after it take
hours at CPU scale and are not run here (the pipeline runs the same configs in tests/engines).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests.bundle._bundle_utils import TINY, phantom_dataset, run_bundle
from tests.utils import REPO_ROOT, require_real_data


def readme_bundle_block() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    section = text.split("### As a MONAI bundle", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return block.split("# the stages one by one", 1)[0]


class TestReadmeCommands(unittest.TestCase):
    def test_post_main_job_commands(self):
        data = require_real_data(self)
        block = readme_bundle_block()
        self.assertIn("CKPT=../runs/cpu_scale/resnet18_attn5/stl_m/sstl_m-ours/finetune/models/model.pt", block)
        tmp = Path(tempfile.mkdtemp(prefix="mstl_readme_"))
        self.addCleanup(shutil.rmtree, tmp, True)
        # a small stand-in for the main job's model: R-18 +5, trained one epoch on phantom slices
        ov = dict(TINY, dataset_dir=str(phantom_dataset(tmp, n_per_class=4)), n_attn=5, epochs=1, run_dir=str(tmp / "ft"))
        run_bundle("training", ["train.yaml"], ov)
        ckpt = tmp / "ft" / "models" / "model.pt"
        self.assertTrue(Path(str(ckpt) + ".json").is_file())
        out = tmp / "out"
        script = re.sub(r"^CKPT=\S+", f"CKPT={ckpt}", block, flags=re.M).replace("../runs/", f"{out}/")
        script = "set -euo pipefail\n" + script.replace("../.venv/bin/", str(Path(sys.executable).parent) + "/")
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
        env["MSTL_DATA_ROOT"] = str(data)
        proc = subprocess.run(["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=1500)
        self.assertEqual(proc.returncode, 0, f"README commands failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        rows = (out / "inference" / "predictions.csv").read_text().splitlines()
        n_inputs = len(list((data / "covid-ct" / "CT_COVID").iterdir())) + len(list((data / "dicom").rglob("*.dcm")))
        self.assertGreater(len(rows) - 1, 300)
        self.assertLessEqual(len(rows) - 1, n_inputs)
        metrics = json.loads((out / "evaluate" / "metrics.json").read_text())
        self.assertEqual(metrics["n"], 203)
        self.assertTrue((out / "model.ts").is_file())


if __name__ == "__main__":
    unittest.main()
