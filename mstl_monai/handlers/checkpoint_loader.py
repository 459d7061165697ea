# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The bundle's checkpoint loader handler. Reading checkpoints and their settings files is
:mod:`mstl_monai.networks.checkpoint` and :mod:`mstl_monai.networks.sidecar`."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from monai.handlers import CheckpointLoader

from mstl_monai.networks.checkpoint import load_weights

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["CheckpointNetworkLoader"]


class CheckpointNetworkLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` for one network, whose every failure is one line naming the file.

    Empty, truncated, corrupt or non-PyTorch files, a training checkpoint (its ``network`` entry is loaded), and
    a checkpoint of another architecture (the message says which settings to use) are all handled; the weights
    are loaded strictly (:func:`~mstl_monai.networks.checkpoint.load_weights`, which takes the file the config read
    for the checkpoint's settings: one deserialisation per run). With several objects in ``load_dict`` (resuming a
    trainer) it is MONAI's loader.

    Args:
        load_path: the checkpoint.
        load_dict: ``{"network": net}`` (any key; that key is looked up in the file first).
        kwargs: as MONAI's ``CheckpointLoader``.
    """

    def __call__(self, engine: Engine) -> None:
        if len(self.load_dict) != 1:
            return super().__call__(engine)
        ((key, net),) = self.load_dict.items()
        path = os.fspath(self.load_path)
        entry = load_weights(net, path, key, strict=self.strict)
        where = f" (the '{entry}' entry of a training checkpoint)" if entry else ""
        self.logger.info(f"{engine.state.epoch}: loaded network weights from {path}{where}")
