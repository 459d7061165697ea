# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Trainers and iteration functions of the bundle's stages: the SSTL-M trainer, MAG-SD's iteration, mixup's batch
preparation and the learning-rate schedules. Handlers are in :mod:`mstl_monai.handlers`, inferers in
:mod:`mstl_monai.inferers`; their old names here are deprecated aliases (:mod:`mstl_monai.engines.deprecated`)."""

from __future__ import annotations

from .deprecated import moved_name
from .mag_sd import MAGSD_TERMS, MAGSDIteration, mag_sd_metrics, unwrap_network
from .mixup import BatchMixUp, MixUpPrepareBatch, mixup_label_postprocessing
from .schedules import LR_SCHEDULES, build_lr_scheduler
from .sstl import SSTLTrainer, sstl_scalar_terms

__all__ = ["BatchMixUp", "LR_SCHEDULES", "MAGSD_TERMS", "MAGSDIteration", "MixUpPrepareBatch", "SSTLTrainer"]
__all__ += ["build_lr_scheduler", "mag_sd_metrics", "mixup_label_postprocessing", "sstl_scalar_terms", "unwrap_network"]


def __getattr__(name: str):
    return moved_name(name)
