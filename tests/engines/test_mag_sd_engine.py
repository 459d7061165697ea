# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import unittest

import torch
from monai.engines import SupervisedTrainer

from mstl_monai.engines import MAGSD_TERMS, MAGSDIteration, mag_sd_metrics
from mstl_monai.inferers import AutocastInferer
from mstl_monai.networks import build_network
from mstl_monai.losses import SoftDistanceLoss
from mstl_monai.transforms import AttentionAugment


def _loader(n: int = 8, size: int = 64, classes: int = 3):
    g = torch.Generator().manual_seed(0)
    data = [{"image": torch.randn(1, size, size, generator=g), "label": i % classes} for i in range(n)]
    return torch.utils.data.DataLoader(data, batch_size=4)


class TestMAGSDIteration(unittest.TestCase):
    def _trainer(self, net, step, amp=False, metrics=None):
        return SupervisedTrainer(
            device=torch.device("cpu"),
            max_epochs=1,
            train_data_loader=_loader(),
            network=net,
            optimizer=torch.optim.SGD(net.parameters(), lr=0.01),
            loss_function=torch.nn.CrossEntropyLoss(),
            inferer=AutocastInferer(enabled=amp),
            iteration_update=step,
            # MONAI attaches additional metrics only beside a key metric (the bundle's is train_acc)
            key_train_metric=None if metrics is None else {"train_loss_ce": metrics.pop("train_loss_ce")},
            additional_metrics=metrics,
        )

    def test_step_loss_terms_and_metrics_bf16(self):
        torch.manual_seed(0)
        net = build_network("resnet18", n_attn=5, attention_maps=3, n_input_channels=1, num_classes=3)
        before = {k: v.clone() for k, v in net.state_dict().items()}
        step = MAGSDIteration(AttentionAugment(generator=torch.Generator().manual_seed(0)), SoftDistanceLoss())
        trainer = self._trainer(net, step, amp=True, metrics=mag_sd_metrics())
        trainer.run()
        out = trainer.state.output
        out = out[0] if isinstance(out, list) else out
        for t in MAGSD_TERMS:
            self.assertIn(t, out)
        sd = sum(out[t] for t in MAGSD_TERMS[1:])
        self.assertAlmostEqual(float(out["loss"]), out["loss_ce"] + sd, places=4)
        self.assertGreater(sd, 0.0)
        for t in MAGSD_TERMS:
            self.assertIn(f"train_{t}", trainer.state.metrics)
        changed = [
            k for k, v in net.state_dict().items() if k.startswith("attention.") and not torch.equal(v, before[k])
        ]
        self.assertTrue(changed, "the attention head is trained")

    def test_with_mixup_soft_labels(self):
        from mstl_monai.engines import MixUpPrepareBatch

        torch.manual_seed(0)
        net = build_network("resnet18", n_attn=0, attention_maps=3, n_input_channels=1, num_classes=3)
        trainer = self._trainer(net, MAGSDIteration())
        trainer.prepare_batch = MixUpPrepareBatch(num_classes=3, alpha=0.4)
        trainer.run()
        out = trainer.state.output
        out = out[0] if isinstance(out, list) else out
        self.assertTrue(all(t in out for t in MAGSD_TERMS))

    def test_plain_network_refused(self):
        net = build_network("resnet18", n_input_channels=1, num_classes=3)
        trainer = self._trainer(net, MAGSDIteration())
        with self.assertRaisesRegex(TypeError, "MultiscaleAttentionNet"):
            trainer.run()


if __name__ == "__main__":
    unittest.main()
