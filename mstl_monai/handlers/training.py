# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Ignite handlers for reproducible, resumable, crash-safe training."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import set_determinism

from mstl_monai.networks.sidecar import info_path, write_checkpoint_info
from mstl_monai.handlers.guards import NonFiniteError, non_finite_tensors

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = [
    "EpochSeedHandler",
    "AtomicCheckpointSaver",
    "DecisionThresholdHandler",
    "ResumeFromLatest",
    "latest_checkpoint",
]

_STEP_RE = re.compile(r"=(\d+)\.(?:pt|pth)$")
#: temporary files of an interrupted save: ignite's ``DiskSaver`` (``tmpXXXXXXXX``) and ``atomic_write``
#: (``.<name>.XXXXXXXX.tmp``)
_ORPHAN_RE = re.compile(r"^(tmp[a-z0-9_]{6,}|\..+\.tmp)$")


def latest_checkpoint(ckpt_dir: str | os.PathLike, prefix: str = "checkpoint") -> str | None:
    """Return the newest ``{prefix}_*=N.pt`` file in ``ckpt_dir`` by its parsed step ``N`` (not string order).

    Returns ``None`` when the folder or a matching file does not exist. Temporary files of an interrupted save
    (ignite writes ``*.pt.part``/``tmp*`` files and renames them) are never returned.
    """
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    best: tuple[int, str] | None = None
    for f in folder.iterdir():
        if not f.name.startswith(prefix) or not f.is_file():
            continue
        m = _STEP_RE.search(f.name)
        if m is None:
            continue
        step = int(m.group(1))
        if best is None or step > best[0]:
            best = (step, str(f))
    return None if best is None else best[1]


class EpochSeedHandler:
    """Reseed every random generator at the start of each epoch from ``seed + epoch``.

    Makes a run that is stopped after epoch ``e`` and resumed from its checkpoint draw exactly the same
    augmentations, shuffles, dropout masks and worker seeds as an unbroken run: ignite creates the data
    iterator of an epoch after ``EPOCH_STARTED``, so the sampler, the workers' base seed (MONAI's
    ``worker_init_fn`` reseeds the transforms from it) and single-process transforms all start from the
    epoch's seed.

    Args:
        seed: base seed.
        transforms: optional MONAI ``Randomizable`` transform (e.g. the training ``Compose``) to reseed too;
            needed when the loader runs without worker processes.
    """

    def __init__(self, seed: int = 0, transforms: Any | None = None) -> None:
        self.seed = int(seed)
        self.transforms = transforms

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        seed = self.seed + int(engine.state.epoch)
        set_determinism(seed=seed)
        if self.transforms is not None and hasattr(self.transforms, "set_random_state"):
            self.transforms.set_random_state(seed=seed)


