# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Parameter and multiply-add counts of the networks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["count_parameters", "count_macs"]


def count_parameters(net: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``net`` (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad or not trainable_only)


def count_macs(net: nn.Module, input_shape: Sequence[int]) -> int:
    """
    Multiply-adds of one forward pass of ``net`` in eval mode on a zero input of ``input_shape`` (batch included),
    counted by :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions, matrix products and attention;
    norms, activations and pooling are not counted, as in the usual "GFLOPs" of ResNets: 4.09 G for ResNet-50 at
    224). Returns ``flops // 2``.
    """
    ref = next(net.parameters(), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None else torch.float32
    was_training = net.training
    net.eval()
    try:
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            net(torch.zeros(*input_shape, device=device, dtype=dtype))
    finally:
        net.train(was_training)
    return int(counter.get_total_flops()) // 2
