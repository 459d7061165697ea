# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tests of the LEEP ignite handler inside a MONAI SupervisedEvaluator."""

from __future__ import annotations

import unittest

import torch
import torch.nn as nn
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.handlers import from_engine
from monai.transforms import Activationsd
from parameterized import parameterized

from mstl_monai.metrics import LEEP, compute_leep


def make_data(n: int = 22, one_hot: bool = False):
    g = torch.Generator().manual_seed(0)
    images = torch.randn(n, 1, 4, 4, generator=g)
    labels = (images.mean(dim=(1, 2, 3)) > 0).long()
    labels[0], labels[1] = 0, 1
    data = [
        {"image": images[i], "label": torch.nn.functional.one_hot(labels[i], 2).float() if one_hot else labels[i]}
        for i in range(n)
    ]
    return images, labels, data


class TestLEEPHandler(unittest.TestCase):
    @parameterized.expand([("int_labels", False, False), ("one_hot_labels", True, False), ("logits", False, True)])
    def test_evaluator(self, _, one_hot, logits_in_pred):
        torch.manual_seed(0)
        source_net = nn.Sequential(nn.Flatten(), nn.Linear(16, 5))  # a 5-way "source head"
        images, labels, data = make_data(one_hot=one_hot)
        post = None if logits_in_pred else Activationsd(keys="pred", softmax=True)
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"),
            val_data_loader=DataLoader(data, batch_size=4),
            network=source_net,
            postprocessing=post,
            key_val_metric={"val_leep": LEEP(apply_softmax=logits_in_pred)},
            additional_metrics={
                "leep_explicit": LEEP(apply_softmax=logits_in_pred, output_transform=from_engine(["pred", "label"]))
            },
        )
        evaluator.run()
        with torch.no_grad():
            expected = compute_leep(torch.softmax(source_net(images), 1), labels)
        self.assertAlmostEqual(evaluator.state.metrics["val_leep"], expected, places=5)
        self.assertAlmostEqual(evaluator.state.metrics["leep_explicit"], expected, places=5)
        self.assertLess(expected, 0.0)

    def test_logits_without_softmax_fail_clearly(self):
        source_net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        _, _, data = make_data()
        evaluator = SupervisedEvaluator(
            device=torch.device("cpu"),
            val_data_loader=DataLoader(data, batch_size=4),
            network=source_net,
            key_val_metric={"val_leep": LEEP()},
        )
        with self.assertRaisesRegex(ValueError, "softmax"):
            evaluator.run()


if __name__ == "__main__":
    unittest.main()
