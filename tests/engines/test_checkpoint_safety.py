"""A failure or a kill during a checkpoint save never loses the previous best model or resumable checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import unittest
from pathlib import Path
from unittest import mock

import torch
from ignite.engine import Engine, Events

from mstl_monai.handlers import AtomicCheckpointSaver, ResumeFromLatest
from tests.bundle._bundle_utils import TINY, bundle_cmd, phantom_dataset
from tests.utils import REPO_ROOT


def _engine(net: torch.nn.Module) -> Engine:
    engine = Engine(lambda e, b: None)

    @engine.on(Events.EPOCH_COMPLETED)
    def _metric(e):  # a new best every epoch
        e.state.metrics = {"acc": float(e.state.epoch)}

    return engine


def _failing_save(engine: Engine, fail_epoch: int):
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if engine.state.epoch == fail_epoch:
            if hasattr(f, "write"):
                f.write(b"\x80\x02partial")
            else:
                Path(f).write_bytes(b"\x80\x02partial")
            raise OSError("no space left on device")
        return real(obj, f, *args, **kwargs)

    return save


class TestSaveFailure(unittest.TestCase):
    def _run_until_failure(self, d: str, **saver_kwargs) -> None:
        net = torch.nn.Linear(2, 2)
        engine = _engine(net)
        AtomicCheckpointSaver(save_dir=d, save_dict={"network": net, "trainer": engine}, **saver_kwargs).attach(engine)
        with mock.patch.object(torch, "save", _failing_save(engine, fail_epoch=2)):
            with self.assertRaises(OSError):
                engine.run([0], max_epochs=3)
        self.assertEqual([f for f in os.listdir(d) if "tmp" in f], [], "temporary files are removed")

    def test_best_model_survives_failed_save(self):
        with tempfile.TemporaryDirectory() as d:
            self._run_until_failure(d, save_key_metric=True, key_metric_name="acc", key_metric_filename="model.pt")
            sd = torch.load(Path(d, "model.pt"), weights_only=True)
            self.assertIn("weight", sd["network"])

    def test_resumable_checkpoint_survives_failed_save(self):
        with tempfile.TemporaryDirectory() as d:
            self._run_until_failure(d, save_interval=1, n_saved=1)
            self.assertEqual(sorted(os.listdir(d)), ["checkpoint_epoch=1.pt"])
            ckpt = torch.load(Path(d, "checkpoint_epoch=1.pt"), weights_only=True)
            self.assertEqual(ckpt["trainer"]["iteration"], 1)

    def test_old_file_removed_after_new_written(self):
        with tempfile.TemporaryDirectory() as d:
            net = torch.nn.Linear(2, 2)
            engine = _engine(net)
            AtomicCheckpointSaver(save_dir=d, save_dict={"network": net, "trainer": engine}, save_interval=1, n_saved=1).attach(engine)
            engine.run([0], max_epochs=3)
            self.assertEqual(sorted(os.listdir(d)), ["checkpoint_epoch=3.pt"])

    def test_restored_state_names_missing_best_file(self):
        """A resumed run whose saver state names a model.pt that an earlier crash never wrote keeps training."""
        with tempfile.TemporaryDirectory() as d:
            net = torch.nn.Linear(2, 2)
            engine = _engine(net)
            saver = AtomicCheckpointSaver(
                save_dir=d, save_dict={"network": net}, save_key_metric=True, key_metric_name="acc", key_metric_filename="model.pt"
            )
            saver.load_state_dict({"_saved": [(0.5, "network_key_metric=0.5000.pt")]})
            saver.attach(engine)
            engine.run([0], max_epochs=1)
            self.assertTrue(Path(d, "model.pt").is_file())


class TestStartTidiesFolder(unittest.TestCase):
    def test_orphans_and_stale_checkpoints_removed_on_resume(self):
        with tempfile.TemporaryDirectory() as d:
            net = torch.nn.Linear(2, 2)
            first = _engine(net)
            AtomicCheckpointSaver(save_dir=d, save_dict={"network": net, "trainer": first}, save_interval=1, n_saved=None).attach(first)
            first.run([0], max_epochs=2)  # checkpoint_epoch=1.pt and =2.pt (as after a kill between save and remove)
            Path(d, "tmpab12cd34").write_bytes(b"partial")  # ignite's temporary file
            Path(d, ".model.pt.x1y2z3.tmp").write_bytes(b"partial")  # atomic_write's
            engine = _engine(net)
            state = {"network": net, "trainer": engine}
            ResumeFromLatest(d, load_dict=state).attach(engine)
            AtomicCheckpointSaver(save_dir=d, save_dict=state, save_interval=1, n_saved=1).attach(engine)
            engine.run([0], max_epochs=3)
            self.assertEqual(engine.state.epoch, 3)
            self.assertEqual(sorted(os.listdir(d)), ["checkpoint_epoch=3.pt"])


_KILLER = textwrap.dedent(
    """
    import os, signal
    import torch

    _real = torch.save

    def _save(obj, f, *args, **kwargs):
        trainer = obj.get("trainer") if isinstance(obj, dict) else None
        epoch = trainer["iteration"] // trainer["epoch_length"] if trainer else None
        if epoch == int(os.environ["MSTL_KILL_AT_EPOCH"]) and not os.environ.get("MSTL_KILLED"):
            (f.write if hasattr(f, "write") else open(f, "wb").write)(b"\\x80\\x02partial")
            os.kill(os.getpid(), signal.SIGKILL)
        return _real(obj, f, *args, **kwargs)

    torch.save = _save
    """
)


class TestKillDuringSave(unittest.TestCase):
    def test_sigkill_during_checkpoint_save_then_resume(self):
        """SIGKILL while checkpoint_epoch=2.pt is written: the rerun resumes from epoch 1 and finishes."""
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            data = phantom_dataset(tmp, n_per_class=4, size=40)
            hook = tmp / "hook"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(_KILLER)
            run_dir = tmp / "run"
            ov = dict(TINY, dataset_dir=str(data), run_dir=str(run_dir), epochs=2, n_attn=0, resize_size=36, image_size=32)
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(hook), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]))
            env.update(OMP_NUM_THREADS="1", MSTL_KILL_AT_EPOCH="2")
            cmd = bundle_cmd(["train.yaml"], ov)
            killed = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            self.assertEqual(killed.returncode, -signal.SIGKILL, killed.stderr[-3000:])
            models = run_dir / "models"
            self.assertTrue((models / "model.pt").is_file())
            self.assertTrue((models / "checkpoint_epoch=1.pt").is_file(), sorted(os.listdir(models)))
            env["MSTL_KILLED"] = "1"
            rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            self.assertEqual(rerun.returncode, 0, rerun.stderr[-3000:])
            self.assertIn("resumed from", rerun.stdout + rerun.stderr)
            self.assertIn("checkpoint_epoch=1.pt", rerun.stdout + rerun.stderr)
            left = sorted(f for f in os.listdir(models) if f.endswith(".pt"))
            self.assertEqual(left, ["checkpoint_epoch=2.pt", "model.pt", "model_final.pt"])


if __name__ == "__main__":
    unittest.main()
