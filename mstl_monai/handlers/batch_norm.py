# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Frozen BatchNorm statistics for finetuning on a handful of images (the bundle's ``freeze_bn``).

In training mode a BatchNorm layer normalises each channel by the batch's own mean and variance. Over two values
per channel (two images on ResNet's 1x1 res5 map at 32 px) that output is ``+-d / sqrt(d^2 + eps)``: about +-1
whatever the input, with a derivative up to ``1 / sqrt(eps)`` (316) for channels where the two images nearly agree.
The gradient reaching res4 is then hundreds of times too large (in float64 as in float32), one SGD step moves the
stem's weights by tens, and the next forward with the running statistics overflows float32 (MONAI Label's ``/train``
on the README's two slices at 32 px: NaN predictions after the first epoch). Batch statistics of a few images also
replace the running statistics of the model being finetuned. With the statistics frozen, every BatchNorm layer
normalises with its running mean and variance (as in evaluation) and leaves them unchanged; its affine weight and
bias still learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["FreezeBatchNorm", "freeze_batch_norm"]


def _use_running_stats(module: torch.nn.Module, args: Any) -> None:
    module.training = False  # the trainer's network.train() each iteration sets it back; this runs before forward


def freeze_batch_norm(network: torch.nn.Module) -> list[torch.utils.hooks.RemovableHandle]:
    """Make every BatchNorm layer of ``network`` use (and keep) its running statistics in training too.

    Returns the hook handles (``handle.remove()`` undoes it). The state dict is unchanged.
    """
    return [
        m.register_forward_pre_hook(_use_running_stats)
        for m in network.modules()
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


class FreezeBatchNorm:
    """Trainer handler: :func:`freeze_batch_norm` on ``network`` when attached, if ``enabled``.

    Args:
        network: the trained network (a ``DistributedDataParallel`` wrapper works too).
        enabled: False: nothing changes (the bundle's default ``freeze_bn: false``).
    """

    def __init__(self, network: torch.nn.Module, enabled: bool = True) -> None:
        self.network = network
        self.enabled = bool(enabled)
        self.handles: list[torch.utils.hooks.RemovableHandle] = []

    def attach(self, engine: Engine) -> None:
        if not self.enabled or self.handles:
            return
        self.handles = freeze_batch_norm(self.network)
        engine.logger.info(
            f"freeze_bn: {len(self.handles)} BatchNorm layers train on their running statistics (kept unchanged)"
        )
