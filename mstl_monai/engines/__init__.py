# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Engines, handlers and helpers used by the bundle's stages."""

from __future__ import annotations

from .checkpoint import (
    CheckpointNetworkLoader,
    check_checkpoint_settings,
    checkpoint_info,
    checkpoint_network,
    checkpoint_settings,
    decision_threshold,
    operating_threshold,
    export_ckpt_file,
    read_checkpoint_info,
    read_network_state,
    write_checkpoint_info,
)
from .batch_norm import FreezeBatchNorm, freeze_batch_norm
from .guards import NonFiniteError, NonFiniteGuard, non_finite_tensors
from .handlers import AtomicCheckpointSaver, DecisionThresholdHandler, EpochSeedHandler, ResumeFromLatest, latest_checkpoint
from .predictions import PredictionWriter, lung_fields
from .report import ClassificationReport, write_classification_report
from .inferers import AutocastInferer, FlipTTAInferer, resolve_amp_dtype
from .mixup import BatchMixUp, MixUpPrepareBatch, mixup_label_postprocessing
from .schedules import LR_SCHEDULES, build_lr_scheduler
# the bundle configs' and users' names from before the pieces went to their families (networks/, data/, ...)
from mstl_monai.data import check_datalist, require_file, split_datalist
from mstl_monai.networks import BACKBONES, build_network, load_pretrained
from .sstl import (
    SSTL_METHODS,
    BackboneSaver,
    SSTLKeys,
    SSTLLoss,
    SSTLNetwork,
    SSTLTrainer,
    moco_v2_augmentations,
    simclr_logits,
    sstl_datalist,
    sstl_scalar_terms,
)
from .probe_handler import ProbeHandler
from .probes import SSTLProbe, extract_features, knn_probe, knn_scores, lobe_probe
from .tracking import MLflowStageLogger, flatten_metrics
from mstl_monai.utils.settings import check_overrides  # the bundle configs' first `initialize` entry

__all__ = [
    "BatchMixUp",
    "FlipTTAInferer",
    "MixUpPrepareBatch",
    "mixup_label_postprocessing",
    "BACKBONES",
    "build_network",
    "check_datalist",
    "load_pretrained",
    "require_file",
    "split_datalist",
    "AtomicCheckpointSaver",
    "CheckpointNetworkLoader",
    "FreezeBatchNorm",
    "freeze_batch_norm",
    "NonFiniteError",
    "NonFiniteGuard",
    "non_finite_tensors",
    "DecisionThresholdHandler",
    "check_checkpoint_settings",
    "checkpoint_info",
    "checkpoint_network",
    "checkpoint_settings",
    "decision_threshold",
    "operating_threshold",
    "export_ckpt_file",
    "read_checkpoint_info",
    "read_network_state",
    "write_checkpoint_info",
    "AutocastInferer",
    "ClassificationReport",
    "PredictionWriter",
    "lung_fields",
    "EpochSeedHandler",
    "ResumeFromLatest",
    "latest_checkpoint",
    "resolve_amp_dtype",
    "write_classification_report",
    "SSTL_METHODS",
    "BackboneSaver",
    "SSTLKeys",
    "SSTLLoss",
    "SSTLNetwork",
    "SSTLTrainer",
    "moco_v2_augmentations",
    "simclr_logits",
    "sstl_datalist",
    "sstl_scalar_terms",
    "ProbeHandler",
    "SSTLProbe",
    "extract_features",
    "knn_probe",
    "knn_scores",
    "lobe_probe",
    "MLflowStageLogger",
    "flatten_metrics",
    "check_overrides",
]

from .scan import (  # noqa: E402
    ScanClassifier,
    aggregate_slice_probabilities,
    autocast_helps,
    load_classifier_weights,
    lung_fractions,
    select_lung_slices,
)
from .scan_inference import ScanWriter, collect_scans, run_scan_inference  # noqa: E402

__all__ += [
    "ScanClassifier",
    "ScanWriter",
    "aggregate_slice_probabilities",
    "autocast_helps",
    "collect_scans",
    "load_classifier_weights",
    "lung_fractions",
    "run_scan_inference",
    "select_lung_slices",
]

from .mag_sd import MAGSD_TERMS, MAGSDIteration, mag_sd_metrics, unwrap_network  # noqa: E402

__all__ += ["LR_SCHEDULES", "build_lr_scheduler"]
__all__ += ["MAGSD_TERMS", "MAGSDIteration", "mag_sd_metrics", "unwrap_network"]
