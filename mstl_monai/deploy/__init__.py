# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Deployment: a scan's answer as a DICOM Structured Report, ONNX export, and a MONAI Deploy application."""

from __future__ import annotations

from .onnx_export import OnnxClassifier, export_checkpoint_onnx, export_onnx, load_slices, max_abs_diff, slice_preprocessing
from .provenance import TRAINING_DATA_KEYS, file_sha256, model_description
from .sr import DISCLAIMER, LOCAL_SCHEME, build_scan_sr, read_source_datasets, write_scan_sr
from .writer import SRScanWriter

__all__ = [
    "DISCLAIMER",
    "LOCAL_SCHEME",
    "OnnxClassifier",
    "SRScanWriter",
    "TRAINING_DATA_KEYS",
    "build_scan_sr",
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
