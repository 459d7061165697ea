"""MONAI Label with a ViT backbone: /infer with the attention-rollout heat map (a real server on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

import numpy as np
from PIL import Image

from mstl_monai.data import covid_ct_datalist
from mstl_monai.label.client import serve
from tests.label.test_label_server import MODEL
from tests.utils import REPO_ROOT, require_label_python, require_real_data


class TestLabelServerViT(unittest.TestCase):
    def test_rollout_heatmap(self) -> None:
        data_root = require_real_data(self)
        py = require_label_python(self)
        tmp = Path(tempfile.mkdtemp(prefix="mstl-label-vit-"))
        self.addCleanup(shutil.rmtree, tmp, ignore_errors=True)
        studies = tmp / "studies"
        studies.mkdir()
        d = covid_ct_datalist(data_root / "covid-ct", "test")[0]
        shutil.copyfile(d["image"], studies / "slice0.png")
        size = Image.open(studies / "slice0.png").size
        app = tmp / "app"
        init = subprocess.run(
            [py, "-m", "mstl_monai.label", "init", "--app-dir", str(app), "--image-size", "64", "--resize-size", "72",
             "--backbone", "vit_tiny"],
            capture_output=True, text=True, cwd=str(REPO_ROOT),
        )
        self.assertEqual(init.returncode, 0, init.stderr[-3000:])
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        try:
            c = self.enterContext(serve(app, studies, python=py, log_file=tmp / "server.log", env=env))
        except RuntimeError as e:
            self.fail(str(e))
        code, res = c.json("POST", f"/infer/{MODEL}?image=slice0&output=json")
        self.assertEqual(code, 200, res)
        self.assertAlmostEqual(sum(res["class_probabilities"].values()), 1.0, places=4)
        params = json.dumps({"heatmap": "rollout", "heatmap_format": "map"})
        code, body, ctype = c.call("POST", f"/infer/{MODEL}?image=slice0&output=image", fields={"params": params})
        self.assertEqual(code, 200, body[:500])
        self.assertIn("image/png", ctype)
        img = Image.open(io.BytesIO(body))
        self.assertEqual(img.size, size)
        self.assertGreater(int(np.asarray(img).max()), 0)
        for method in ("gradcam", "attention"):  # ResNet maps: a clear 422 naming the ViT map
            code, res = c.json("POST", f"/infer/{MODEL}?image=slice0&output=json", fields={"params": json.dumps({"heatmap": method})})
            self.assertEqual(code, 422, res)
            self.assertIn("rollout", res.get("detail", ""))


if __name__ == "__main__":
    unittest.main()
