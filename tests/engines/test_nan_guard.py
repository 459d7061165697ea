"""A diverged training step (NaN/inf loss, gradient or weight) stops the run with a one-line error and saves nothing.

In process: MONAI's ``SupervisedTrainer`` with the bundle's savers (resumable interval checkpoint, best ``model.pt``
through a validator, ``model_final.pt`` on exceptions), resumed from a finished first run and then fed a loss that
is NaN at iteration k, a gradient that is NaN from a finite loss, or a weight made NaN at the end of an epoch: the
error names the stage, run, epoch and iteration; every file in the checkpoint folder is unchanged byte for byte.
Through the CLI: the bundle's ``train.yaml`` resumed with a NaN-weighted loss exits non-zero with that line, and
the pipeline runner reports the stage failed and writes no ``DONE.json``.
"""

from __future__ import annotations

import hashlib
import tempfile
import unittest
from pathlib import Path
from unittest import mock

import torch
from ignite.engine import Engine, Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.handlers import ValidationHandler

from mstl_monai.handlers import (
    AtomicCheckpointSaver,
    FreezeBatchNorm,
    NonFiniteError,
    NonFiniteGuard,
    ResumeFromLatest,
    freeze_batch_norm,
)
from mstl_monai.handlers.training import _SaveThenRemove
from tests.bundle._bundle_utils import TINY, phantom_dataset, run_bundle

BATCHES = 4  # iterations per epoch


