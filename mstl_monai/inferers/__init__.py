# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Inferers: mixed-precision and flip test-time augmentation around a network, and whole-scan classification (slice
selection, batched slice inference, aggregation to one answer per scan, the scan writer)."""

from __future__ import annotations

from .inferer import AutocastInferer, FlipTTAInferer, resolve_amp_dtype
from .scan import ScanClassifier, autocast_helps, load_classifier_weights, lung_fractions
from .scan_aggregate import aggregate_slice_probabilities, check_scan_options, select_lung_slices
from .scan_inference import ScanWriter, collect_scans, run_scan_inference

__all__ = [
    "AutocastInferer",
    "FlipTTAInferer",
    "ScanClassifier",
    "ScanWriter",
    "aggregate_slice_probabilities",
    "autocast_helps",
    "check_scan_options",
    "collect_scans",
    "load_classifier_weights",
    "lung_fractions",
    "resolve_amp_dtype",
    "run_scan_inference",
    "select_lung_slices",
]
