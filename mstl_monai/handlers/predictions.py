# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Per-image predictions of an inference run: the decision at a threshold, the lung flags and ``predictions.csv``."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from mstl_monai.data.skipping import publish_skipped
from mstl_monai.metrics.io import prediction_fields, prediction_header

from mstl_monai.networks.checkpoint import given_threshold

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["PredictionWriter", "lung_fields"]


def _items(engine: Engine) -> tuple[list[dict], list[dict]]:
    """The engine's outputs and batch as lists of per-image dicts (MONAI decollates them unless told not to)."""
    outputs, batch = engine.state.output, engine.state.batch
    if isinstance(outputs, dict):
        outputs = [dict(zip(outputs, vals)) for vals in zip(*outputs.values())]
    if isinstance(batch, dict):
        batch = [dict(zip(batch, vals)) for vals in zip(*batch.values())]
    return list(outputs), list(batch or [])


def lung_fields(item: Mapping, found_key: str = "lung_found", fraction_key: str = "lung_box_fraction") -> dict:
    """``{"lung_found": bool | None, "lung_box_fraction": float | None}`` of one prediction's data.

    Reads what :class:`~mstl_monai.transforms.LocateLungd` wrote into the item (``None`` for what it did not
    write, and for the fraction when no lung was found). Used for the bundle's ``predictions.csv`` and the MONAI
    Label ``/infer`` answer, so both flag a prediction made without a lung in the same way.
    """
    found, fraction = item.get(found_key), item.get(fraction_key)
    found = None if found is None else bool(np.asarray(_plain(found)).reshape(-1)[0])
    if fraction is not None:
        fraction = float(np.asarray(_plain(fraction), dtype=np.float64).reshape(-1)[0])
        fraction = fraction if found and math.isfinite(fraction) else None
    return {"lung_found": found, "lung_box_fraction": fraction}


def _plain(value: Any) -> Any:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value


