"""The guarded ROC AUC used to choose checkpoints."""

from __future__ import annotations

import unittest

import torch
from ignite.engine import Engine
from parameterized import parameterized

from mstl_monai.metrics import GuardedROCAUC, GuardedROCAUCMetric, binary_roc_auc, predicted_class_fractions


def _probs(p_covid):
    p = torch.tensor(p_covid, dtype=torch.float32)
    return torch.stack([1 - p, p], dim=1)


LABELS = [0, 0, 0, 1, 1, 1]
ONEHOT = torch.nn.functional.one_hot(torch.tensor(LABELS), 2).float()
# ranks the images perfectly (AUC 1) but every probability is below 0.5: all predicted non-COVID
COLLAPSED = [0.05, 0.10, 0.15, 0.30, 0.35, 0.40]
# ranks them less well (AUC 8/9) but predicts both classes
BALANCED = [0.20, 0.60, 0.30, 0.70, 0.40, 0.80]


class TestGuardedROCAUC(unittest.TestCase):
    def _auc(self, p, frac):
        m = GuardedROCAUCMetric(min_class_fraction=frac)
        m(_probs(p), ONEHOT)
        return float(m.aggregate())

    def test_fractions(self):
        torch.testing.assert_close(predicted_class_fractions(_probs(BALANCED)), torch.tensor([0.5, 0.5]))
        torch.testing.assert_close(predicted_class_fractions(_probs(COLLAPSED)), torch.tensor([1.0, 0.0]))
        with self.assertRaisesRegex(ValueError, "shape"):
            predicted_class_fractions(torch.zeros(0, 2))

    def test_plain_when_off(self):
        self.assertAlmostEqual(self._auc(COLLAPSED, 0.0), 1.0)
        self.assertAlmostEqual(self._auc(BALANCED, 0.0), binary_roc_auc(LABELS, BALANCED))

    def test_collapsed_ranks_below_balanced(self):
        collapsed, balanced = self._auc(COLLAPSED, 0.1), self._auc(BALANCED, 0.1)
        self.assertAlmostEqual(collapsed, 0.0)  # 1 - 1
        self.assertAlmostEqual(balanced, 8 / 9)
        self.assertGreater(balanced, collapsed)

    @parameterized.expand([(-0.1,), (1.0,)])
    def test_bad_fraction(self, frac):
        with self.assertRaisesRegex(ValueError, "min_class_fraction"):
            GuardedROCAUCMetric(min_class_fraction=frac)

    def test_selects_the_non_collapsed_epoch(self):
        """As a key metric of an evaluator run once per epoch: the best epoch is the balanced one."""
        epochs = [COLLAPSED, BALANCED, COLLAPSED]
        current = {"i": 0}
        evaluator = Engine(lambda e, batch: {"pred": _probs(epochs[current["i"]]), "label": ONEHOT})
        handler = GuardedROCAUC(min_class_fraction=0.1, output_transform=lambda o: (o["pred"], o["label"]))
        handler.attach(evaluator, "val_auc")
        scores = []
        for i in range(3):
            current["i"] = i
            evaluator.run([0], max_epochs=1)
            scores.append(evaluator.state.metrics["val_auc"])
        self.assertAlmostEqual(scores[0], 0.0)
        self.assertAlmostEqual(scores[1], 8 / 9)
        self.assertEqual(max(range(3), key=lambda i: scores[i]), 1)


if __name__ == "__main__":
    unittest.main()
