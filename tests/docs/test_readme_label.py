"""The MONAI Label walkthrough of docs/MONAI_LABEL.md ("## Walkthrough") runs as written, read from the page itself,
and the README's MONAI Label commands are among the ones it runs.

Its first bash block (``init`` on the main job's model, a datastore of two real slices, ``start``) and its REST
calls (``curl``) run in order from the repository root, with these changes only: the main job's checkpoint is a small
stand-in trained here (with its ``model.pt.json``), ``apps/`` is a temporary folder, the server listens on a free
port of 127.0.0.1 instead of 0.0.0.0:8000, ``.venv-label/bin/python`` is the label environment found (a git worktree
uses the main checkout's), and ``curl`` gets ``-sS --fail-with-body -w '\\n'`` (an HTTP error fails the test; one
answer a line).
``bash scripts/setup_label_env.sh`` (which made that environment) is not run again. The ``start`` command that
``init`` prints is checked to be the page's, and ``bundle/docs/README.md``'s ``init`` runs too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import unittest
from pathlib import Path

from mstl_monai.label.client import LabelClient, free_port, running_server
from tests.docs._readme import (
    BUNDLE_DOCS,
    LABEL_DOC,
    MAIN_JOB_CKPT,
    README,
    bash_blocks,
    joined_lines,
    run_script,
    stand_in_checkpoint,
)
from tests.utils import REPO_ROOT, require_label_python, require_real_data

MODEL = "mstl_covid_classification"


class TestReadmeLabelWalkthrough(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_readme_label_"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def local(self, text: str, py: str, ckpt: Path, data: Path, port: int) -> str:
        """The README's commands pointed at this test's interpreter, checkpoint, data, folders and port."""
        text = text.replace(".venv-label/bin/python", py).replace(MAIN_JOB_CKPT, str(ckpt))
        text = text.replace("bundle/runs/finetune/models/model.pt", str(ckpt)).replace("../shared/data/", f"{data}/")
        text = re.sub(r"(?<![\w/.])apps/", f"{self.tmp}/apps/", text)
        text = text.replace("--host 0.0.0.0", "--host 127.0.0.1").replace("--port 8000", f"--port {port}")
        return text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")

    def test_walkthrough(self):
        data = require_real_data(self)
        py = require_label_python(self)
        setup, calls = bash_blocks(LABEL_DOC, "## Walkthrough")[:2]
        cmds = joined_lines(setup)
        # the README's short version: its commands, each one of those run here, in the same order
        short = joined_lines(bash_blocks(README, "### Through MONAI Label")[0])
        self.assertEqual(short, [c for c in cmds if c in short], "the README's MONAI Label commands are not the walkthrough's")
        self.assertTrue(any("mstl_monai.label start " in c for c in short), short)
        self.assertTrue(cmds[0].startswith("bash scripts/setup_label_env.sh"), cmds[0])
        (start,) = [c for c in cmds if "-m mstl_monai.label start " in c]
        self.assertIn(f"--checkpoint {MAIN_JOB_CKPT}", " ".join(cmds))
        # 32 px (res5 1x1): the README's /train on two slices trains with BatchNorm frozen (freeze_bn) and stays finite
        ckpt = stand_in_checkpoint(self.tmp / "standin", decision_threshold=0.42, image_size=32)
        port = free_port()
        env = {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        prep = self.local("\n".join(c for c in cmds[1:] if c != start), py, ckpt, data, port)
        proc = run_script(prep, REPO_ROOT, env=env, timeout=600)
        self.assertEqual(proc.returncode, 0, f"{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
        # the start command init prints is the README's, but for the datastore folder and the address
        printed = re.search(r"^start it:\s+(.*)$", proc.stdout, re.M).group(1).replace("FOLDER", f"{self.tmp}/apps/studies")
        # init prints the interpreter relative to the current folder when it lies below it (the README's form)
        printed = re.sub(r"^\.venv-label/bin/python", lambda _: py, printed)
        self.assertEqual(printed, re.sub(r" --host \S+ --port \S+", "", self.local(start, py, ckpt, data, port)))
        self.assertTrue((self.tmp / "apps" / "studies" / "slice_001.png").is_file())

        server_env = dict(os.environ, **env, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        try:  # the README's start command, in the background until the end of the test
            cmd = ["bash", "-c", "exec " + self.local(start, py, ckpt, data, port)]
            client: LabelClient = self.enterContext(running_server(cmd, port, self.tmp / "server.log", env=server_env, cwd=REPO_ROOT))
        except RuntimeError as e:
            self.fail(str(e))
        script = self.local(calls, py, ckpt, data, port).replace("curl ", "curl -sS --fail-with-body -w '\\n' ")
        proc = run_script(script, REPO_ROOT, env=env, timeout=600)
        log = (self.tmp / "server.log").read_text()[-4000:]
        self.assertEqual(proc.returncode, 0, f"README REST calls failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-2000:]}\n{log}")
        answers = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        info, slice_answer, upload_answer = answers[0], answers[1], answers[2]
        self.assertIn(MODEL, info["models"])
        for ans in (slice_answer, upload_answer):
            self.assertEqual(set(ans["class_probabilities"]), {"non-covid", "covid"}, ans)  # MONAI Label lower-cases them
            self.assertEqual(ans["decision_threshold"], {"value": 0.42, "source": "checkpoint"})
        for png in ("heat.png", "fig4.png"):
            self.assertEqual((self.tmp / "apps" / png).read_bytes()[:8], b"\x89PNG\r\n\x1a\n", png)
        # the /train the README starts ends DONE, and the next /infer answers with the new weights
        deadline, status = time.time() + 900, {}
        while time.time() < deadline:
            code, status = client.json("GET", "/train/")
            if status.get("status") not in ("SUBMITTED", "QUEUED", "RUNNING"):
                break
            time.sleep(2)
        self.assertEqual(status.get("status"), "DONE", f"{json.dumps(status)[-2000:]}\n{log}")
        code, again = client.json("POST", f"/infer/{MODEL}?image=slice_001&output=json")
        self.assertEqual(code, 200, again)

        # bundle/docs/README.md's MONAI Label block: the same init (on the stage commands' finetune) and start
        docs = joined_lines(bash_blocks(BUNDLE_DOCS, "### MONAI Label")[0])
        (docs_start,) = [c for c in docs if "-m mstl_monai.label start " in c]
        self.assertEqual(re.sub(r" --host \S+", "", start), docs_start)
        docs_init = [c for c in docs if c != docs_start]
        proc = run_script(self.local("\n".join(docs_init), py, ckpt, data, port).replace("apps/covid", "apps/covid_docs"),
                          REPO_ROOT, env=env, timeout=600)
        self.assertEqual(proc.returncode, 0, proc.stderr[-3000:])
        self.assertIn("image_size 32", proc.stdout)  # read from the checkpoint's model.pt.json


if __name__ == "__main__":
    unittest.main()