def _plain(obj: Any) -> Any:
    """numpy scalars -> Python numbers, recursively, so ``weights_only`` loading accepts the state."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


class _SaveThenRemove(DiskSaver):
    """ignite save handler that writes the new file (atomically) before it removes the one it replaces.

    ignite's ``Checkpoint`` calls ``remove(old)`` and then saves the new file; a process killed in between
    leaves neither. Here ``remove`` only queues the file, and the queue is emptied after the next save
    succeeded; a failed save leaves every old file in place. Files that are already gone are skipped (a
    resumed run's saver state may name a file an earlier crash never wrote).

    Args:
        dirname: the checkpoint folder.
        filename: fixed file name (MONAI's ``key_metric_filename`` / ``final_filename``), or None.
        info: what the checkpoint is (:func:`~mstl_monai.networks.sidecar.write_checkpoint_info`), written
            beside each file as ``<file>.json``; None: no sidecar.
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, info: dict | None = None) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True)
        self.filename = filename
        self.info = info
        self._pending: list[str] = []

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        from ignite import distributed as idist

        from mstl_monai.utils.io import atomic_write

        filename = self.filename or filename
        pending, self._pending = self._pending, []
        if idist.get_rank() != self.save_on_rank:
            return
        path = self.dirname / filename
        bad = non_finite_tensors(checkpoint)
        if bad:  # diverged weights never replace a checkpoint (the previous file stays)
            raise NonFiniteError(f"not writing {path}: it would hold non-finite values (in {', '.join(bad)}).")
        if self.info is not None:
            write_checkpoint_info(path, self.info)
        with atomic_write(path, "wb") as f:
            torch.save(checkpoint, f, **self.kwargs)
        for old in pending:
            if old != filename:
                self._unlink(old)

    def remove(self, filename: str) -> None:
        self._pending.append(self.filename or filename)

    def _unlink(self, filename: str) -> None:
        for p in (self.dirname / filename, info_path(self.dirname / filename)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` that never leaves a moment without the previous checkpoint on disk.

    MONAI's saver writes in place and (through ignite's ``Checkpoint``) removes the previous file before it
    writes the new one, so a process killed while saving loses the best model and the resumable checkpoint.
    Here every file is written to a temporary file and renamed, and the file it replaces is removed only
    afterwards; files are readable by the group as MONAI intends. When the engine starts, temporary files of
    an interrupted save are removed and the interval checkpoints already in ``save_dir`` are taken over (a
    resumed run keeps ``n_saved`` of them and removes older ones; checkpoints ahead of the starting epoch,
    left by an earlier run that is not resumed, are removed with a warning), so the folder never holds a stale
    checkpoint that a later resume would pick.

    It also exposes ``state_dict()`` of its best-metric tracker, so the trainer's checkpoint can carry it and a
    resumed run keeps the best model chosen before the interruption.

    Args:
        args, kwargs: as MONAI's ``CheckpointSaver``.
        info: what the checkpoints are (architecture, input size, class names, ...): written beside each file
            as ``<file>.json`` (see :func:`~mstl_monai.networks.sidecar.write_checkpoint_info`).
    """

    def __init__(self, *args: Any, info: dict | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.info = dict(info) if info else None
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                fixed = getattr(ckpt.save_handler, "filename", None)
                ckpt.save_handler = _SaveThenRemove(self.save_dir, filename=fixed, info=self.info)
        self._tidied = False

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        super().attach(engine)
        if self._interval_checkpoint is not None:
            # after ResumeFromLatest (attached before the savers), so the starting epoch is known
            engine.add_event_handler(Events.STARTED, self.tidy)

    def exception_raised(self, engine: Engine, e: Exception) -> None:
        """MONAI's final checkpoint of a failed run, except when it failed on diverged training: then the previous
        ``final_filename`` stays and nothing is written."""
        if isinstance(e, NonFiniteError):
            self.logger.warning(f"not writing the final checkpoint of a run stopped on non-finite values: {e}")
            raise e
        super().exception_raised(engine, e)

    def tidy(self, engine: Engine) -> None:
        """Remove orphaned temporary files and take over (or remove stale) interval checkpoints in ``save_dir``."""
        from ignite import distributed as idist
        from ignite.handlers import Checkpoint

        if self._tidied or self._interval_checkpoint is None:
            return
        self._tidied = True
        folder = Path(self.save_dir)
        if idist.get_rank() != 0 or not folder.is_dir():
            return
        for f in folder.iterdir():
            if f.is_file() and _ORPHAN_RE.match(f.name):
                self.logger.warning(f"removing {f}: the temporary file of an interrupted save")
                f.unlink()
        ckpt = self._interval_checkpoint
        step_name = "epoch" if self.epoch_level else "iteration"
        current = int(engine.state.epoch if self.epoch_level else engine.state.iteration)
        pattern = re.compile(rf"^(?:.+_)?{step_name}=(\d+)\.pt$")
        found = sorted(
            (int(m.group(1)), f.name) for f in folder.iterdir() if f.is_file() and (m := pattern.match(f.name))
        )
        handler = ckpt.save_handler
        ahead = [name for step, name in found if step > current]
        for name in ahead:
            self.logger.warning(
                f"removing {folder / name}: a checkpoint of an earlier run ahead of this run's start "
                f"({step_name} {current}); a later resume would otherwise pick it"
            )
            handler._unlink(name)
        kept = [(step, name) for step, name in found if step <= current]
        n_saved = ckpt.n_saved
        if n_saved is not None and len(kept) > n_saved:
            for _, name in kept[: len(kept) - n_saved]:
                self.logger.info(f"removing stale checkpoint {folder / name}")
                handler._unlink(name)
            kept = kept[len(kept) - n_saved :]
        known = {item.filename for item in ckpt._saved}
        ckpt._saved.extend(Checkpoint.Item(step, name) for step, name in kept if name not in known)
        ckpt._saved.sort(key=lambda it: it[0])

    def state_dict(self) -> dict:
        """Best-metric tracking state (empty when this saver does not track a key metric)."""
        if self._key_metric_checkpoint is None:
            return {}
        return _plain(self._key_metric_checkpoint.state_dict())

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        super().load_state_dict(state_dict)

    def update_info(self, **changes: Any) -> None:
        """Change what the next sidecars say (e.g. ``decision_threshold``); files already written stay as they are."""
        if self.info is not None:
            self.info.update(changes)  # the dict the save handlers write


class DecisionThresholdHandler:
    """Choose the decision threshold of each validation epoch and store it with the best checkpoint.

    Attach to the validator (a MONAI ``SupervisedEvaluator`` whose ``pred`` are class probabilities). At the end of
    every validation run it applies :func:`~mstl_monai.metrics.youden_threshold` (maximum ``J = sens + spec - 1``,
    ties to the threshold closest to 0.5, midpoints between adjacent distinct probabilities) to the positive
    class's val probabilities, logs it (``val_threshold`` in ``engine.state.metrics``), and hands it to ``saver``
    before the saver runs: when that epoch's model becomes the new best ``model.pt``, its sidecar
    ``model.pt.json`` says ``"decision_threshold": t`` (written atomically with the checkpoint). An epoch where no
    threshold separates the classes stores ``null`` (readers then use 0.5, and say so).

    It also calibrates: a temperature ``T`` fitted on the same val probabilities (:func:`~mstl_monai.metrics.
    fit_temperature`, ``softmax(z / T)``) goes to the sidecar as ``temperature``, and the thresholds are chosen on the
    calibrated probabilities: ``decision_threshold`` (= ``operating_points["youden"]``) and
    ``operating_points["sensitivity_90"]`` (the highest val threshold with sensitivity >= 90 %), with the val ECE
    before and after in ``calibration``. Readers apply ``T`` before the softmax, so the stored thresholds are
    thresholds of the probability they report.

    Binary tasks only (a ``pred`` with two entries); otherwise nothing is chosen. Under multi-GPU validation only
    rank 0's images are seen (a warning says so).

    Args:
        saver: the validator's :class:`AtomicCheckpointSaver` of the best model (None: only log the threshold).
        positive_class: index of the class whose probability is thresholded (COVID = 1).
        output_transform: engine output -> ``(preds, labels)``; default ``from_engine(["pred", "label"])``.
    """

    def __init__(
        self, saver: AtomicCheckpointSaver | None = None, positive_class: int = 1, output_transform: Any = None
    ) -> None:
        from monai.handlers import from_engine

        self.saver = saver
        self.positive_class = int(positive_class)
        self.output_transform = output_transform or from_engine(["pred", "label"])
        self.logger = logging.getLogger(__name__)
        self.threshold: float | None = None
        self.operating_points: dict[str, float | None] = {}
        self._reset(None)

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        self.logger = engine.logger
        # before the checkpoint saver, so a new best model.pt is written with the threshold of its own epoch
        if self.saver is not None and engine.has_event_handler(self.saver.metrics_completed, Events.EPOCH_COMPLETED):
            raise ValueError(
                "DecisionThresholdHandler is attached after its checkpoint saver: list it before the saver in the "
                "validator's handlers, so the best model.pt gets the threshold of its own epoch."
            )
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def _reset(self, engine: Engine | None) -> None:
        self._probs: list[float] = []
        self._labels: list[int] = []
        self._binary = True

    def _collect(self, engine: Engine) -> None:
        preds, labels = self.output_transform(engine.state.output)
        for p, y in zip(preds, labels):
            p = torch.as_tensor(p).detach().float().cpu().reshape(-1)
            if p.numel() != 2:
                self._binary = False
                return
            y = torch.as_tensor(y).reshape(-1)
            self._probs.append(float(p[self.positive_class]))
            self._labels.append(int(y.argmax()) if y.numel() > 1 else int(y[0]))

    def __call__(self, engine: Engine) -> None:
        from ignite import distributed as idist

        from mstl_monai.metrics import (
            apply_temperature,
            expected_calibration_error,
            fit_temperature,
            sensitivity_threshold,
            youden_threshold,
        )

        if not self._binary or not self._probs:
            return
        if idist.get_world_size() > 1:
            self.logger.warning("decision threshold chosen on rank 0's share of the val images only")
        y = (np.asarray(self._labels) == self.positive_class).astype(np.int64)
        p = np.asarray(self._probs)
        temperature, calibration, q = 1.0, None, p
        if 0 < int(y.sum()) < y.size:
            temperature = fit_temperature(y, p)
            q = apply_temperature(p, temperature)
            calibration = {
                "method": "temperature scaling on val",
                "n_val": int(y.size),
                "val_ece_before": expected_calibration_error(y, p),
                "val_ece_after": expected_calibration_error(y, q),
            }
            engine.state.metrics["val_temperature"] = temperature
            engine.state.metrics["val_ece"] = calibration["val_ece_after"]
        self.threshold = youden_threshold(y, q)
        self.operating_points = {"youden": self.threshold, "sensitivity_90": sensitivity_threshold(y, q, 0.9)}
        engine.state.decision_threshold = self.threshold
        if self.threshold is None:
            self.logger.info(
                f"epoch {engine.state.epoch}: no val threshold separates the classes (max Youden J <= 0): 0.5 applies"
            )
        else:
            engine.state.metrics["val_threshold"] = self.threshold
        if self.saver is not None:
            self.saver.update_info(
                decision_threshold=self.threshold,
                temperature=temperature,
                operating_points=self.operating_points,
                calibration=calibration,
            )


class ResumeFromLatest:
    """Resume a run from the newest checkpoint in a folder, or start afresh when there is none.

    Wraps MONAI's ``CheckpointLoader`` (``weights_only`` loading) and chooses the file at ``STARTED`` time,
    so a bundle config does not need to know whether a previous run exists. Attach it first (the bundle configs
    list it first in the trainer's handlers): the other ``STARTED`` handlers (e.g. the probes, which probe the
    incoming weights of a fresh run only) then see the resumed state.

    Args:
        ckpt_dir: folder of ``{prefix}_*=N.pt`` checkpoints written by ``AtomicCheckpointSaver``.
        load_dict: objects to restore (network, optimizer, lr scheduler, trainer, ...).
        prefix: checkpoint file prefix.
        enabled: switch resuming off (always start afresh).
        engine_key: restore the engine it is attached to under this key too (e.g. ``"trainer"``), so that a
            config lists it among the trainer's own handlers without naming the trainer in ``load_dict``.
    """

    def __init__(
        self, ckpt_dir: str, load_dict: dict, prefix: str = "checkpoint", enabled: bool = True,
        engine_key: str | None = None,
    ) -> None:
        self.ckpt_dir = ckpt_dir
        self.load_dict = load_dict
        self.prefix = prefix
        self.enabled = enabled
        self.engine_key = engine_key
        self.logger = logging.getLogger(__name__)
        self.loaded_path: str | None = None

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        path = latest_checkpoint(self.ckpt_dir, self.prefix)
        if path is None:
            others = sorted(p.name for p in Path(self.ckpt_dir).glob("*.pt")) if os.path.isdir(self.ckpt_dir) else []
            if others:
                self.logger.warning(
                    f"no resumable checkpoint '{self.prefix}_*' in {self.ckpt_dir} (it holds {others}): starting"
                    " from epoch 0"
                )
            else:
                self.logger.info(f"no checkpoint '{self.prefix}_*' in {self.ckpt_dir}: starting a new run")
            return
        try:
            load_dict = dict(self.load_dict, **({self.engine_key: engine} if self.engine_key else {}))
            CheckpointLoader(load_path=path, load_dict=load_dict, map_location="cpu")(engine)
        except Exception as e:
            raise RuntimeError(f"cannot resume from checkpoint {path}: {e}") from e
        self.loaded_path = path
        engine.state.resumed_from = path
        self.logger.info(f"resumed from {path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")
