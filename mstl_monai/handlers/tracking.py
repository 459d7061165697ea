# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""What a stage adds to MONAI's experiment tracking (``python -m monai.bundle run ... --tracking mlflow``).

MONAI's standard MLflow settings (``monai.bundle.utils.DEFAULT_MLFLOW_SETTINGS``) append an ``MLFlowHandler`` to
``train#handlers`` and ``validate#handlers``: the trainer's loss per iteration, ``engine.state.metrics`` per epoch
(``train_acc``; ``val_auc``, ``val_score``, ... from the validator, logged into the same run), the learning rate,
``max_epochs``/``epoch_length`` and the executed config. The bundle configs name the store and the run
(``tracking_uri``: an MLflow file store in the run folder; ``experiment_name``; ``run_name``: the stage), and
:class:`MLflowStageLogger` adds, to the same run, the stage's settings as params and its result files (the best
checkpoint with its settings, or an evaluation's metrics) as artifacts.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from monai.utils import optional_import

if TYPE_CHECKING:
    from ignite.engine import Engine, Events
else:
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["MLflowStageLogger", "flatten_metrics"]

logger = logging.getLogger(__name__)


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a nested ``metrics.json`` as flat MLflow metric names: ``{"auc": {"value": 0.8, "ci_low":
    0.7}}`` -> ``{"auc": 0.8, "auc_ci_low": 0.7}`` (with ``prefix`` before each name); other values are left out."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}" if key != "value" else prefix.rstrip("_")
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, f"{name}_"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


class MLflowStageLogger:
    """
    Add a stage's settings and result files to the MLflow run that MONAI's ``--tracking mlflow`` opens for this engine;
    without tracking (no ``MLFlowHandler`` in ``handlers``) it does nothing, and MLflow is never imported.
    ``handlers`` is the engine's handler list, the one MONAI's tracking settings append their ``MLFlowHandler`` to
    (``train#handlers``, ``validate#handlers``); the configs attach this handler in ``run``, after the engine's own.

    When the engine completes (after the best checkpoint or the evaluation report is written, before the
    ``MLFlowHandler`` closes the run): ``params`` are logged as MLflow params, each existing file of ``artifacts``
    as an artifact, and the numbers of ``metrics_file`` (a ``metrics.json``, flattened by :func:`flatten_metrics`)
    as metrics. ``output_transform`` replaces the ``MLFlowHandler``'s iteration output transform when the engine
    starts: MONAI's default (``from_engine(['loss'], first=True)``) fits ``SupervisedTrainer``'s decollated output,
    not the dict of scalar terms of :class:`~mstl_monai.engines.SSTLTrainer` (give it
    :func:`~mstl_monai.engines.sstl_scalar_terms`).

    Args:
        handlers: the engine's handlers; the ``MLFlowHandler`` objects among them are the ones logged into.
        params: the stage's settings (values written as text).
        artifacts: files to log (missing ones are skipped with a log line).
        metrics_file: a JSON file of metrics to log (e.g. an evaluation's ``metrics.json``).
        metrics_prefix: prefix of those metric names (e.g. ``"test_"``).
        output_transform: iteration output transform for the ``MLFlowHandler`` (``None``: MONAI's).
        end_run: end the MLflow run after logging (for an evaluator, whose ``MLFlowHandler`` does not close it).
    """

    def __init__(
        self,
        handlers: Sequence[Any] = (),
        params: Mapping[str, Any] | None = None,
        artifacts: Sequence[str | os.PathLike] = (),
        metrics_file: str | os.PathLike | None = None,
        metrics_prefix: str = "",
        output_transform: Callable | None = None,
        end_run: bool = False,
    ) -> None:
        self.handlers = list(handlers or ())
        self.params = dict(params or {})
        self.artifacts = [str(a) for a in artifacts]
        self.metrics_file = None if metrics_file is None else str(metrics_file)
        self.metrics_prefix = str(metrics_prefix)
        self.output_transform = output_transform
        self.end_run = bool(end_run)
        self.logger = logger

    def attach(self, engine: Engine) -> None:
        """Attach after the ``MLFlowHandler``; its ``close`` (when attached) is moved behind this handler's
        ``COMPLETED``, so the files and metrics go into the run before MONAI closes it."""
        self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.COMPLETED, self)
        for handler in self.tracking_handlers():
            if engine.has_event_handler(handler.close, Events.COMPLETED):
                engine.remove_event_handler(handler.close, Events.COMPLETED)
                engine.add_event_handler(Events.COMPLETED, handler.close)

    def tracking_handlers(self) -> list:
        """The ``MLFlowHandler`` objects of ``handlers``."""
        from monai.handlers import MLFlowHandler

        return [h for h in self.handlers if isinstance(h, MLFlowHandler)]

    def started(self, engine: Engine) -> None:
        if self.output_transform is not None:
            for handler in self.tracking_handlers():
                handler.output_transform = self.output_transform

    def __call__(self, engine: Engine) -> None:
        runs = [h for h in self.tracking_handlers() if h.cur_run is not None]
        if not runs:
            return
        from mlflow.entities import Metric, Param

        files = [f for f in self.artifacts if os.path.isfile(f)]
        for f in sorted(set(self.artifacts) - set(files)):
            self.logger.info(f"MLflow: no file {f} to log")
        params = [Param(str(k), str(v)[:6000]) for k, v in self.params.items()]
        metrics: list = []
        if self.metrics_file is not None and os.path.isfile(self.metrics_file):
            with open(self.metrics_file) as fh:
                values = flatten_metrics(json.load(fh), self.metrics_prefix)
            step = int(engine.state.epoch or 0)
            now = int(time.time() * 1000)
            metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for handler in runs[:1]:  # one run per engine: the trainer's (its validator logs into the same run)
            run_id = handler.cur_run.info.run_id
            handler.client.log_batch(run_id=run_id, metrics=metrics, params=params, tags=[])
            for f in files:
                handler.client.log_artifact(run_id, f)
            if self.end_run:
                handler.client.set_terminated(run_id)
                handler.cur_run = None
            self.logger.info(
                f"MLflow run {run_id} ({handler.client.tracking_uri}): {len(params)} params, "
                f"{len(metrics)} metrics, {len(files)} files"
            )
