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
from monai.handlers import CheckpointLoader, CheckpointSaver
from monai.utils import set_determinism

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["EpochSeedHandler", "AtomicCheckpointSaver", "ResumeFromLatest", "latest_checkpoint"]

_STEP_RE = re.compile(r"=(\d+)\.(?:pt|pth)$")


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


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose files are written atomically (temporary file, then rename).

    MONAI's saver writes in place, so a process killed while saving leaves a truncated checkpoint that the next
    resume would try to load. This saver never leaves a partial ``*.pt``; files are made readable by the group
    as MONAI intends. It also exposes ``state_dict()`` of its best-metric tracker, so the trainer's checkpoint
    can carry it and a resumed run keeps the best model chosen before the interruption.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                # ignite's atomic mode: temporary file in the same folder, os.replace, then group/others read
                ckpt.save_handler._atomic = True

    def state_dict(self) -> dict:
        """Best-metric tracking state (empty when this saver does not track a key metric)."""
        if self._key_metric_checkpoint is None:
            return {}
        return _plain(self._key_metric_checkpoint.state_dict())

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        super().load_state_dict(state_dict)


class ResumeFromLatest:
    """Resume a run from the newest checkpoint in a folder, or start afresh when there is none.

    Wraps MONAI's ``CheckpointLoader`` (``weights_only`` loading) and chooses the file at ``STARTED`` time,
    so a bundle config does not need to know whether a previous run exists.

    Args:
        ckpt_dir: folder of ``{prefix}_*=N.pt`` checkpoints written by ``AtomicCheckpointSaver``.
        load_dict: objects to restore (network, optimizer, lr scheduler, trainer, ...).
        prefix: checkpoint file prefix.
        enabled: switch resuming off (always start afresh).
    """

    def __init__(self, ckpt_dir: str, load_dict: dict, prefix: str = "checkpoint", enabled: bool = True) -> None:
        self.ckpt_dir = ckpt_dir
        self.load_dict = load_dict
        self.prefix = prefix
        self.enabled = enabled
        self.logger = logging.getLogger(__name__)
        self.loaded_path: str | None = None

    def attach(self, engine: Engine) -> None:
        from ignite.engine import Events

        self.logger = engine.logger
        # before any other STARTED handler (e.g. the pretrained-weights loader), so a resume wins
        engine.add_event_handler(Events.STARTED, self)
        handlers = engine._event_handlers[Events.STARTED]
        handlers.insert(0, handlers.pop())

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            return
        path = latest_checkpoint(self.ckpt_dir, self.prefix)
        if path is None:
            self.logger.info(f"no checkpoint '{self.prefix}_*' in {self.ckpt_dir}: starting a new run")
            return
        try:
            CheckpointLoader(load_path=path, load_dict=self.load_dict, map_location="cpu")(engine)
        except Exception as e:
            raise RuntimeError(f"cannot resume from checkpoint {path}: {e}") from e
        self.loaded_path = path
        engine.state.resumed_from = path
        self.logger.info(f"resumed from {path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")
