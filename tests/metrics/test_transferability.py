"""LEEP of a checkpoint's own head on real COVID19-CT slices."""

from __future__ import annotations

import math
import tempfile
import unittest
from pathlib import Path

import torch

from mstl_monai.data import covid_ct_datalist
from mstl_monai.networks import build_network
from mstl_monai.metrics.transferability import leep_of_checkpoint
from tests.utils import require_real_data


class TestLEEPOfCheckpoint(unittest.TestCase):
    def test_three_way_head_on_real_slices(self):
        root = require_real_data(self)
        dl = covid_ct_datalist(root / "covid-ct", "val")
        dl = dl[:6] + dl[-6:]  # both classes
        with tempfile.TemporaryDirectory() as d:
            torch.manual_seed(0)
            net = build_network("resnet18", n_attn=1, n_input_channels=1, num_classes=3)
            ckpt = Path(d, "stl_m.pt")
            torch.save(net.state_dict(), ckpt)
            value = leep_of_checkpoint(str(ckpt), 3, dl, "resnet18", 1, image_size=32, resize_size=36)
            # LEEP is an average log-likelihood (<= 0) and, by Nguyen et al.'s Theorem 1, at least the negative
            # conditional entropy -H(Y|Z) >= -H(Y) = log(1/2) for two balanced classes.
            self.assertLessEqual(value, 0.0)
            self.assertGreater(value, math.log(0.5) - 1e-6)
            with self.assertRaises(ValueError):
                # a checkpoint without a 5-way head cannot be scored as a 5-way source model
                leep_of_checkpoint(str(ckpt), 5, dl, "resnet18", 1, image_size=32, resize_size=36)


if __name__ == "__main__":
    unittest.main()