class PredictionWriter:
    """Write an inference run's class probabilities, one CSV row per file, as each batch completes.

    Rows go to ``<filename>.partial`` beside the output and are flushed per iteration; when the run completes the
    file is moved onto ``filename`` (``os.replace``, atomic). So a crash later in the run keeps the rows already
    written (in the ``.partial`` file, which the log names), and an earlier ``predictions.csv`` in the folder is
    replaced only by a complete new one, never truncated. Files that could not be read were removed from the
    dataset as it reads them (:class:`mstl_monai.data.SkippingDataset`) and are listed in ``skipped.csv``.

    Columns: ``file, pred, pred_class, prob_<class>...``, then ``threshold`` (the decision threshold on the
    positive class's probability that made ``pred``; a binary task only, argmax otherwise), ``lung_found`` (``False``: the lobe Generator's
    locator found no lung, e.g. a blank or non-CT image, so the prediction deserves no trust) and
    ``lung_box_fraction`` (area of the located lung box / image area; empty without a lung), from
    :class:`~mstl_monai.transforms.LocateLungd` in the preprocessing (both empty when it is not there). At the
    end the log gives the number of predictions per class, those made without a lung, the skipped inputs and
    the paths of the files.

    Args:
        output_dir: folder of ``predictions.csv``.
        class_names: names of the classes, in output order.
        filename: CSV file name.
        name_key: batch key holding the source file path.
        skipped_file: the ``skipped.csv`` of the run, counted and named in the summary (optional); the dataset's
            ``<skipped_file>.partial`` (:class:`~mstl_monai.data.SkippingDataset`) is moved onto it when the run
            completes.
        lung_found_key: batch key of the lung flag.
        lung_fraction_key: batch key of the lung-box fraction.
        threshold: decision threshold of a binary task (a number, or ``{"value", "source"}`` from
            :func:`~mstl_monai.networks.checkpoint.decision_threshold`); None: 0.5 (argmax).
        positive_class: the class whose probability is thresholded (COVID = 1).
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        filename: str = "predictions.csv",
        name_key: str = "image_path",
        skipped_file: str | None = None,
        lung_found_key: str = "lung_found",
        lung_fraction_key: str = "lung_box_fraction",
        threshold: float | Mapping | None = None,
        positive_class: int = 1,
    ) -> None:
        self.output_dir = output_dir
        self.class_names = list(class_names)
        self.threshold = given_threshold(threshold)
        self.positive_class = int(positive_class)
        self.filename = filename
        self.name_key = name_key
        self.skipped_file = skipped_file
        self.lung_found_key = lung_found_key
        self.lung_fraction_key = lung_fraction_key
        self.logger = logging.getLogger(__name__)
        self.rows = 0
        self.per_class = [0] * len(self.class_names)
        self.no_lung = 0
        self.lung_unknown = 0

    @property
    def path(self) -> str:
        return os.path.join(self.output_dir, self.filename)

    @property
    def partial_path(self) -> str:
        """Where rows are written while the run goes on (moved onto :attr:`path` when it completes)."""
        return self.path + ".partial"

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._complete)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._exception_raised)

    def _start(self, engine: Engine) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        with open(self.partial_path, "w") as f:
            f.write(",".join(prediction_header(self.class_names)) + "\n")
        self.rows, self.per_class, self.no_lung, self.lung_unknown = 0, [0] * len(self.class_names), 0, 0
        where = os.path.abspath(self.partial_path)
        self.logger.info(f"writing predictions to {where} (it becomes {self.filename} when the run completes)")

    def __call__(self, engine: Engine) -> None:
        outputs, batch = _items(engine)
        lines = []
        for i, out in enumerate(outputs):
            p = torch.as_tensor(out["pred"]).detach().float().cpu().reshape(-1).numpy()
            item = batch[i] if i < len(batch) else {}
            name = str(item.get(self.name_key, f"item_{self.rows + i}"))
            lung = lung_fields(item, self.lung_found_key, self.lung_fraction_key)
            k, fields = prediction_fields(
                name, p, self.class_names, self.threshold["value"], self.positive_class, **lung
            )
            lines.append(",".join(fields))
            self.per_class[k] += 1
            self.no_lung += lung["lung_found"] is False
            self.lung_unknown += lung["lung_found"] is None
        with open(self.partial_path, "a") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.rows += len(lines)

    def _skipped(self) -> int | None:
        if not self.skipped_file or not os.path.isfile(self.skipped_file):
            return None
        with open(self.skipped_file, newline="") as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)

    def _complete(self, engine: Engine) -> None:
        os.replace(self.partial_path, self.path)
        if self.skipped_file:  # the dataset's list of this run's skipped inputs replaces an earlier one now, not before
            publish_skipped(self.skipped_file)
        engine.state.predictions_file = os.path.abspath(self.path)
        self.logger.info(self.summary())

    def summary(self) -> str:
        """The end-of-run summary: predictions per class, those without a lung, skipped inputs, file paths."""
        counts = ", ".join(f"{n} {c}" for c, n in zip(self.class_names, self.per_class))
        text = f"inference done: {self.rows} predictions ({counts}) in {os.path.abspath(self.path)}"
        if len(self.class_names) == 2:
            where = {"checkpoint": "the checkpoint's (chosen on val)", "default": "0.5: none stored with the checkpoint"}
            text += f"; decision threshold {self.threshold['value']:.4g} ({where.get(self.threshold['source'], self.threshold['source'])})"
        if self.no_lung:
            text += (
                f"; {self.no_lung} made without a lung found (lung_found=False: blank or non-CT images?"
                " check them before trusting their predictions)"
            )
        elif self.lung_unknown < self.rows:
            text += "; a lung was found in every image"
        if self.lung_unknown:
            text += f"; {self.lung_unknown} not checked for a lung (no LocateLungd in the preprocessing)"
        skipped = self._skipped()
        if skipped:
            text += f"; {skipped} input(s) skipped as unreadable, listed in {os.path.abspath(self.skipped_file)}"
        elif skipped == 0:
            text += "; no input skipped"
        return text

    def _exception_raised(self, engine: Engine, e: Exception) -> None:
        if self.rows == 0:  # nothing predicted yet (e.g. the checkpoint did not load): leave no empty file behind
            if os.path.isfile(self.partial_path):
                os.remove(self.partial_path)
            raise e
        self.logger.error(
            f"inference stopped by an error after {self.rows} predictions: they are kept in"
            f" {os.path.abspath(self.partial_path)}; {self.path} was left as it was."
        )
        raise e

