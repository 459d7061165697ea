# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The names :mod:`mstl_monai.engines` held before the handlers, inferers and checkpoint readers went to their homes:
deprecated aliases for one release (a ``DeprecationWarning`` names the new home). The package and its configs use
the new homes."""

from __future__ import annotations

import importlib
from typing import Any

from monai.utils import deprecated

from mstl_monai import __version__

__all__ = ["MOVED", "moved_name"]

#: old name in ``mstl_monai.engines`` -> the module that holds it now
MOVED: dict[str, str] = {
    "check_datalist": "mstl_monai.data",
    "require_file": "mstl_monai.data",
    "split_datalist": "mstl_monai.data",
    "sstl_datalist": "mstl_monai.data",
    "AtomicCheckpointSaver": "mstl_monai.handlers",
    "BackboneSaver": "mstl_monai.handlers",
    "CheckpointNetworkLoader": "mstl_monai.handlers",
    "ClassificationReport": "mstl_monai.handlers",
    "DecisionThresholdHandler": "mstl_monai.handlers",
    "EpochSeedHandler": "mstl_monai.handlers",
    "FreezeBatchNorm": "mstl_monai.handlers",
    "MLflowStageLogger": "mstl_monai.handlers",
    "NonFiniteError": "mstl_monai.handlers",
    "NonFiniteGuard": "mstl_monai.handlers",
    "PredictionWriter": "mstl_monai.handlers",
    "ProbeHandler": "mstl_monai.handlers",
    "ResumeFromLatest": "mstl_monai.handlers",
    "SSTLProbe": "mstl_monai.handlers",
    "extract_features": "mstl_monai.handlers",
    "flatten_metrics": "mstl_monai.handlers",
    "freeze_batch_norm": "mstl_monai.handlers",
    "knn_probe": "mstl_monai.handlers",
    "knn_scores": "mstl_monai.handlers",
    "latest_checkpoint": "mstl_monai.handlers",
    "lobe_probe": "mstl_monai.handlers",
    "lung_fields": "mstl_monai.handlers",
    "non_finite_tensors": "mstl_monai.handlers",
    "write_classification_report": "mstl_monai.handlers",
    "AutocastInferer": "mstl_monai.inferers",
    "FlipTTAInferer": "mstl_monai.inferers",
    "ScanClassifier": "mstl_monai.inferers",
    "ScanWriter": "mstl_monai.inferers",
    "aggregate_slice_probabilities": "mstl_monai.inferers",
    "autocast_helps": "mstl_monai.inferers",
    "collect_scans": "mstl_monai.inferers",
    "load_classifier_weights": "mstl_monai.inferers",
    "lung_fractions": "mstl_monai.inferers",
    "resolve_amp_dtype": "mstl_monai.inferers",
    "run_scan_inference": "mstl_monai.inferers",
    "select_lung_slices": "mstl_monai.inferers",
    "SSTLLoss": "mstl_monai.losses",
    "BACKBONES": "mstl_monai.networks",
    "build_network": "mstl_monai.networks",
    "load_pretrained": "mstl_monai.networks",
    "check_checkpoint_settings": "mstl_monai.networks.checkpoint",
    "checkpoint_network": "mstl_monai.networks.checkpoint",
    "checkpoint_settings": "mstl_monai.networks.checkpoint",
    "decision_threshold": "mstl_monai.networks.checkpoint",
    "export_ckpt_file": "mstl_monai.networks.checkpoint",
    "operating_threshold": "mstl_monai.networks.checkpoint",
    "read_network_state": "mstl_monai.networks.checkpoint",
    "SSTLNetwork": "mstl_monai.networks.nets",
    "SSTL_METHODS": "mstl_monai.networks.nets",
    "simclr_logits": "mstl_monai.networks.nets",
    "checkpoint_info": "mstl_monai.networks.sidecar",
    "read_checkpoint_info": "mstl_monai.networks.sidecar",
    "write_checkpoint_info": "mstl_monai.networks.sidecar",
    "moco_v2_augmentations": "mstl_monai.transforms",
    "SSTLKeys": "mstl_monai.utils.enums",
    "check_overrides": "mstl_monai.utils.settings",
}


def moved_name(name: str) -> Any:
    """``mstl_monai.engines.<name>`` of an earlier release: the object from its new home, wrapped by MONAI's
    ``deprecated`` (a ``DeprecationWarning`` naming the new home when it is called or instantiated), and a warning
    now.

    Raises:
        AttributeError: ``name`` was never in ``mstl_monai.engines``.
    """
    import warnings

    if name not in MOVED:
        raise AttributeError(f"module 'mstl_monai.engines' has no attribute {name!r}")
    home = MOVED[name]
    obj = getattr(importlib.import_module(home), name)
    msg = f"mstl_monai.engines.{name} moved to {home}.{name}: import it from there."
    warnings.warn(f"{msg} The old name is removed in 0.2.0.", DeprecationWarning, stacklevel=3)
    if callable(obj) and not isinstance(obj, type):
        return deprecated(
            since="0.1.0", removed="0.2.0", msg_suffix=msg, version_val=__version__, warning_category=DeprecationWarning
        )(obj)
    return obj
