# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The engine of the self-supervised stage SSTL-M (Liu & Ji 2021, Sec. 3.3) and its handlers.

Its pieces live in their MONAI families: the network :class:`~mstl_monai.networks.nets.SSTLNetwork` (MoCo v2 and the
lobe-region head on one backbone), the loss :class:`~mstl_monai.losses.SSTLLoss` (Eq. 6,
``L = alpha1 * Lcons + alpha2 * (Lra + sum_i Lra^i)``), the views :func:`~mstl_monai.transforms.moco_v2_augmentations`
and the lobe crops :class:`~mstl_monai.transforms.RandLungLobeGeneratord`, the datalist
:func:`~mstl_monai.data.sstl_datalist`, the keys :class:`~mstl_monai.utils.enums.SSTLKeys`. Here: the trainer that
runs them and the stats of an iteration; the handler that hands the backbone to the next stage is
:class:`~mstl_monai.handlers.BackboneSaver`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.utils import optional_import

from mstl_monai.losses.sstl import SSTLLoss
from mstl_monai.networks.nets.simclr import simclr_logits
from mstl_monai.networks.nets.sstl import SSTL_METHODS, SSTLNetwork
from mstl_monai.utils.enums import SSTLKeys

if TYPE_CHECKING:
    import ignite.distributed as idist
    from ignite.engine import Engine, Events
    from ignite.metrics import Average
else:
    idist, _ = optional_import("ignite.distributed")
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")
    Average, _ = optional_import("ignite.metrics", name="Average")

__all__ = ["SSTLTrainer", "sstl_scalar_terms"]

logger = logging.getLogger(__name__)

#: the scalar terms an SSTL-M iteration writes into ``engine.state.output`` (logged every iteration)
_SCALAR_TERMS = (
    SSTLKeys.LOSS,
    SSTLKeys.LOSS_CONS,
    SSTLKeys.LOSS_REGION,
    SSTLKeys.INSTANCE_ACC,
    SSTLKeys.REGION_ACC,
    SSTLKeys.FALLBACK_RATE,
)


def sstl_scalar_terms(output: Any) -> dict[str, float] | None:
    """The scalar terms of an SSTL-M iteration output (for ``StatsHandler``/``TensorBoardStatsHandler``'s
    ``output_transform``): ``loss``, ``loss_cons``, and where the method has them ``loss_region``,
    ``instance_acc``, ``region_acc``, ``region_fallback_rate``."""
    if not isinstance(output, dict):
        return None
    return {str(k): float(output[k]) for k in _SCALAR_TERMS if output.get(k) is not None}


# ---------------------------------------------------------------------------------------------------- trainer


def _world_size() -> int:
    try:
        return int(idist.get_world_size())
    except Exception:
        return 1


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


