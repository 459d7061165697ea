# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The MAG-SD finetune step (Li et al. 2021) for MONAI's ``SupervisedTrainer``: ``iteration_update`` + metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

from mstl_monai.losses.soft_distance import SoftDistanceLoss
from mstl_monai.transforms.attention_aug import AttentionAugment

if TYPE_CHECKING:
    from monai.engines import SupervisedTrainer

__all__ = ["MAGSD_TERMS", "MAGSDIteration", "mag_sd_metrics", "unwrap_network"]

#: the scalar terms the MAG-SD step writes into ``engine.state.output`` (``loss`` is their total)
MAGSD_TERMS = ("loss_ce", "loss_sd_mixup", "loss_sd_dim", "loss_sd_patch")


def unwrap_network(net: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel``/``DataParallel`` wrapper (or ``net`` itself)."""
    return net.module if isinstance(net, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else net


class MAGSDIteration:
    """
    One MAG-SD training iteration, given to MONAI's ``SupervisedTrainer`` as ``iteration_update`` (the plain
    trainer with ``iteration_update=None`` is untouched). Per batch: one forward of the
    :class:`~mstl_monai.networks.nets.MultiscaleAttentionNet` (through the trainer's inferer, e.g. bf16 autocast)
    that classifies the images, builds the three attention-guided views (:class:`AttentionAugment`) from its maps
    and classifies them; loss = the trainer's ``loss_function`` (cross-entropy) on the originals + the soft
    distances of the views (:class:`~mstl_monai.losses.SoftDistanceLoss`); backward; optimiser step.

    ``engine.state.output`` holds MONAI's ``image``, ``label``, ``pred`` (the originals' logits, so the trainer's
    post-processing and metrics are those of the plain step), ``loss``, and the floats ``loss_ce``,
    ``loss_sd_mixup``, ``loss_sd_dim``, ``loss_sd_patch`` (see :func:`mag_sd_metrics` for their epoch means).

    Args:
        augment: the attention-guided augmentations (default ``AttentionAugment()``).
        soft_distance: the regulariser (default ``SoftDistanceLoss()``: confidence 0.7, smoothing 0.01, summed).
        sd_weight: weight of the soft-distance sum (1 in MAG-SD).
    """

    def __init__(
        self,
        augment: AttentionAugment | None = None,
        soft_distance: SoftDistanceLoss | None = None,
        sd_weight: float = 1.0,
    ) -> None:
        self.augment = augment if augment is not None else AttentionAugment()
        self.soft_distance = soft_distance if soft_distance is not None else SoftDistanceLoss()
        if self.soft_distance.reduction != "none":
            self.soft_distance = SoftDistanceLoss(self.soft_distance.confidence, self.soft_distance.smoothing, "none")
        self.sd_weight = float(sd_weight)

    def __call__(self, engine: SupervisedTrainer, batchdata: dict[str, Any]) -> dict:
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        from mstl_monai.networks.nets.mag_sd import MultiscaleAttentionNet

        if not isinstance(unwrap_network(engine.network), MultiscaleAttentionNet):
            raise TypeError(
                f"mag_sd needs a MultiscaleAttentionNet (network_def attention_maps > 0), got "
                f"{type(unwrap_network(engine.network)).__name__}."
            )
        batch = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)
        inputs, targets = batch[0], batch[1]
        if hasattr(inputs, "as_tensor"):
            inputs = inputs.as_tensor()
        if hasattr(targets, "as_tensor"):
            targets = targets.as_tensor()
        engine.state.output = {Keys.IMAGE: inputs, Keys.LABEL: targets}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)

        out = engine.inferer(inputs, engine.network, augment=self.augment)
        logits, views = out["pred"].float(), out["views_pred"].float()
        engine.state.output[Keys.PRED] = logits
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        loss_ce = engine.loss_function(logits, targets).mean()
        # with mixup the labels are soft (B, C): the replacement rule uses each image's dominant class
        hard = targets.argmax(dim=1) if targets.ndim == 2 and targets.shape[1] > 1 else targets
        sd = self.soft_distance(views, logits, hard)
        loss = loss_ce + self.sd_weight * sd.sum()
        engine.state.output[Keys.LOSS] = loss
        engine.state.output.update(dict(zip(MAGSD_TERMS, [loss_ce.detach(), *sd.detach()])))
        engine.fire_event(IterationEvents.LOSS_COMPLETED)  # NonFiniteGuard checks the terms here
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        terms = [float(loss_ce.detach())] + [float(v) for v in sd.detach()]
        engine.state.output.update(dict(zip(MAGSD_TERMS, terms)))
        engine.fire_event(IterationEvents.MODEL_COMPLETED)  # MONAI decollates the output here
        return engine.state.output


def _term(name: str):
    def get(output: Any) -> torch.Tensor:
        if isinstance(output, Sequence) and not isinstance(output, dict):  # decollated: one dict per image
            output = output[0]
        return torch.tensor(float(output[name]), dtype=torch.float64)

    return get


def mag_sd_metrics(device: torch.device | str | None = None) -> dict:
    """Ignite ``Average`` metrics of the MAG-SD terms (``loss_ce``, ``loss_sd_mixup``, ``loss_sd_dim``,
    ``loss_sd_patch``): the trainer's ``additional_metrics``, so their epoch means are in ``engine.state.metrics``,
    printed by ``StatsHandler``, written by ``TensorBoardStatsHandler`` and reduced across processes."""
    from ignite.metrics import Average

    return {f"train_{t}": Average(output_transform=_term(t), device=device or "cpu") for t in MAGSD_TERMS}
