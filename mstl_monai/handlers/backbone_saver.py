# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The handler that hands SSTL-M's trained backbone to the next stage."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
from monai.utils import optional_import

from mstl_monai.networks.sidecar import write_checkpoint_info

if TYPE_CHECKING:
    import ignite.distributed as idist
    from ignite.engine import Engine, Events
else:
    idist, _ = optional_import("ignite.distributed")
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["BackboneSaver"]

logger = logging.getLogger(__name__)


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def _world_size() -> int:
    try:
        return int(idist.get_world_size())
    except Exception:
        return 1


class BackboneSaver:
    """Write the trained backbone of an :class:`~mstl_monai.networks.nets.SSTLNetwork` (the query encoder, without projection or region head)
    as a plain state dict (``conv1.weight``, ``layer1.0...``, ``attn....``) when training completes, atomically
    (temporary file in the same folder, then rename), on the first process only. This is the ``pretrained`` of
    the next stage (``load_pretrained`` / ``load_stage_checkpoint``).

    Args:
        network: the :class:`~mstl_monai.networks.nets.SSTLNetwork` (or a module with a ``backbone`` attribute, or the backbone itself).
        filepath: output file, e.g. ``<run_dir>/models/model.pt``.
        info: what the backbone is (:func:`~mstl_monai.networks.sidecar.checkpoint_info`), written beside it as
            ``<filepath>.json`` (None: no sidecar).
    """

    def __init__(self, network: nn.Module, filepath: str | os.PathLike, info: dict | None = None) -> None:
        self.network = network
        self.filepath = str(filepath)
        self.info = dict(info) if info else None
        self.logger = logger

    def attach(self, engine: Engine) -> None:
        self.logger = engine.logger
        engine.add_event_handler(Events.COMPLETED, self)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        net = _unwrap(self.network)
        bb = getattr(net, "backbone", net)
        return {k: v.detach().cpu().clone() for k, v in bb.state_dict().items()}

    def save(self) -> str:
        """Write the backbone state dict now (rank 0 only) and return the path."""
        if _world_size() > 1 and int(idist.get_rank()) != 0:
            return self.filepath
        from mstl_monai.utils.io import atomic_write

        if self.info is not None:
            write_checkpoint_info(self.filepath, self.info)
        with atomic_write(self.filepath, "wb") as f:
            torch.save(self.backbone_state_dict(), f)
        return self.filepath

    def __call__(self, engine: Engine) -> None:
        path = self.save()
        self.logger.info(f"SSTL-M backbone written to {path}")
