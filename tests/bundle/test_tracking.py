"""MONAI's experiment tracking on the bundle's stages: ``monai.bundle run ... --tracking mlflow`` on a few real
COVID19-CT slices, then the MLflow store read back with mlflow's client (params, per-epoch metrics, artifacts)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import unittest
from pathlib import Path

from tests.bundle._bundle_utils import TINY, run_bundle
from tests.sstl.test_sstl_bundle import TINY as SSTL_TINY
from tests.sstl.test_sstl_bundle import mini_covid_ct, run_sstl
from tests.utils import DATA_ROOT, REPO_ROOT, require_real_data

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None


def _runs(db: Path) -> list:
    """Every run of every experiment in the SQLite store ``db``, with its params, metrics and artifact names."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    out = []
    for exp in client.search_experiments():
        for run in client.search_runs([exp.experiment_id]):
            names = [a.path for a in client.list_artifacts(run.info.run_id)]
            history = {k: client.get_metric_history(run.info.run_id, k) for k in run.data.metrics}
            out.append((exp.name, run, names, history))
    return out


@unittest.skipUnless(HAS_MLFLOW or os.environ.get("CI"), "mlflow not installed (pip install -e '.[tracking]')")
class TestBundleTracking(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp(prefix="mstl_tracking_"))
        if (DATA_ROOT / "covid-ct").is_dir():
            mini_covid_ct(cls.tmp / "data")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        require_real_data(self)

    def test_finetune_then_evaluate(self):
        run_dir = self.tmp / "finetune"
        common = dict(TINY, data_root=str(self.tmp / "data"), run_dir=str(run_dir), tracking="mlflow")
        run_bundle(["train.yaml"], dict(common, epochs=2, n_attn=1))
        runs = _runs(run_dir / "eval" / "mlruns.db")
        self.assertEqual(len(runs), 1, [r[1].info.run_name for r in runs])
        _, run, artifacts, history = runs[0]
        params = run.data.params
        self.assertEqual((params["stage"], params["backbone"], params["n_attn"]), ("finetune", "resnet18", "1"))
        self.assertEqual(params["max_epochs"], "2")
        for name in ("train_acc", "val_auc", "val_score", "val_acc"):  # trainer and validator log into one run
            self.assertEqual([m.step for m in history[name]], [1, 2], name)
        self.assertIn("train_loss", history)
        self.assertIn("model.pt", artifacts)
        self.assertIn("model.pt.json", artifacts)
        self.assertTrue(any(a.startswith("config_") and a.endswith(".json") for a in artifacts), artifacts)
        self.assertEqual(run.info.status, "FINISHED")

        ev = dict(common, eval_ckpt=str(run_dir / "models" / "model.pt"), n_bootstrap=50)
        ev.pop("backbone")  # evaluation reads the network's settings from the checkpoint
        for key in ("image_size", "resize_size"):
            ev.pop(key)
        run_bundle(["train.yaml", "evaluate.yaml"], ev)
        runs = {r[1].data.params.get("stage"): r for r in _runs(run_dir / "eval" / "mlruns.db")}  # the same store
        self.assertEqual(sorted(runs), ["evaluate", "finetune"])
        _, run, artifacts, history = runs["evaluate"]
        self.assertEqual(run.data.params["stage"], "evaluate")
        self.assertEqual(run.data.params["eval_ckpt"], str(run_dir / "models" / "model.pt"))
        for name in ("test_auc", "test_auc_ci_low", "test_auc_ci_high", "test_accuracy"):
            self.assertIn(name, history)
            self.assertTrue(0.0 <= history[name][0].value <= 1.0, name)
        self.assertIn("metrics.json", artifacts)
        self.assertIn("predictions.csv", artifacts)
        self.assertEqual(run.info.status, "FINISHED")

    def test_sstl_m_terms_and_backbone(self):
        run_dir = self.tmp / "sstl"
        run_sstl(dict(SSTL_TINY, data_root=str(self.tmp / "data"), run_dir=str(run_dir), epochs=1, tracking="mlflow"))
        (_, run, artifacts, history), = _runs(run_dir / "eval" / "mlruns.db")
        self.assertEqual((run.data.params["stage"], run.data.params["method"]), ("sstl_m", "ours"))
        # every scalar term of each iteration (3 iterations), not MONAI's default loss only
        for name in ("loss", "loss_cons", "loss_region", "instance_acc", "region_acc"):
            self.assertEqual(len(history[name]), 3, name)
        self.assertIn("model.pt", artifacts)
        self.assertEqual(run.info.status, "FINISHED")


class TestPipelineTracking(unittest.TestCase):
    def test_chain_is_one_experiment_with_a_run_per_stage(self):
        from mstl_monai.pipeline import load_pipeline_config, plan_chain

        cfg = load_pipeline_config(REPO_ROOT / "configs" / "cpu_scale.yaml")
        chain = cfg["chains"][0]
        plain = plan_chain(cfg, chain, REPO_ROOT)
        tracked = plan_chain(cfg, chain, REPO_ROOT, tracking="mlflow")
        self.assertTrue(all("--tracking" not in s["cmd"] for s in plain))
        db = f"sqlite:///{(REPO_ROOT / cfg['output_root']).resolve() / 'mlruns.db'}"
        for step in tracked:
            flags = dict(zip(step["cmd"][::1], step["cmd"][1::1]))
            self.assertEqual(flags["--tracking"], "mlflow")
            self.assertEqual(flags["--experiment_name"], chain["name"])
            self.assertEqual(flags["--run_name"], step["stage"])
            self.assertEqual(flags["--tracking_uri"], db)


if __name__ == "__main__":
    unittest.main()
