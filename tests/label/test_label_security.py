# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""MONAI Label server: no request reads, writes or deletes a file outside the datastore (a real server on 127.0.0.1).

One server (label environment, its own ``TMPDIR``) serves every test of this file. The studies folder sits two
levels below the test folder, so that ``../../data/victim`` and ``../../../t`` name places inside the test folder:
whatever escapes the datastore stays there and is asserted on.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import unittest
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from PIL import Image

from mstl_monai.data import covid_ct_datalist
from mstl_monai.label.client import LabelClient, serve
from tests.label.test_label_server import MODEL
from tests.utils import REPO_ROOT, require_label_python, require_real_data

#: ids and tags that name a place outside their folder (NUL, both separators, parent, absolute, a drive)
BAD_NAMES = ["../../data/victim", "..", "a/b", "a\\b", "/abs/victim", "x\x00y", "C:victim"]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


class TestLabelServerSecurity(unittest.TestCase):
    c: LabelClient

    @classmethod
    def setUpClass(cls) -> None:
        probe = unittest.TestCase()
        data_root = require_real_data(probe)
        py = require_label_python(probe)
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl-label-sec-"))
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.studies = cls.tmp / "a" / "studies"
        cls.studies.mkdir(parents=True)
        test = covid_ct_datalist(data_root / "covid-ct", "test")
        cls.png = Path(test[0]["image"]).read_bytes()  # a real COVID19-CT slice
        (cls.studies / "x.png").write_bytes(cls.png)
        (cls.tmp / "data").mkdir()
        cls.victim = cls.tmp / "data" / "victim.png"  # studies/../../data/victim.png
        cls.victim.write_bytes(Path(test[1]["image"]).read_bytes())
        cls.victim_bytes = cls.victim.read_bytes()
        cls.tmpdir = cls.tmp / "tmpdir"  # the server's TMPDIR: uploads land here
        cls.tmpdir.mkdir()
        cls.app = cls.tmp / "app"
        init = subprocess.run(
            [py, "-m", "mstl_monai.label", "init", "--app-dir", str(cls.app), "--image-size", "64", "--resize-size", "72",
             "--backbone", "resnet18", "--n-attn", "1"],
            capture_output=True, text=True, cwd=str(REPO_ROOT),
        )
        if init.returncode != 0:
            raise AssertionError(init.stderr[-3000:])
        cls.model_pt = cls.app / "model" / MODEL / "models" / "model.pt"
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TMPDIR=str(cls.tmpdir),
                   MONAI_LABEL_SESSION_PATH=str(cls.tmp / "sessions"))
        cls.c = cls.enterClassContext(serve(cls.app, cls.studies, python=py, log_file=cls.tmp / "server.log", env=env))

    def _log(self) -> str:
        return (self.tmp / "server.log").read_text()[-4000:]

    def _outside(self) -> list[str]:
        """Every file of the test folder outside the studies folder, the app, the temp folder and the log."""
        skip = ("a/studies/", "app/", "tmpdir/", "server.log")
        return [f for f in _files(self.tmp) if not f.startswith(skip)]

    def test_ids_and_tags_stay_inside_the_datastore(self) -> None:
        before = self._outside()
        c = self.c
        code, res = c.json("PUT", f"/datastore/?image={quote('../../data/victim')}", fields={"file": ("v.png", self.png)})
        self.assertEqual(code, 422, res)
        self.assertIn("../../data/victim", res.get("detail", ""))
        self.assertEqual(self.victim.read_bytes(), self.victim_bytes)  # not overwritten
        code, res = c.json("DELETE", f"/datastore/?id={quote('../../data/victim')}")
        self.assertEqual(code, 422, res)
        self.assertTrue(self.victim.is_file())  # not deleted
        code, res = c.json("PUT", f"/datastore/label?image=x&tag={quote('../../../t')}", fields={"label": ("l.json", b'{"label": "COVID"}')})
        self.assertEqual(code, 422, res)
        self.assertIn("../../../t", res.get("detail", ""))
        self.assertFalse((self.tmp / "t").exists())
        # every call that takes an image id, a label id or a tag
        for bad in BAD_NAMES:
            q = quote(bad)
            calls = [
                ("PUT", f"/datastore/image?image={q}", {"file": ("v.png", self.png)}),
                ("DELETE", f"/datastore/image?id={q}", None),
                ("GET", f"/datastore/image?image={q}", None),
                ("GET", f"/datastore/image/info?image={q}", None),
                ("PUT", f"/datastore/image/info?image={q}", {"info": '{"a": 1}'}),
                ("PUT", f"/datastore/label?image={q}", {"label": ("l.json", b'{"label": "COVID"}')}),
                ("PUT", f"/datastore/label?image=x&tag={q}", {"label": ("l.json", b'{"label": "COVID"}')}),
                ("DELETE", f"/datastore/label?id={q}&tag=final", None),
                ("DELETE", f"/datastore/label?id=x&tag={q}", None),
                ("GET", f"/datastore/label?label={q}&tag=final", None),
                ("GET", f"/datastore/label?label=x&tag={q}", None),
                ("GET", f"/datastore/label/info?label=x&tag={q}", None),
                ("PUT", f"/datastore/label/info?label={q}&tag=final", {"info": '{"a": 1}'}),
            ]
            for method, path, fields in calls:
                code, res = c.json(method, path, fields=fields)
                self.assertEqual(code, 422, f"{method} {path}: {res}")
                self.assertIn(repr(bad), res.get("detail", ""), f"{method} {path}")
                self.assertEqual(len(res["detail"].splitlines()), 1)
        self.assertEqual(self._outside(), before)
        code, ds = c.json("GET", "/datastore/?output=all")
        self.assertEqual(sorted(ds["objects"]), ["x"])
        self.assertEqual(sorted(ds["objects"]["x"]["labels"]), [])
        self.assertEqual(sorted(p.name for p in (self.studies / "labels").iterdir()), ["final", "original"])
        # plain names still work, dots inside a name too
        code, res = c.json("PUT", "/datastore/image?image=slice..2", fields={"file": ("s.png", self.png)})
        self.assertEqual(code, 200, res)
        self.assertTrue((self.studies / "slice..2.png").is_file())
        code, res = c.json("DELETE", "/datastore/image?id=slice..2")
        self.assertEqual(code, 200, res)
        self.assertFalse((self.studies / "slice..2.png").exists())

    def test_infer_reads_only_datastore_images_and_uploads(self) -> None:
        c = self.c
        code, res = c.json("POST", f"/infer/{MODEL}?image=x&output=json")
        self.assertEqual(code, 200, res)
        code, res = c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("up.png", self.png)})
        self.assertEqual(code, 200, res)
        # any other path answers as a missing id does, whether the file exists, is an image, or not
        answers = {}
        for image in (str(self.victim), "/etc/passwd", str(self.tmp / "no_such.png"), "../../data/victim", "no_such_id",
                      str(self.studies / "x.png"), "studies/x.png"):
            code, res = c.json("POST", f"/infer/{MODEL}?image={quote(image)}&output=json")
            self.assertEqual(code, 404, f"{image}: {res}")
            answers[image] = res["detail"].replace(repr(image), "ID")
            code, res = c.json("POST", f"/infer/{MODEL}?image=x&output=json", fields={"params": json.dumps({"image": image})})
            self.assertEqual(code, 404, f"params image {image}: {res}")
        self.assertEqual(len(set(answers.values())), 1, answers)
        code, body, _ = c.call("POST", f"/infer/{MODEL}?image={quote(str(self.victim))}&output=image", fields={"params": '{"heatmap": "gradcam", "heatmap_format": "overlay"}'})
        self.assertEqual(code, 404)
        # nor can a request pick another weights file
        for name in ("/etc/passwd", str(self.tmp / "no_such.pt"), "../model.pt"):
            code, res = c.json("POST", f"/infer/{MODEL}?image=x&output=json", fields={"params": json.dumps({"model_filename": name})})
            self.assertEqual(code, 422, f"{name}: {res}")
            self.assertIn("model_filename", res["detail"])

    def test_rejected_uploads_leave_no_temp_file(self) -> None:
        c = self.c
        flat = io.BytesIO()
        Image.fromarray(np.full((40, 40), 7, np.uint8)).save(flat, format="PNG")
        before = _files(self.tmpdir)
        rejected = [
            (c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("notes.txt", b"not an image")}), 415),
            (c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("n.txt", b"no"), "label": ("l.json", b"{}")}), 415),
            (c.json("POST", f"/infer/{MODEL}?image=no_such&output=json", fields={"label": ("l.json", b"{}")}), 404),
            (c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("fake.png", b"\x89PNG\r\n\x1a\n garbage")}), 415),
            (c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("flat.png", flat.getvalue())}), 422),
            (c.json("POST", f"/infer/{MODEL}?output=json", fields={"file": ("s.png", self.png), "params": '{"heatmap": "lime"}'}), 422),
            (c.json("PUT", "/datastore/image?image=fake", fields={"file": ("fake.png", b"plain text")}), 415),
            (c.json("PUT", f"/datastore/image?image={quote('../v')}", fields={"file": ("s.png", self.png)}), 422),
            (c.json("PUT", "/datastore/label?image=x", fields={"label": ("l.json", b'{"label": "pneumonia"}')}), 422),
            (c.json("PUT", "/datastore/label?image=no_such", fields={"label": ("l.json", b'{"label": "COVID"}')}), 404),
            (c.json("PUT", f"/datastore/label?image=x&tag={quote('../t')}", fields={"label": ("l.json", b"COVID")}), 422),
            (c.json("PUT", "/session/", fields={"files": ("s.png", self.png)}), 406),
        ]
        self.assertEqual(_files(self.tmpdir), before, "rejected uploads left temp files")
        for (code, res), want in rejected:
            self.assertEqual(code, want, res)

    def test_no_session_archive_unpacks_outside(self) -> None:
        """``PUT /session/?uncompress=true`` would unpack an uploaded tar with members named ``../../x`` outside the
        session folder (Python's tarfile): the app serves no sessions."""
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as t:
            info = tarfile.TarInfo("../../escaped.txt")
            info.size = 5
            t.addfile(info, io.BytesIO(b"pwned"))
        code, res = self.c.json("PUT", "/session/?uncompress=true", fields={"files": ("s.tar", tar.getvalue())})
        self.assertEqual([p for p in self.tmp.rglob("escaped.txt")], [])
        self.assertEqual(code, 406, res)
        code, res = self.c.json("GET", f"/session/{quote('..')}")
        self.assertEqual(code, 404, res)
        code, res = self.c.json("POST", f"/infer/{MODEL}?session_id={quote('../../data')}&output=json")
        self.assertEqual(code, 404, res)

    def test_unloadable_checkpoint_is_named(self) -> None:
        from mstl_monai.networks import build_network

        good = self.model_pt.read_bytes()
        self.addCleanup(self.model_pt.write_bytes, good)
        self.model_pt.write_bytes(good[: len(good) // 3])  # truncated
        code, res = self.c.json("POST", f"/infer/{MODEL}?image=x&output=json")
        self.assertEqual(code, 503, res)
        self.assertRegex(res.get("detail", ""), r"^cannot load models/model.pt: .*truncated")
        self.assertEqual(len(res["detail"].splitlines()), 1)
        torch.save(build_network("resnet34", n_attn=0, n_input_channels=1, num_classes=2).state_dict(), self.model_pt)
        code, res = self.c.json("POST", f"/infer/{MODEL}?image=x&output=json")
        self.assertEqual(code, 503, res)
        self.assertRegex(res.get("detail", ""), r"^cannot load models/model.pt: .*resnet34.*resnet18")
        self.assertEqual(len(res["detail"].splitlines()), 1)
        self.model_pt.write_bytes(good)
        time.sleep(0.01)
        os.utime(self.model_pt)
        code, res = self.c.json("POST", f"/infer/{MODEL}?image=x&output=json")
        self.assertEqual(code, 200, res)


if __name__ == "__main__":
    unittest.main()
