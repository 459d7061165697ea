# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The Ignite handler that runs the SSTL-M probes (:mod:`.probes`) before, during and after training."""

from __future__ import annotations

import json
import logging
import os
from typing import TYPE_CHECKING, Any

import torch.nn as nn
from monai.utils import optional_import

if TYPE_CHECKING:
    import ignite.distributed as idist
    from ignite.engine import Engine, Events
else:
    idist, _ = optional_import("ignite.distributed")
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["ProbeHandler"]

logger = logging.getLogger(__name__)


def _flat(result: dict[str, Any], prefix: str = "probe") -> dict[str, float]:
    """A probe's float results as scalar names ``<prefix>_<group>_<name>`` (``chance`` left out)."""
    flat: dict[str, float] = {}
    for group, vals in result.items():
        if not isinstance(vals, dict):
            continue
        for k, v in vals.items():
            if isinstance(v, float) and k not in ("chance",):
                flat[f"{prefix}_{group}_{k}"] = v
    return flat


class ProbeHandler:
    """Run an :class:`~.probes.SSTLProbe` on the network's backbone before training (the incoming weights), every
    ``interval`` epochs, and after training; log the numbers (console, and TensorBoard under ``probe/`` when
    ``log_dir`` is given; step = epoch), keep them in ``engine.state.probe`` (``{"before": ..., "during": {epoch:
    ...}, "after": ...}``) and write them to ``output_file`` (the same JSON plus ``delta`` = after - before; atomic
    writes). A resumed run keeps the ``before`` of its first start. With several processes the first one probes,
    the others wait.

    Args:
        probe: the probe to run (``probe(backbone, region_head) -> dict``).
        network: an :class:`~mstl_monai.networks.nets.SSTLNetwork` (``backbone``, ``region_head``), or a backbone.
        output_file: the JSON file, e.g. ``<run_dir>/probe.json``.
        interval: probe every ``interval`` epochs during training (0: only before and after).
        enabled: switch the handler off.
        log_dir: TensorBoard folder for the probe scalars (``None``: no TensorBoard).
    """

    def __init__(
        self,
        probe: Any,
        network: nn.Module,
        output_file: str | os.PathLike,
        interval: int = 0,
        enabled: bool = True,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        if interval < 0:
            raise ValueError(f"probe interval must be >= 0 epochs, got {interval}.")
        self.probe = probe
        self.network = network
        self.output_file = str(output_file)
        self.interval = int(interval)
        self.enabled = bool(enabled)
        self.log_dir = None if log_dir is None else str(log_dir)
        self._writer: Any = None
        self.logger = logger

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self.started)
        if self.interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    # ------------------------------------------------------------------ helpers
    def _parts(self) -> tuple[nn.Module, nn.Module | None]:
        net = self.network.module if isinstance(self.network, nn.parallel.DistributedDataParallel) else self.network
        return getattr(net, "backbone", net), getattr(net, "region_head", None)

    def _read(self) -> dict[str, Any]:
        if os.path.isfile(self.output_file):
            with open(self.output_file) as f:
                return json.load(f)
        return {}

    def _write(self, data: dict[str, Any]) -> None:
        from mstl_monai.metrics.io import write_metrics_json

        write_metrics_json(self.output_file, data)

    def _tensorboard(self, flat: dict[str, float], epoch: int) -> None:
        if self.log_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        for k, v in flat.items():
            self._writer.add_scalar(k.replace("probe_", "probe/", 1), v, epoch)
        self._writer.flush()

    def _run(self, engine: Engine, when: str) -> dict[str, Any] | None:
        rank = int(idist.get_rank()) if int(idist.get_world_size()) > 1 else 0
        result = None
        if rank == 0:
            backbone, head = self._parts()
            result = self.probe(backbone, head)
            result["epoch"] = int(engine.state.epoch)
            flat = _flat(result)
            probes = getattr(engine.state, "probe", None) or {"before": None, "during": {}, "after": None}
            if when == "during":
                probes["during"][int(engine.state.epoch)] = result
            else:
                probes[when] = result
            engine.state.probe = probes
            summary = ", ".join(f"{k}={v:.4f}" for k, v in flat.items())
            self.logger.info(f"SSTL-M probe ({when}, epoch {engine.state.epoch}): {summary}")
            self._tensorboard(flat, int(engine.state.epoch))
        if int(idist.get_world_size()) > 1:
            idist.barrier()
        return result

    # ------------------------------------------------------------------ events
    def started(self, engine: Engine) -> None:
        data = self._read() if (engine.state.iteration > 0) else {}
        if engine.state.iteration > 0 and "before" in data:
            return  # resumed: the incoming weights were probed at the first start
        if engine.state.iteration > 0:
            self.logger.warning("resumed run without a 'before' probe: the incoming weights are no longer available")
            return
        result = self._run(engine, "before")
        if result is not None:
            self._write({"before": result, "during": {}, "after": None})

    def epoch_completed(self, engine: Engine) -> None:
        if engine.state.epoch >= engine.state.max_epochs:
            return  # the final epoch is probed by `completed`
        result = self._run(engine, "during")
        if result is not None:
            data = self._read()
            data.setdefault("during", {})[str(engine.state.epoch)] = result
            self._write(data)

    def completed(self, engine: Engine) -> None:
        result = self._run(engine, "after")
        if result is not None:
            data = self._read()
            data["after"] = result
            before = data.get("before")
            if before:
                flat_before = _flat(before)
                data["delta"] = {k: v - flat_before[k] for k, v in _flat(result).items() if k in flat_before}
            self._write(data)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
