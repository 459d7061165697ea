# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Evaluation report: metrics with bootstrap confidence intervals, per-image predictions and a ROC curve."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .predictions import PredictionWriter, _items, given_threshold, lung_fields

if TYPE_CHECKING:
    from ignite.engine import Engine

# PredictionWriter and lung_fields (an inference run's per-image predictions) live in .predictions; named here too
__all__ = ["ClassificationReport", "PredictionWriter", "lung_fields", "write_classification_report"]


def _as_index(label: Any) -> int:
    t = torch.as_tensor(label)
    return int(t.argmax()) if t.numel() > 1 else int(t.reshape(-1)[0])


def write_classification_report(
    output_dir: str,
    names: Sequence[str],
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    positive_class: int = 1,
    n_bootstrap: int = 1000,
    seed: int = 0,
    title: str | None = None,
    extra: dict | None = None,
    threshold: float | Mapping | None = None,
) -> dict:
    """Write ``metrics.json``, ``predictions.csv`` and ``roc.png`` into ``output_dir`` and return the metrics.

    ``predictions.csv`` has the columns of an inference run's (``file, pred, pred_class, prob_<class>...,
    threshold, lung_found, lung_box_fraction``; ``pred`` decided at the decision threshold) and ``label``.

    Binary tasks get accuracy, F1 of ``positive_class`` (COVID), ROC AUC, sensitivity and specificity with
    95% percentile-bootstrap intervals; tasks with more classes get accuracy with its interval and
    one-vs-rest AUC of ``positive_class``.

    The top-level metrics of a binary task are those at 0.5 (argmax), as always; ``at_threshold`` holds the same
    metrics at the decision threshold used (``threshold``: a number, or ``{"value", "source"}`` as
    :func:`~mstl_monai.networks.checkpoint.decision_threshold` gives; None: 0.5) and ``decision_threshold`` records it.
    """
    from mstl_monai.metrics import bootstrap_classification_metrics, save_roc_curve
    from mstl_monai.metrics.io import write_metrics_json, write_predictions_csv

    labels = np.asarray(labels, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if len(labels) == 0:
        raise ValueError("no images were evaluated: the evaluation datalist is empty.")
    os.makedirs(output_dir, exist_ok=True)
    y_pos = (labels == positive_class).astype(np.int64)
    p_pos = probs[:, positive_class]
    if probs.shape[1] == 2:
        metrics = bootstrap_classification_metrics(y_pos, p_pos, n_bootstrap=n_bootstrap, seed=seed)
        used = given_threshold(threshold)
        metrics["decision_threshold"] = used
        metrics["at_threshold"] = bootstrap_classification_metrics(
            y_pos, p_pos, n_bootstrap=n_bootstrap, seed=seed, threshold=used["value"]
        )
    else:
        rng = np.random.default_rng(seed)
        correct = (probs.argmax(1) == labels).astype(np.float64)
        idx = rng.integers(0, len(correct), size=(n_bootstrap, len(correct)))
        boot = correct[idx].mean(1)
        metrics = {
            "accuracy": {
                "value": float(correct.mean()),
                "ci_low": float(np.percentile(boot, 2.5)),
                "ci_high": float(np.percentile(boot, 97.5)),
            },
            "n": int(len(labels)),
        }
        if 0 < y_pos.sum() < len(y_pos):
            from mstl_monai.metrics import binary_roc_auc

            metrics[f"auc_{class_names[positive_class]}_vs_rest"] = float(binary_roc_auc(y_pos, p_pos))
    metrics["class_names"] = list(class_names)
    metrics["positive_class"] = class_names[positive_class]
    if extra:
        metrics.update(extra)
    write_metrics_json(os.path.join(output_dir, "metrics.json"), metrics)
    decided_at = metrics["decision_threshold"]["value"] if "decision_threshold" in metrics else 0.5
    write_predictions_csv(
        os.path.join(output_dir, "predictions.csv"), names, labels, probs, class_names=class_names,
        threshold=decided_at, positive_class=positive_class,
    )
    if 0 < y_pos.sum() < len(y_pos):
        save_roc_curve({title or "test": (y_pos, p_pos)}, os.path.join(output_dir, "roc.png"), title=title)
    return metrics


class ClassificationReport:
    """Collect an evaluator's probabilities and labels and write the evaluation report when it completes.

    Attach to a MONAI ``SupervisedEvaluator`` whose postprocessing turns ``pred`` into class probabilities
    (``Activationsd(softmax=True)``). Files: ``metrics.json`` (values with 95% bootstrap intervals and the
    number of images), ``predictions.csv`` (one row per image) and ``roc.png``.

    Args:
        output_dir: folder for the files.
        class_names: names of the classes, in label order.
        positive_class: index of the class whose F1 / sensitivity are reported (COVID = 1).
        n_bootstrap: bootstrap resamples for the intervals.
        seed: bootstrap seed.
        name_key: batch key holding a per-image name (falls back to the image's ``filename_or_obj``).
        title: curve label in ``roc.png``.
        split: name of the data split scored (e.g. ``"test"``): the log line names the images and metrics with it
            (``evaluation on 203 test images: test accuracy ...``).
        threshold: the decision threshold on the positive class's probability (a number, or ``{"value",
            "source"}`` from :func:`~mstl_monai.networks.checkpoint.decision_threshold`); the metrics at it go to
            ``metrics.json`` as ``at_threshold`` beside those at 0.5. None: 0.5.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        positive_class: int = 1,
        n_bootstrap: int = 1000,
        seed: int = 0,
        name_key: str = "name",
        title: str | None = None,
        extra: dict | None = None,
        split: str | None = None,
        threshold: float | Mapping | None = None,
    ) -> None:
        if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, int) or n_bootstrap < 1:
            # checked here, before the evaluation runs, not when the report is written at its end
            raise ValueError(
                f"n_bootstrap must be a positive integer (the bootstrap draws behind every 95% interval of the "
                f"report), got {n_bootstrap!r}."
            )
        self.output_dir = output_dir
        self.threshold = threshold
        self.split = split
        self.class_names = list(class_names)
        self.positive_class = positive_class
        self.n_bootstrap = n_bootstrap
        self.seed = seed
        self.name_key = name_key
        self.title = title
        self.extra = extra
        self.logger = logging.getLogger(__name__)
        self.metrics: dict | None = None
        self._reset(None)

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine | None) -> None:
        self._names: list[str] = []
        self._labels: list[int] = []
        self._probs: list[np.ndarray] = []

    def _collect(self, engine: Engine) -> None:
        outputs, batch = _items(engine)
        for i, out in enumerate(outputs):
            self._probs.append(torch.as_tensor(out["pred"]).detach().float().cpu().reshape(-1).numpy())
            self._labels.append(_as_index(out["label"]))
            item = batch[i] if i < len(batch) else {}
            name = item.get(self.name_key) if isinstance(item, dict) else None
            if name is None:
                img = out.get("image")
                meta = getattr(img, "meta", {}) or {}
                name = meta.get("filename_or_obj", f"image_{len(self._names)}")
            self._names.append(os.path.basename(str(name)))

    def __call__(self, engine: Engine) -> None:
        from ignite.distributed import all_gather, get_rank, get_world_size

        probs = np.stack(self._probs) if self._probs else np.zeros((0, len(self.class_names)))
        labels = np.asarray(self._labels, dtype=np.int64)
        names = self._names
        if get_world_size() > 1:
            probs = all_gather(torch.as_tensor(probs)).numpy()
            labels = all_gather(torch.as_tensor(labels)).numpy()
            names = list(all_gather(names))
            if get_rank() != 0:
                return
        self.metrics = write_classification_report(
            self.output_dir,
            names,
            labels,
            probs,
            self.class_names,
            positive_class=self.positive_class,
            n_bootstrap=self.n_bootstrap,
            seed=self.seed,
            title=self.title,
            extra=self.extra,
            threshold=self.threshold,
        )
        engine.state.report = self.metrics
        prefix = f"{self.split} " if self.split else ""

        def summary(metrics: dict) -> str:
            return ", ".join(
                f"{prefix}{k} {v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"
                for k, v in metrics.items()
                if isinstance(v, dict) and "ci_low" in v and v["value"] is not None
            )

        text = f"evaluation on {len(labels)} {prefix}images: {summary(self.metrics)} (threshold 0.5)"
        used = self.metrics.get("decision_threshold")
        if used is not None and used["source"] != "default":
            text += f"; at the {used['source']} threshold {used['value']:.4f}: {summary(self.metrics['at_threshold'])}"
        elif used is not None:
            text += " (no decision threshold stored with the checkpoint: 0.5 used)"
        self.logger.info(f"{text}; report in {self.output_dir}")
