"""Two runs of one config at once never train the same stage folder: a lock file per stage folder (pid, host, start
time), a second holder refused with one line naming the other process, stale locks of dead processes taken over."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from mstl_monai.pipeline import load_pipeline_config, plan_chain
from tests.engines.test_pipeline_reuse import run_main, write_cfg
from tests.utils import REPO_ROOT


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **extra)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 60) -> None:
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the other process ended ({proc.returncode}): {proc.stdout.read() if proc.stdout else ''}")
        if time.time() - t0 > seconds:
            raise AssertionError(f"{path} did not appear in {seconds}s")
        time.sleep(0.05)


class TestStageLock(unittest.TestCase):
    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory()
        self.root = Path(self._tmp.name)
        write_cfg(self.root)
        self.args = ["--repo-root", str(self.root), "--config", str(self.root / "pipe.yaml")]
        cfg = load_pipeline_config(self.root / "pipe.yaml")
        self.ft = Path(plan_chain(cfg, cfg["chains"][0], self.root)[0]["dir"])
        self.lock = self.ft.with_name(self.ft.name + ".lock")
        self.procs: list[subprocess.Popen] = []

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()
        self._tmp.cleanup()

    def _holder(self) -> subprocess.Popen:
        """A live process holding the finetune folder's lock."""
        code = (
            "import sys, time\nfrom mstl_monai.pipeline.lock import StageLock\n"
            f"StageLock({str(self.ft)!r}).acquire()\nprint('held', flush=True)\ntime.sleep(120)\n"
        )
        p = subprocess.Popen([sys.executable, "-c", code], env=_env(), stdout=subprocess.PIPE, text=True)
        self.procs.append(p)
        self.assertEqual(p.stdout.readline().strip(), "held")
        return p

    def test_second_holder_refused_then_stale_lock_taken_over(self):
        holder = self._holder()
        with self.assertRaises(SystemExit) as cm:
            run_main(*self.args)
        msg = str(cm.exception.code)
        self.assertEqual(len(msg.splitlines()), 1, msg)
        self.assertIn(f"process {holder.pid} on {socket.gethostname()}", msg)
        self.assertIn(str(self.ft), msg)
        self.assertFalse((self.ft / "DONE.json").exists())
        holder.send_signal(signal.SIGKILL)  # killed: its lock file stays behind
        holder.wait()
        self.assertTrue(self.lock.is_file())
        out = run_main(*self.args)
        self.assertRegex(out, rf"taking over the lock .* of process {holder.pid} \(no longer running")
        self.assertTrue((self.ft / "DONE.json").is_file())
        self.assertFalse(self.lock.exists(), "released once the stage is done")

    def test_two_pipeline_processes(self):
        code = "import sys\nfrom tests.engines._fake_bundle import run_main\nsys.exit(run_main(sys.argv[1:]))"
        first = subprocess.Popen(
            [sys.executable, "-c", code] + self.args, env=_env(FAKE_STAGE_SLEEP="4"), cwd=REPO_ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.procs.append(first)
        _wait_for(self.ft / "SETTINGS.json", first)  # the first one is training the finetune
        with self.assertRaises(SystemExit) as cm:
            run_main(*self.args)
        self.assertIn(f"is being trained by process {first.pid}", str(cm.exception.code))
        out, _ = first.communicate(timeout=120)
        self.assertEqual(first.returncode, 0, out)
        out = run_main(*self.args)  # the first one's stages are done for these settings
        self.assertRegex(out, r"finetune\] already done")

    def test_lock_of_another_host_and_release_on_failure(self):
        self.lock.parent.mkdir(parents=True)
        self.lock.write_text(json.dumps({"pid": 1, "host": "elsewhere.example", "started": "2025-01-01T00:00:00"}))
        with self.assertRaisesRegex(SystemExit, r"process 1 on elsewhere\.example .*delete .*finetune\.lock"):
            run_main(*self.args)
        self.lock.unlink()
        os.environ["FAKE_STAGE_FAIL"] = "finetune"
        try:
            with self.assertRaisesRegex(RuntimeError, "failed with exit code 1"):
                run_main(*self.args)
        finally:
            del os.environ["FAKE_STAGE_FAIL"]
        self.assertFalse(self.lock.exists(), "a failed stage releases its lock")


if __name__ == "__main__":
    unittest.main()
