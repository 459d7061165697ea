"""MONAI Label end to end: a real server on 127.0.0.1 with a datastore of real COVID19-CT slices.

The server runs in the label environment (``.venv-label``, made by ``scripts/setup_label_env.sh``; override with
``MSTL_LABEL_PYTHON``), this test in the core one, talking plain HTTP. In CI a missing label environment fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
from PIL import Image

from mstl_monai.data import covid_ct_datalist
from mstl_monai.label.client import LabelClient, serve
from tests.utils import REPO_ROOT, require_label_python, require_real_data

MODEL = "mstl_covid_classification"


class TestLabelServer(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="mstl-label-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)

    def _start(self, py: str, app: Path, studies: Path) -> LabelClient:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        try:
            return self.enterContext(serve(app, studies, python=py, log_file=Path(self.tmp) / "server.log", env=env))
        except RuntimeError as e:
            self.fail(str(e))

    def _train(self, c: LabelClient, epochs: int) -> dict:
        code, res = c.json("POST", f"/train/{MODEL}", json_body={"max_epochs": epochs})
        self.assertEqual(code, 200, res)
        task_id = res.get("id")
        deadline = time.time() + 900
        while time.time() < deadline:  # the task's own status: check_if_running misses a task not started yet
            code, status = c.json("GET", "/train/")
            if status.get("id") == task_id and status.get("status") not in ("SUBMITTED", "QUEUED", "RUNNING"):
                return status
            time.sleep(2)
        self.fail(f"training did not finish within 900 s: {json.dumps(status)[-2000:]}\n{self._log()}")

    def _log(self) -> str:
        return (Path(self.tmp) / "server.log").read_text()[-6000:]

    def test_serve_label_train_infer(self) -> None:
        data_root = require_real_data(self)
        py = require_label_python(self)
        # a datastore of six real test slices, three per class
        studies = Path(self.tmp) / "studies"
        studies.mkdir()
        test = covid_ct_datalist(data_root / "covid-ct", "test")
        picked = [d for d in test if d["label"] == 1][:3] + [d for d in test if d["label"] == 0][:3]
        ids = []
        for i, d in enumerate(picked):
            image_id = f"{'covid' if d['label'] == 1 else 'noncovid'}_{i}"
            shutil.copyfile(d["image"], studies / f"{image_id}.png")
            ids.append(image_id)
        sizes = {i: Image.open(studies / f"{i}.png").size for i in ids}
        # a label made outside the server (a file in labels/final) is found when the datastore starts
        (studies / "labels" / "final").mkdir(parents=True)
        (studies / "labels" / "final" / f"{ids[2]}.json").write_text('{"label": "COVID"}')
        # the app: a fresh R-18 +5 ATTNs at 64 px, so that one CPU epoch takes seconds
        app = Path(self.tmp) / "app"
        init = subprocess.run(
            [py, "-m", "mstl_monai.label", "init", "--app-dir", str(app), "--image-size", "64", "--resize-size", "72",
             "--backbone", "resnet18", "--n-attn", "5", "--set", "batch_size=2"],
            capture_output=True, text=True, cwd=str(REPO_ROOT),
        )
        self.assertEqual(init.returncode, 0, init.stderr[-3000:])
        model_pt = app / "model" / MODEL / "models" / "model.pt"
        before_md5 = hashlib.md5(model_pt.read_bytes()).hexdigest()
        c = self._start(py, app, studies)

        # /info: a classification model with the bundle's classes
        code, info = c.json("GET", "/info/")
        self.assertEqual(code, 200)
        self.assertEqual(info["models"][MODEL]["type"], "classification")
        self.assertEqual(info["models"][MODEL]["labels"], {"non-covid": 0, "covid": 1})
        self.assertIn(MODEL, info["trainers"])

        # label one image: /train refuses to start on a single class, and the served weights stay as they were
        code, res = c.json("PUT", f"/datastore/label?image={ids[0]}", fields={"label": ("l.json", b'{"label": "COVID"}')})
        self.assertEqual(code, 200, res)
        status = self._train(c, 1)
        self.assertEqual(status.get("status"), "ERROR", json.dumps(status)[-2000:])
        self.assertIn("at least two classes", json.dumps(status.get("details", [])))
        self.assertEqual(hashlib.md5(model_pt.read_bytes()).hexdigest(), before_md5)
        # a second label (the other class, as a bare class name)
        code, res = c.json("PUT", f"/datastore/label?image={ids[3]}", fields={"label": ("l.txt", b"non-COVID")})
        self.assertEqual(code, 200, res)

        # bad requests: 4xx with a message naming the culprit, and the server keeps serving
        bad = [
            (c.json("POST", f"/infer/{MODEL}?image=no_such_image&output=json"), 404, "no_such_image"),
            (c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("notes.txt", b"not an image")}), 415, "not a supported image"),
            (c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("fake.png", b"\x89PNG\r\n\x1a\n garbage")}), 415, "not a readable image"),
            (c.json("PUT", "/datastore/?image=fake", fields={"file": ("fake.png", b"plain text")}), 415, "fake"),
            (c.json("PUT", f"/datastore/label?image={ids[1]}", fields={"label": ("l.json", b'{"label": "pneumonia"}')}), 422, "pneumonia"),
            (c.json("PUT", "/datastore/label?image=no_such_image", fields={"label": ("l.json", b'{"label": "COVID"}')}), 404, "no_such_image"),
            (c.json("POST", f"/infer/{MODEL}?image={ids[0]}&output=json", fields={"params": '{"heatmap": "lime"}'}), 422, "lime"),
            (c.json("POST", f"/infer/nope?image={ids[0]}&output=json"), 404, "nope"),
        ]
        for (code, res), want, text in bad:
            self.assertEqual(code, want, res)
            self.assertIn(text, res.get("detail", ""), res)
        self.assertEqual(c.call("GET", "/info/")[0], 200)
        code, ds = c.json("GET", "/datastore/?output=all")
        final = {k: v["labels"]["final"]["info"] for k, v in ds["objects"].items() if "final" in v["labels"]}
        labelled = {k: info["label"] for k, info in final.items() if "label" in info}  # those saved through the API
        self.assertEqual(labelled, {ids[0]: 1, ids[3]: 0})  # the bad label did not land
        self.assertEqual(set(final), {ids[0], ids[2], ids[3]})  # plus the one found on disk
        self.assertNotIn("fake", ds["objects"])

        # /infer before training
        code, res0 = c.json("POST", f"/infer/{MODEL}?image={ids[1]}&output=json")
        self.assertEqual(code, 200, res0)
        p0 = res0["class_probabilities"]
        self.assertEqual(set(p0), {"non-covid", "covid"})
        self.assertAlmostEqual(sum(p0.values()), 1.0, places=4)
        # every answer says whether the lobe Generator's locator found a lung (issue 11, item 5)
        self.assertIs(res0.get("lung_found"), True, res0)
        self.assertTrue(0.0 < res0["lung_box_fraction"] <= 1.0, res0)
        self.assertNotIn("warning", res0)
        # an image without a lung (a plain gradient) is still predicted, but flagged
        grad = io.BytesIO()
        Image.fromarray(np.tile(np.linspace(0, 255, 96).astype(np.uint8), (80, 1))).save(grad, format="PNG")
        code, res = c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("gradient.png", grad.getvalue())})
        self.assertEqual(code, 200, res)
        self.assertAlmostEqual(sum(res["class_probabilities"].values()), 1.0, places=4)
        self.assertIs(res["lung_found"], False, res)
        self.assertIsNone(res["lung_box_fraction"])
        self.assertIn("no lung found", res["warning"])

        # /train one epoch, wait for it, then the weights file has changed
        status = self._train(c, 1)
        self.assertEqual(status.get("status"), "DONE", json.dumps(status)[-3000:])
        self.assertNotEqual(hashlib.md5(model_pt.read_bytes()).hexdigest(), before_md5)
        code, info = c.json("GET", "/info/")
        stats = info["train_stats"][MODEL]
        self.assertEqual(stats["max_epochs"], 1)
        self.assertGreaterEqual(stats["train_images"], 1)
        self.assertGreaterEqual(stats["val_images"], 1)

        # the next /infer uses the new weights
        code, res1 = c.json("POST", f"/infer/{MODEL}?image={ids[1]}&output=json")
        self.assertEqual(code, 200, res1)
        self.assertNotAlmostEqual(res1["class_probabilities"]["covid"], p0["covid"], places=5)

        # heat maps as PNG images on the slice's own grid
        for method, fmt, mode in (("gradcam", "map", "L"), ("attention", "overlay", "RGB")):
            params = json.dumps({"heatmap": method, "heatmap_format": fmt})
            code, body, ctype = c.call("POST", f"/infer/{MODEL}?image={ids[2]}&output=image", fields={"params": params})
            self.assertEqual(code, 200, body[:500])
            self.assertIn("image/png", ctype)
            img = Image.open(io.BytesIO(body))
            self.assertEqual(img.size, sizes[ids[2]])
            self.assertEqual(img.mode, mode)
            if fmt == "map":
                arr = np.asarray(img)
                self.assertGreater(int(arr.max()), 0)
        # JSON and heat map together (multipart), as MONAI Label clients ask with output=all
        code, body, ctype = c.call("POST", f"/infer/{MODEL}?image={ids[2]}&output=all", fields={"params": '{"heatmap": "gradcam"}'})
        self.assertEqual(code, 200)
        self.assertIn("multipart", ctype)
        self.assertIn(b'"heatmap"', body)
        self.assertEqual(c.call("GET", "/info/")[0], 200)


if __name__ == "__main__":
    unittest.main()
