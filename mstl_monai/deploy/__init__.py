# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Deployment: a scan's answer as a DICOM Structured Report, ONNX export, and a MONAI Deploy application.

The MONAI Deploy App SDK wrapper, :mod:`mstl_monai.deploy.monai_deploy_app`, is not imported here: it needs the
SDK (and its CUDA 13 runtime); everything else runs on the CPU with the core dependencies (ONNX: ``onnx`` and
``onnxruntime``, the ``deploy`` extra).
"""

from __future__ import annotations

from .onnx_export import (
    OnnxClassifier,
    export_checkpoint_onnx,
    export_onnx,
    load_slices,
    max_abs_diff,
    slice_preprocessing,
)
from .operators import DEFAULT_RULES, ScanReportPipeline, SelectedSeries, SeriesSelector, bundle_config
from .provenance import TRAINING_DATA_KEYS, file_sha256, model_description
from .sr import DISCLAIMER, LOCAL_SCHEME, build_scan_sr, read_source_datasets, write_scan_sr
from .writer import SRScanWriter

__all__ = [
    "DEFAULT_RULES",
    "DISCLAIMER",
    "LOCAL_SCHEME",
    "OnnxClassifier",
    "SRScanWriter",
    "ScanReportPipeline",
    "SelectedSeries",
    "SeriesSelector",
    "TRAINING_DATA_KEYS",
    "build_scan_sr",
    "bundle_config",
    "export_checkpoint_onnx",
    "export_onnx",
    "file_sha256",
    "load_slices",
    "max_abs_diff",
    "model_description",
    "read_source_datasets",
    "slice_preprocessing",
    "write_scan_sr",
]
