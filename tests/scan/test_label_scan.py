# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The MONAI Label scan task: its core (ScanInferRunner, core environment) and a real server on 127.0.0.1 answering
``/infer/<model>_scan`` on a NIfTI volume made from the real series (label environment)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml

from mstl_monai.data import dicom_series_to_nifti
from mstl_monai.label import prepare_app
from mstl_monai.label.client import LabelClient, serve
from mstl_monai.label.scan import ScanInferRunner
from tests.scan._series import write_series
from tests.utils import REPO_ROOT, require_label_python, require_real_data

MODEL = "mstl_covid_classification"
SERIES = "ct-series/lung-pet-ct-dx-A0002"


def _blank(path: Path) -> Path:
    nib.save(nib.Nifti1Image(np.full((32, 32, 5), -1000, np.int16), np.diag([-1.0, -1.0, 5.0, 1.0])), str(path))
    return path


class TestScanInferRunner(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl-label-scan-"))
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def test_runner_on_volume(self):
        model_dir = prepare_app(self.tmp / "app", None, backbone="resnet18", n_attn=0, image_size=64, resize_size=72)
        cfg = yaml.safe_load((model_dir / "configs" / "inference_scan.yaml").read_text())
        self.assertEqual((cfg["backbone"], cfg["n_attn"], cfg["image_size"]), ("resnet18", 0, 64))
        write_series(self.tmp / "s", 5.0 * np.arange(12))
        vol = dicom_series_to_nifti(self.tmp / "s", self.tmp / "vol.nii.gz")
        runner = ScanInferRunner(model_dir, {"n_bootstrap": 100, "n_top": 2})
        self.assertTrue(runner.is_valid())
        ans = runner(vol)
        self.assertEqual(ans["status"], "ok")
        self.assertEqual((ans["n_slices"], ans["slices_used"], ans["slices_skipped"]), (12, 8, 4))
        self.assertLessEqual(ans["ci_low"], ans["probability"])
        self.assertLessEqual(ans["probability"], ans["ci_high"])
        self.assertEqual(len(ans["top_slices"]), 2)
        self.assertEqual(len(ans["used_slices"]), 8)
        self.assertEqual(ans["_overlays"][0].shape, (64, 64, 3))
        json.dumps({k: v for k, v in ans.items() if k != "_overlays"})  # the answer is JSON
        # new weights in models/model.pt are picked up by the next call
        p0 = ans["probability"]
        torch.manual_seed(123)
        from mstl_monai.networks import build_network

        net = build_network("resnet18", n_attn=0, num_classes=2, n_input_channels=1)
        torch.save(net.state_dict(), model_dir / "models" / "model.pt")
        os.utime(model_dir / "models" / "model.pt", (1, 1))
        self.assertNotAlmostEqual(runner(vol)["probability"], p0, places=6)
        with self.assertRaisesRegex(ValueError, "blank.nii.gz.*no slice shows lung"):
            runner(_blank(self.tmp / "blank.nii.gz"))


class TestLabelScanServer(unittest.TestCase):
    def test_scan_infer_on_volume(self):
        data_root = require_real_data(self)
        py = require_label_python(self)
        tmp = Path(tempfile.mkdtemp(prefix="mstl-label-scan-srv-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        studies = tmp / "studies"
        studies.mkdir()
        dicom_series_to_nifti(data_root / SERIES, studies / "a0002.nii.gz")
        _blank(studies / "blank.nii.gz")
        app = tmp / "app"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        init = subprocess.run(
            [py, "-m", "mstl_monai.label", "init", "--app-dir", str(app), "--image-size", "64", "--resize-size", "72",
             "--backbone", "resnet18", "--n-attn", "0"],
            capture_output=True, text=True, cwd=str(REPO_ROOT), env=env,
        )
        self.assertEqual(init.returncode, 0, init.stderr[-3000:])
        log = tmp / "server.log"
        try:
            c: LabelClient = self.enterContext(serve(app, studies, python=py, log_file=log, env=env))
        except RuntimeError as e:
            self.fail(str(e))
        code, info = c.json("GET", "/info/")
        self.assertEqual(code, 200)
        self.assertIn(f"{MODEL}_scan", info["models"])
        self.assertEqual(info["models"][f"{MODEL}_scan"]["dimension"], 3)

        code, res = c.json("POST", f"/infer/{MODEL}_scan?image=a0002&output=json", timeout=600)
        self.assertEqual(code, 200, f"{res}\n{log.read_text()[-4000:]}")
        self.assertEqual(res["n_slices"], 30)
        self.assertGreaterEqual(res["slices_used"], 15)
        self.assertEqual(res["slices_used"] + res["slices_skipped"], 30)
        self.assertLessEqual(res["ci_low"], res["probability"])
        self.assertLessEqual(res["probability"], res["ci_high"])
        self.assertIn(res["decision"], ("COVID", "non-COVID"))
        self.assertEqual(len(res["top_slices"]), 3)
        self.assertEqual(res["scan"], "a0002.nii.gz")

        params = json.dumps({"heatmap": "gradcam"})
        code, body, ctype = c.call("POST", f"/infer/{MODEL}_scan?image=a0002&output=image", fields={"params": params}, timeout=600)
        self.assertEqual(code, 200, body[:500])
        self.assertIn("image/png", ctype)
        from PIL import Image

        img = Image.open(io.BytesIO(body))
        self.assertEqual(img.size, (3 * 512, 512))  # the three top slices side by side

        code, res = c.json("POST", f"/infer/{MODEL}_scan?image=blank&output=json", timeout=600)
        self.assertEqual(code, 422, res)
        self.assertIn("no slice shows lung", res.get("detail", ""))
        self.assertEqual(c.call("GET", "/info/")[0], 200)  # still serving


if __name__ == "__main__":
    unittest.main()
