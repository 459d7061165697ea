"""SSTL-M through the bundle CLI on a few real COVID19-CT slices: the three methods, the finetune hand-over, exact
resume, and two gloo processes (``torchrun``)."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

import torch
from parameterized import parameterized

from tests.utils import DATA_ROOT, REPO_ROOT, require_real_data

BUNDLE = REPO_ROOT / "bundle"
CONFIG = BUNDLE / "configs" / "sstl_m.yaml"

#: a tiny recipe: seconds per epoch on one CPU thread (crops >= 32 px: see SSTLTrainer's bf16 warning)
TINY = {
    "backbone": "resnet18",
    "n_attn": 1,
    "image_size": 32,
    "resize_size": 40,
    "region_size": 32,
    "batch_size": 4,
    "queue_size": 8,
    "num_workers": 0,
    "learning_rate": 0.01,
    "lr_milestones": [100],
    "amp": True,
    "probe_k": 3,
    "use_luna16": True,
}
N_TRAIN, N_VAL, N_LUNA = 5, 3, 2  # per class; 10 COVID19-CT train + 2 LUNA16 slices = 12 SSL images, 3 batches


def mini_covid_ct(root: Path) -> Path:
    """A COVID19-CT folder (same layout and official split files) holding the first slices of each split file of the
    real data as symlinks, plus a ``luna16`` folder beside it: ``root`` is the data root."""
    src = DATA_ROOT / "covid-ct"
    dst = root / "covid-ct"
    for cls, folder in (("COVID", "CT_COVID"), ("NonCOVID", "CT_NonCOVID")):
        (dst / folder).mkdir(parents=True, exist_ok=True)
        (dst / "Data-split" / cls).mkdir(parents=True, exist_ok=True)
        stems = {p.stem: p for p in (src / folder).iterdir()}
        for split, n in (("train", N_TRAIN), ("val", N_VAL), ("test", 1)):
            lines = (src / "Data-split" / cls / f"{split}CT_{cls}.txt").read_text().splitlines()
            names = [ln.strip() for ln in lines if ln.strip()]
            kept = []
            for name in names:
                p = stems.get(Path(name).stem)
                if p is None:
                    continue
                (dst / folder / p.name).symlink_to(p)
                kept.append(p.name)
                if len(kept) == n:
                    break
            (dst / "Data-split" / cls / f"{split}CT_{cls}.txt").write_text("\n".join(kept) + "\n")
    luna = root / "luna16" / "images"
    luna.mkdir(parents=True)
    for p in sorted((DATA_ROOT / "luna16" / "images").glob("*.png"))[:N_LUNA]:
        (luna / p.name).symlink_to(p)
    return root


def fmt(v) -> str:
    return v if isinstance(v, str) else repr(v)


def run_sstl(overrides: dict, launcher: list[str] | None = None, check: bool = True, timeout: int = 600):
    cmd = (launcher or [sys.executable]) + ["-m", "monai.bundle", "run", "--config_file", str(CONFIG)]
    cmd += ["--bundle_root", str(BUNDLE), "--meta_file", str(BUNDLE / "configs" / "metadata.json")]
    for k, v in overrides.items():
        cmd += [f"--{k}", fmt(v)]
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # tiny networks on a shared 2-core machine: no OpenMP contention
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"SSTL-M run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


_TERM_RE = re.compile(r"\b(loss|loss_cons|loss_region|instance_acc|region_acc|region_fallback_rate): (\S+)")


class TestSSTLBundle(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_sstl_"))
        cls.root = None
        if (DATA_ROOT / "covid-ct").is_dir():
            cls.root = mini_covid_ct(cls.tmp / "data")
        cls.base = dict(TINY, data_root=str(cls.tmp / "data"))
        # an STL-M-like checkpoint (3-way CXR head) as the incoming weights of the `ours` run
        from mstl_monai.networks import build_network

        torch.manual_seed(3)
        cls.stl_m = build_network("resnet18", n_attn=1, n_input_channels=1, num_classes=3)
        cls.stl_m_path = cls.tmp / "stl_m_model.pt"
        torch.save(cls.stl_m.state_dict(), cls.stl_m_path)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        require_real_data(self)

    @parameterized.expand([["ours"], ["moco"], ["simclr"]])
    def test_method_runs_and_hands_over(self, method):
        run_dir = self.tmp / f"run_{method}"
        pretrained = str(self.stl_m_path) if method == "ours" else ""
        proc = run_sstl(dict(self.base, method=method, run_dir=str(run_dir), epochs=2, pretrained=pretrained))
        log = proc.stdout + proc.stderr
        if pretrained:
            self.assertIn(f"loaded stage checkpoint {pretrained}", log)
        # every term logged, finite
        seen: dict[str, list[float]] = {}
        for name, value in _TERM_RE.findall(log):
            seen.setdefault(name, []).append(float(value))
        expected = {"loss", "loss_cons", "instance_acc"}
        if method == "ours":
            expected |= {"loss_region", "region_acc", "region_fallback_rate"}
        self.assertEqual(set(seen), expected, log[-3000:])
        for name, values in seen.items():
            self.assertEqual(len(values), 2 * 3, f"{name}: one value per iteration (2 epochs x 3 batches)")
            self.assertTrue(all(math.isfinite(v) for v in values), f"{name}: {values}")
        self.assertTrue(list((run_dir / "eval").glob("events.out.tfevents.*")), "TensorBoard logs")
        # the backbone goes on to the finetune network
        model = run_dir / "models" / "model.pt"
        sd = torch.load(model, map_location="cpu", weights_only=True)
        self.assertIn("conv1.weight", sd)
        self.assertTrue(any(k.startswith("attn.") for k in sd), "the non-local block is part of the backbone")
        heads = ("encoder_", "moco.", "simclr.", "region_head.", "fc.", "module.")
        self.assertFalse(any(k.startswith(heads) for k in sd))
        from mstl_monai.networks import build_network, load_pretrained

        ft = build_network("resnet18", n_attn=1, n_input_channels=1, num_classes=2)
        report = load_pretrained(ft, str(model))
        self.assertEqual(sorted(report["new"]), ["fc.bias", "fc.weight"])
        torch.testing.assert_close(ft.conv1.weight, sd["conv1.weight"])
        # probes before and after, on the val slices
        probe = json.loads((run_dir / "probe.json").read_text())
        for when in ("before", "after"):
            self.assertEqual(probe[when]["knn"]["n_val"], 2 * N_VAL)
            self.assertEqual(probe[when]["knn"]["n_train"], 2 * N_TRAIN)
            self.assertTrue(0.0 <= probe[when]["knn"]["auc"] <= 1.0)
            self.assertEqual(probe[when]["lobe"]["n_crops"], 5 * 2 * N_VAL)
            self.assertIn("knn_accuracy", probe[when]["lobe"])
            self.assertEqual("head_accuracy" in probe[when]["lobe"], method == "ours")
        self.assertIn("probe_knn_accuracy", probe["delta"])

    def test_resume_matches_unbroken_run(self):
        """Stopped after epoch 1 and resumed: the same backbone and MoCo queue as an unbroken 2-epoch run."""
        ov = dict(self.base, method="ours", run_probes=False)
        unbroken, broken = self.tmp / "unbroken", self.tmp / "broken"
        run_sstl(dict(ov, run_dir=str(unbroken), epochs=2))
        run_sstl(dict(ov, run_dir=str(broken), epochs=1))
        proc = run_sstl(dict(ov, run_dir=str(broken), epochs=2))
        self.assertIn("resumed from", proc.stdout + proc.stderr)
        a = torch.load(unbroken / "models" / "model.pt", map_location="cpu", weights_only=True)
        b = torch.load(broken / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.assertEqual(set(a), set(b))
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"backbone weight {k} differs after resume")
        ca = max((unbroken / "models").glob("checkpoint*=*.pt"), key=lambda p: p.stat().st_mtime)
        cb = max((broken / "models").glob("checkpoint*=*.pt"), key=lambda p: p.stat().st_mtime)
        qa = torch.load(ca, map_location="cpu", weights_only=True)["network"]["moco.queue"]
        qb = torch.load(cb, map_location="cpu", weights_only=True)["network"]["moco.queue"]
        torch.testing.assert_close(qa, qb, rtol=0, atol=0)

    def test_generator_on_device_runs_and_resumes(self):
        """generator_on_device: the trainer makes the lobe crops from the batch's full slices; the run logs every
        term and, stopped after epoch 1 and resumed, ends with the same backbone as an unbroken run."""
        ov = dict(self.base, method="ours", run_probes=False, generator_on_device=True)
        unbroken, broken = self.tmp / "dev_unbroken", self.tmp / "dev_broken"
        proc = run_sstl(dict(ov, run_dir=str(unbroken), epochs=2))
        seen: dict[str, list[float]] = {}
        for name, value in _TERM_RE.findall(proc.stdout + proc.stderr):
            seen.setdefault(name, []).append(float(value))
        self.assertEqual(len(seen.get("loss_region", [])), 2 * 3, "a region loss every iteration")
        self.assertEqual(seen["region_fallback_rate"], [0.0] * 6)
        self.assertTrue(all(math.isfinite(v) for vals in seen.values() for v in vals))
        run_sstl(dict(ov, run_dir=str(broken), epochs=1))
        proc = run_sstl(dict(ov, run_dir=str(broken), epochs=2))
        self.assertIn("resumed from", proc.stdout + proc.stderr)
        a = torch.load(unbroken / "models" / "model.pt", map_location="cpu", weights_only=True)
        b = torch.load(broken / "models" / "model.pt", map_location="cpu", weights_only=True)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"backbone weight {k} differs after resume")

    def test_two_gloo_processes(self):
        run_dir = self.tmp / "ddp"
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2"]
        # per process: batch 2 (global 4), queue 8 >= 4 keys gathered per iteration
        proc = run_sstl(dict(self.base, method="ours", run_dir=str(run_dir), epochs=1, batch_size=2), launcher=launcher)
        log = proc.stdout + proc.stderr
        sd = torch.load(run_dir / "models" / "model.pt", map_location="cpu", weights_only=True)
        self.assertFalse(any(k.startswith("module.") for k in sd))
        ckpt = next((run_dir / "models").glob("checkpoint*=*.pt"))
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        # 12 images / (2 processes x 2) = 3 iterations x 4 gathered keys = 12 keys queued in a queue of 8
        self.assertEqual(int(state["network"]["moco.queue_ptr"][0]), 12 % 8)
        self.assertTrue((run_dir / "probe.json").is_file(), log[-2000:])
        self.assertIn("loss_region", log)

    def test_bad_settings_fail_before_training(self):
        proc = run_sstl(dict(self.base, run_dir=str(self.tmp / "bad_q"), queue_size=64, epochs=1), check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("queue length K=64", proc.stdout + proc.stderr)
        proc = run_sstl(dict(self.base, run_dir=str(self.tmp / "bad_m"), method="byol", epochs=1), check=False)
        self.assertNotEqual(proc.returncode, 0)
        self.assertIn("byol", proc.stdout + proc.stderr)
        self.assertFalse((self.tmp / "bad_q" / "models" / "model.pt").exists())


if __name__ == "__main__":
    unittest.main()