class SSTLTrainer(Trainer):
    """
    MONAI trainer of the self-supervised stage SSTL-M (an ignite ``Engine``; only ``_iteration`` differs from a
    MONAI ``Trainer``). Each iteration: the two augmented views (and, for ``"ours"``, the five lobe crops of every
    image) go through :class:`SSTLNetwork` under the inferer (e.g. :class:`~mstl_monai.inferers.inferer.AutocastInferer`
    for bf16 autocast on any device), :class:`SSTLLoss` gives Eq. 6, then backward and the optimiser step.

    ``engine.state.output`` holds the scalar terms ``loss``, ``loss_cons``, and for ``"ours"`` ``loss_region``,
    the lobe-task accuracy ``region_acc`` and the Generator's ``region_fallback_rate``, plus the contrastive
    top-1 instance accuracy ``instance_acc`` (:func:`sstl_scalar_terms` gives them to the stats handlers). Their
    epoch means are ignite ``Average`` metrics ``epoch_<term>`` in ``engine.state.metrics`` (reduced across
    processes).

    With several processes (``ignite.distributed`` / ``torchrun``) the network is wrapped in
    ``DistributedDataParallel``; MoCo gathers the keys of every process and shuffles BN across processes.

    Args:
        device: the device of the network and the batches.
        max_epochs: number of epochs.
        train_data_loader: yields dicts with ``view1``, ``view2`` and (``"ours"``) ``regions``, ``regions_labels``.
        network: an :class:`SSTLNetwork` (or a DDP wrapping one).
        optimizer: the optimiser of the network's trainable parameters.
        loss_function: an :class:`SSTLLoss` (default ``SSTLLoss()``, alpha1 = alpha2 = 0.8).
        inferer: called as ``inferer(view1, network, view2, regions)``; default: a plain call.
        epoch_length: iterations per epoch (default ``len(train_data_loader)``).
        non_blocking: asynchronous host-to-device copies.
        train_handlers: MONAI/ignite handlers to attach.
        view_keys: batch keys of the two views.
        regions_key: batch key of the lobe crops ``(B, 5, C, h, w)``.
        region_labels_key: batch key of the lobe labels ``(B, 5)``.
        epoch_metrics: attach the ``epoch_<term>`` averages.
        region_generator: makes the lobe crops on the trainer's device (``"ours"`` only): called with the batch's
            tensors moved to the device (a dict), it returns the keys to add to the batch, at least ``regions_key``
            and ``region_labels_key``, e.g. a ``Compose`` of :class:`~mstl_monai.transforms.BatchLungLobeGeneratord`
            on the full slices and the regions' intensity normalisation. ``None``: the loader yields the crops.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: SSTLLoss | None = None,
        inferer: Callable | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        train_handlers: Sequence | None = None,
        view_keys: Sequence[str] = (SSTLKeys.VIEW1.value, SSTLKeys.VIEW2.value),
        regions_key: str = SSTLKeys.REGIONS.value,
        region_labels_key: str = SSTLKeys.REGION_LABELS.value,
        epoch_metrics: bool = True,
        region_generator: Callable[[dict], dict] | None = None,
    ) -> None:
        model = _unwrap(network)
        if not isinstance(model, SSTLNetwork):
            raise TypeError(f"SSTLTrainer needs an SSTLNetwork, got {type(model).__name__}.")
        if len(view_keys) != 2:
            raise ValueError(f"view_keys must name the two views, got {view_keys!r}.")
        device = torch.device(device) if not isinstance(device, torch.device) else device
        if _world_size() > 1 and not isinstance(network, nn.parallel.DistributedDataParallel):
            network = nn.parallel.DistributedDataParallel(
                network, device_ids=[device] if device.type == "cuda" else None
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            decollate=False,
            handlers=None,
        )
        if self.state.epoch_length == 0:
            n = len(getattr(train_data_loader, "dataset", []))
            bs = getattr(train_data_loader, "batch_size", None)
            raise ValueError(
                f"the SSTL-M data loader yields no full batch (training images: {n}, batch_size: {bs}, drop_last): "
                "lower batch_size or add training images."
            )
        self.network = network
        self.sstl_network = model
        self.optimizer = optimizer
        self.loss_function = loss_function if loss_function is not None else SSTLLoss()
        self.inferer = inferer
        self.view_keys = tuple(str(k) for k in view_keys)
        self.regions_key = str(regions_key)
        self.region_labels_key = str(region_labels_key)
        self.region_generator = region_generator
        self._small_regions_warned = False
        if epoch_metrics:
            for term in self.scalar_terms:
                Average(output_transform=_term_getter(term), device=device).attach(self, f"epoch_{term}")
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    @property
    def scalar_terms(self) -> list[str]:
        """The scalar terms this trainer's method writes every iteration."""
        terms = [SSTLKeys.LOSS.value, SSTLKeys.LOSS_CONS.value, SSTLKeys.INSTANCE_ACC.value]
        if self.sstl_network.uses_regions:
            terms += [SSTLKeys.LOSS_REGION.value, SSTLKeys.REGION_ACC.value]
        return terms

    def _get(self, batchdata: dict, key: str) -> torch.Tensor:
        if key not in batchdata:
            raise KeyError(
                f"SSTL-M batch has no {key!r} key (keys: {sorted(batchdata)}); check the training transforms."
            )
        value = batchdata[key]
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        if hasattr(value, "as_tensor"):  # MetaTensor -> plain tensor (no meta tracking in the step)
            value = value.as_tensor()
        return value.to(device=self.state.device, non_blocking=self.non_blocking)

    def prepare_sstl_batch(
        self, batchdata: dict
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Move the views (and, when the method uses them, the lobe crops and labels) to the device; with a
        ``region_generator``, make the crops there first (its keys are added to ``batchdata``)."""
        if not isinstance(batchdata, dict):
            raise TypeError(f"SSTL-M batches must be dicts, got {type(batchdata).__name__}.")
        if self.region_generator is not None and self.sstl_network.uses_regions:
            tensors = {k: self._get(batchdata, k) for k, v in batchdata.items() if isinstance(v, torch.Tensor)}
            batchdata.update(self.region_generator(tensors))
        view1, view2 = (self._get(batchdata, k) for k in self.view_keys)
        regions = labels = None
        if self.sstl_network.uses_regions:
            regions = self._get(batchdata, self.regions_key)
            labels = self._get(batchdata, self.region_labels_key).long()
            resnet = hasattr(self.sstl_network.backbone, "layer4")  # a ViT takes crops down to one patch
            if resnet and not self._small_regions_warned and min(regions.shape[-2:]) < 32:
                self._small_regions_warned = True
                self.logger.warning(
                    f"lobe crops of {tuple(regions.shape[-2:])} px reach layer4 as 1x1 maps; on CPU with bf16 autocast "
                    "oneDNN's stride-2 conv then returns NaN weight gradients (seen with torch 2.13): "
                    "use region_size >= 32."
                )
        return view1, view2, regions, labels

    def _iteration(self, engine: SSTLTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        """One SSTL-M step: forward of both branches, Eq. 6, backward, optimiser step; returns the scalar terms."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        view1, view2, regions, region_labels = engine.prepare_sstl_batch(batchdata)
        engine.state.output = {}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        if engine.inferer is None:
            out = engine.network(view1, view2, regions)
        else:
            out = engine.inferer(view1, engine.network, view2, regions)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        cons_logits, cons_labels = out[SSTLKeys.CONS_LOGITS], out[SSTLKeys.CONS_LABELS]
        region_logits = out.get(SSTLKeys.REGION_LOGITS.value)
        terms = engine.loss_function.terms(cons_logits, cons_labels, region_logits, region_labels)
        loss = terms[SSTLKeys.LOSS.value]
        engine.state.output = dict(terms)
        engine.fire_event(IterationEvents.LOSS_COMPLETED)  # NonFiniteGuard checks the terms here
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)

        with torch.no_grad():
            output: dict[str, Any] = {k: float(v.detach()) for k, v in terms.items()}
            output[SSTLKeys.INSTANCE_ACC.value] = float((cons_logits.argmax(dim=1) == cons_labels).float().mean())
            if region_logits is not None:
                pred = region_logits.argmax(dim=-1).reshape(-1)
                target = region_labels.reshape(-1) if region_labels is not None else None
                if target is None:
                    target = torch.arange(region_logits.shape[1], device=pred.device).repeat(region_logits.shape[0])
                output[SSTLKeys.REGION_ACC.value] = float((pred == target).float().mean())
                fallback = batchdata.get(SSTLKeys.REGION_FALLBACK.value)
                if fallback is not None:
                    output[SSTLKeys.FALLBACK_RATE.value] = float(torch.as_tensor(fallback).float().mean())
        engine.state.output = output
        return output


def _term_getter(term: str) -> Callable[[dict], torch.Tensor]:
    def get(output: dict) -> torch.Tensor:
        return torch.tensor(output[term], dtype=torch.float64)

    return get
