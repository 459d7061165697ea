# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Handlers run in the order they are attached (the bundle configs list them in that order): the resume handler
listed first among the trainer's own handlers restores the trainer, a threshold handler attached after its saver is
refused, and the bundle configs list them so."""

from __future__ import annotations

import shutil
import tempfile
import unittest
from pathlib import Path

import torch
import yaml
from ignite.engine import Events

from monai.engines import SupervisedEvaluator, SupervisedTrainer
from mstl_monai.handlers import AtomicCheckpointSaver, DecisionThresholdHandler, ResumeFromLatest
from tests.utils import REPO_ROOT


def _trainer(net: torch.nn.Module, epochs: int, handlers: list) -> SupervisedTrainer:
    data = [{"image": torch.randn(2, 3), "label": torch.tensor([0, 1])} for _ in range(2)]
    return SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=data, network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=handlers,
    )


class TestHandlerOrder(unittest.TestCase):
    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp(prefix="mstl_order_"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def test_threshold_handler_after_its_saver_is_refused(self):
        net = torch.nn.Linear(3, 2)
        saver = AtomicCheckpointSaver(save_dir=str(self.tmp), save_dict={"network": net}, save_key_metric=True,
                                      key_metric_filename="model.pt")
        evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=net)
        saver.attach(evaluator)
        with self.assertRaisesRegex(ValueError, "attached after its checkpoint saver: list it before the saver"):
            DecisionThresholdHandler(saver=saver).attach(evaluator)
        other = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=[], network=net)
        DecisionThresholdHandler(saver=saver).attach(other)  # before the saver: fine
        saver.attach(other)

    def test_resume_listed_first_restores_the_trainer_before_later_handlers_start(self):
        net = torch.nn.Linear(3, 2)
        first = _trainer(net, 1, [])
        AtomicCheckpointSaver(save_dir=str(self.tmp), save_dict={"network": net, "trainer": first}, save_interval=1,
                              n_saved=1).attach(first)
        first.run()
        seen = []

        class Probe:
            def attach(self, engine):
                engine.add_event_handler(Events.STARTED, lambda e: seen.append(e.state.epoch))

        resume = ResumeFromLatest(str(self.tmp), {"network": net}, engine_key="trainer")
        second = _trainer(net, 2, [resume, Probe()])
        second.run()
        self.assertEqual(resume.loaded_path, str(self.tmp / "checkpoint_epoch=1.pt"))
        self.assertEqual(seen, [1], "the later STARTED handler sees the resumed epoch")
        self.assertEqual(second.state.epoch, 2)

    def test_bundle_configs_list_them_in_order(self):
        for name in ("train.yaml", "sstl_m.yaml"):
            cfg = yaml.safe_load((REPO_ROOT / "bundle" / "configs" / name).read_text())
            targets = [h.get("_target_", h) if isinstance(h, dict) else h for h in cfg["train"]["handlers"]]
            self.assertEqual(targets[:2], ["mstl_monai.handlers.ResumeFromLatest", "mstl_monai.handlers.NonFiniteGuard"],
                             name)
        val = yaml.safe_load((REPO_ROOT / "bundle" / "configs" / "train.yaml").read_text())["validate"]["handlers"]
        targets = [h.get("_target_", h) if isinstance(h, dict) else h for h in val]
        self.assertLess(targets.index("mstl_monai.handlers.DecisionThresholdHandler"), targets.index("@validate#saver"))


if __name__ == "__main__":
    unittest.main()
