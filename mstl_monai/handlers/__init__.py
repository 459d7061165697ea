# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Ignite handlers of the bundle's stages: checkpoint saving and loading, resuming, guards, per-image predictions and
the evaluation report, the SSTL-M probes, experiment tracking, batch-norm freezing and the backbone hand-over."""

from __future__ import annotations

from .backbone_saver import BackboneSaver
from .batch_norm import FreezeBatchNorm, freeze_batch_norm
from .checkpoint_loader import CheckpointNetworkLoader
from .guards import NonFiniteError, NonFiniteGuard, non_finite_tensors
from .predictions import PredictionWriter, lung_fields
from .probe_handler import ProbeHandler
from .probes import SSTLProbe, extract_features, knn_probe, knn_scores, lobe_probe
from .report import ClassificationReport, write_classification_report
from .tracking import MLflowStageLogger, flatten_metrics
from .training import AtomicCheckpointSaver, DecisionThresholdHandler, EpochSeedHandler, ResumeFromLatest, latest_checkpoint

__all__ = [
    "AtomicCheckpointSaver",
    "BackboneSaver",
    "CheckpointNetworkLoader",
    "ClassificationReport",
    "DecisionThresholdHandler",
    "EpochSeedHandler",
    "FreezeBatchNorm",
    "MLflowStageLogger",
    "NonFiniteError",
    "NonFiniteGuard",
    "PredictionWriter",
    "ProbeHandler",
    "ResumeFromLatest",
    "SSTLProbe",
    "extract_features",
    "flatten_metrics",
    "freeze_batch_norm",
    "knn_probe",
    "knn_scores",
    "latest_checkpoint",
    "lobe_probe",
    "lung_fields",
    "non_finite_tensors",
    "write_classification_report",
]