def _files(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


class _NaNAt:
    """Cross-entropy, NaN at the given global iterations (of ``engine``)."""

    def __init__(self, iterations=()):
        self.iterations, self.engine = set(iterations), None

    def __call__(self, pred, target):
        loss = torch.nn.functional.cross_entropy(pred, target)
        if self.engine is not None and self.engine.state.iteration in self.iterations:
            return loss * float("nan")
        return loss


class _NaNGrad(torch.autograd.Function):
    """Identity forward, NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


def _run(ckpt_dir: Path, epochs: int, loss=None, network_hook=None, stage="finetune", run_dir="runs/x"):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    data = [{"image": torch.randn(4, 3), "label": torch.tensor([0, 1, 0, 1])} for _ in range(BATCHES)]
    forward = net if network_hook is None else network_hook(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    val_saver = AtomicCheckpointSaver(
        save_dir=str(ckpt_dir), save_dict={"network": net}, save_key_metric=True, key_metric_filename="model.pt"
    )
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=data[:1], network=net,
        key_val_metric={"val_neg_loss": _NegLoss()}, val_handlers=[val_saver],
    )
    loss = loss or _NaNAt()
    trainer = SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=data, network=forward, optimizer=opt,
        loss_function=loss, train_handlers=[
            NonFiniteGuard(stage=stage, run_dir=run_dir, ckpt_dir=ckpt_dir, network=net),
            ValidationHandler(validator=evaluator, epoch_level=True, interval=1),
        ],
    )
    loss.engine = trainer
    state = {"network": net, "optimizer": opt, "trainer": trainer, "best_saver": val_saver}
    ResumeFromLatest(str(ckpt_dir), state).attach(trainer)
    AtomicCheckpointSaver(
        save_dir=str(ckpt_dir), save_dict=state, save_interval=1, n_saved=1, save_final=True,
        final_filename="model_final.pt",
    ).attach(trainer)
    trainer.run()
    return net, trainer


class _NegLoss:
    """A key metric that improves every epoch (so each validation writes a new best model.pt)."""

    def __new__(cls):
        from ignite.metrics import Metric

        class NegLoss(Metric):
            def reset(self):
                self.n = 0

            def update(self, output):
                self.n += 1

            def compute(self):
                return float(torch.randn(()).abs() + 1e3)  # always better than -inf

        return NegLoss(output_transform=lambda o: o)


class TestNonFiniteGuard(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_nan_"))
        self.ckpt = self.tmp / "models"
        _run(self.ckpt, epochs=1)  # a finished first epoch: model.pt, checkpoint_epoch=1.pt, model_final.pt
        self.before = _files(self.ckpt)
        self.assertIn("model_final.pt", self.before)
        self.assertTrue(any(n.startswith("checkpoint") for n in self.before), self.before)

    def tearDown(self):
        import shutil

        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_nan_loss_at_iteration_k(self):
        k = BATCHES + 3  # epoch 2, its third iteration
        with self.assertRaises(NonFiniteError) as cm:
            _run(self.ckpt, epochs=3, loss=_NaNAt([k]), run_dir=str(self.tmp))
        msg = str(cm.exception)
        self.assertEqual(len(msg.splitlines()), 1, msg)
        for part in ("non-finite training loss (loss=nan)", "stage finetune", f"run {self.tmp}", "epoch 2",
                     f"iteration {k} (3 of {BATCHES} in the epoch)", "before the backward pass", str(self.ckpt),
                     "learning_rate", "amp"):
            self.assertIn(part, msg)
        self.assertEqual(_files(self.ckpt), self.before, "no checkpoint may change")

    def test_nan_loss_leaves_weights_untouched(self):
        weights = {}

        def keep(net):
            weights["net"] = net
            return net

        with self.assertRaises(NonFiniteError):
            _run(self.ckpt, epochs=2, loss=_NaNAt([BATCHES + 1]), network_hook=keep)
        self.assertTrue(all(torch.isfinite(p).all() for p in weights["net"].parameters()))

    def test_nan_gradient_from_finite_loss(self):
        def nan_grad(net):
            class Wrapped(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.net = net

                def forward(self, x):
                    return _NaNGrad.apply(self.net(x))

            return Wrapped()

        with self.assertRaises(NonFiniteError) as cm:
            _run(self.ckpt, epochs=2, network_hook=nan_grad)
        self.assertIn("non-finite gradients (of 0.weight, 0.bias, 1.weight) from a finite loss", str(cm.exception))
        self.assertIn("before the optimiser step", str(cm.exception))
        self.assertEqual(_files(self.ckpt), self.before)

    def test_inf_weight_in_last_batch(self):
        def poison_last_step(net):
            class Poison(torch.nn.Module):
                def __init__(self):
                    super().__init__()
                    self.net, self.calls = net, 0

                def forward(self, x):
                    self.calls += 1
                    if self.calls == BATCHES:  # the resumed run's (epoch 2's) last batch, before its forward
                        with torch.no_grad():
                            net[0].weight[0, 0] = float("inf")
                    return self.net(x)

            return Poison()

        with self.assertRaises(NonFiniteError) as cm:
            _run(self.ckpt, epochs=2, network_hook=poison_last_step)
        self.assertIn("non-finite training loss", str(cm.exception))  # inf weight -> nan loss, caught first
        self.assertEqual(_files(self.ckpt), self.before)

    def test_epoch_end_weight_check_runs_before_savers(self):
        net = torch.nn.Linear(2, 2)
        trainer = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=[{"image": torch.randn(2, 2),
            "label": torch.tensor([0, 1])}], network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
            loss_function=torch.nn.CrossEntropyLoss(),
        )
        other = self.tmp / "other"  # not resumed: a fresh folder (the saver would remove epoch-1 files as stale)
        saver = AtomicCheckpointSaver(save_dir=str(other), save_dict={"network": net}, save_interval=1, n_saved=1)
        NonFiniteGuard(stage="stl_m", run_dir="r").attach(trainer)  # listed first (as in the bundle configs)
        saver.attach(trainer)

        @trainer.on(Events.ITERATION_COMPLETED)
        def poison(engine):
            with torch.no_grad():
                net.bias[1] = float("nan")

        with self.assertRaisesRegex(NonFiniteError, r"non-finite weights \(in bias\) in stage stl_m, run r, at epoch 1"):
            trainer.run()
        self.assertEqual(_files(other) if other.is_dir() else {}, {}, "nothing saved")

    def test_non_finite_validation_predictions(self):
        net = torch.nn.Linear(2, 2)
        with torch.no_grad():
            net.weight.fill_(3e38)  # finite weights whose forward overflows
        saver = AtomicCheckpointSaver(save_dir=str(self.ckpt), save_dict={"network": net}, save_key_metric=True,
                                      key_metric_filename="model.pt")
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"), val_data_loader=[{"image": torch.ones(2, 2), "label": torch.tensor([0, 1])}],
            network=net, key_val_metric={"val_neg_loss": _NegLoss()},
            val_handlers=[NonFiniteGuard(stage="finetune", run_dir="r"), saver],
        )
        with self.assertRaisesRegex(NonFiniteError, r"^non-finite validation predictions \(the weights diverged in "
                                    r"training\) in stage finetune, run r, at epoch 1, validation iteration 1 "):
            evaluator.run()
        self.assertEqual(_files(self.ckpt), self.before)

    def test_saver_refuses_non_finite(self):
        handler = _SaveThenRemove(self.ckpt, filename="model.pt")
        with self.assertRaisesRegex(NonFiniteError, r"not writing .*model.pt: it would hold non-finite values \(in network.w\)"):
            handler({"network": {"w": torch.tensor([1.0, float("nan")])}}, "model.pt")
        self.assertEqual(_files(self.ckpt), self.before)


class TestFreezeBatchNorm(unittest.TestCase):
    def test_running_statistics_used_and_kept(self):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4))
        net[1].running_mean.fill_(0.5)
        mean = net[1].running_mean.clone()
        x = torch.randn(2, 1, 3, 3)  # a batch of 2 on a 1x1 map: batch statistics would give +-1
        net.train()
        batch_out = net(x)
        net[1].running_mean.copy_(mean)
        handles = freeze_batch_norm(net)
        self.assertEqual(len(handles), 1)
        net.train()
        out = net(x)
        net.eval()
        self.assertTrue(torch.allclose(out, net(x)), "training forward = evaluation forward")
        self.assertFalse(torch.allclose(out, batch_out))
        self.assertTrue(torch.equal(net[1].running_mean, mean), "running statistics unchanged")
        out.sum().backward()
        self.assertIsNotNone(net[1].weight.grad, "the affine weights still learn")
        for enabled, n in ((False, 0), (True, 1)):  # the bundle's handler (freeze_bn) attaches the same hooks
            handler = FreezeBatchNorm(torch.nn.Sequential(torch.nn.BatchNorm2d(2)), enabled=enabled)
            handler.attach(Engine(lambda e, b: None))
            self.assertEqual(len(handler.handles), n)


class TestBundleAndPipeline(unittest.TestCase):
    """The bundle's train.yaml resumed with a NaN loss: error exit, files unchanged; the pipeline reports it failed."""

    def test_bundle_and_pipeline(self):
        from mstl_monai.pipeline.run import run_chain

        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            run_dir = d / "ft"
            ov = dict(TINY, dataset_dir=str(phantom_dataset(d, n_per_class=4)), epochs=1, run_dir=str(run_dir))
            run_bundle(["train.yaml"], ov)
            ckpt = run_dir / "models"
            before = _files(ckpt)
            self.assertIn("model.pt", before)
            nan_loss = "$torch.nn.CrossEntropyLoss(weight=torch.tensor([float('nan'), 1.0]))"
            proc = run_bundle(["train.yaml"], dict(ov, epochs=2, loss=nan_loss), check=False)
            self.assertNotEqual(proc.returncode, 0)
            last = proc.stderr.strip().splitlines()[-1]
            self.assertRegex(
                last, rf"^(?:[\w.]+\.)?NonFiniteError: non-finite training loss \(loss=nan\) in stage "
                rf"finetune, run {run_dir}, at epoch 2, iteration \d+ \(1 of \d+ in the epoch\): stopped before the "
                rf"backward pass; the checkpoints in {ckpt} are those of the last finite epoch; likely remedies: ",
            )
            self.assertEqual(_files(ckpt), before, "no checkpoint may change")

            # the pipeline runner: a stage that stops on it is failed (naming the error), and not marked done
            step_dir = d / "step"
            step = {"stage": "finetune", "dir": str(step_dir), "cmd": proc.args, "checkpoint": str(ckpt / "model.pt")}
            cfg = {"output_root": str(d / "out"), "results_dir": str(d / "results")}
            with mock.patch("mstl_monai.pipeline.run.plan_chain", return_value=[step]):
                with self.assertRaisesRegex(RuntimeError, r"failed with exit code 1 after \d+s: (?:[\w.]+\.)?NonFiniteError: "
                                            r"non-finite training loss .* log: "):
                    run_chain(cfg, {"name": "c"}, d, rerun=True)
            self.assertFalse((step_dir / "DONE.json").exists())


if __name__ == "__main__":
    unittest.main()
