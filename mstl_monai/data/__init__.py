# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Datalist builders for the pipeline's data sets, their checks, a synthetic lung-CT phantom, and a DICOM series ->
NIfTI converter."""

from __future__ import annotations

from .collate import meta_safe_collate
from .datalists import (
    COVID_CT_CLASSES,
    CXR_CLASSES,
    IMAGE_EXTENSIONS,
    covid_ct_datalist,
    covid_ct_datalists,
    covidx_datalist,
    cxr_datalist,
    image_folder_datalist,
    natural_image_classes,
    natural_image_datalist,
    split_datalist,
    unlabelled_datalist,
)
from .subsets import label_fraction_subset
from .phantom import PHANTOM_LABELS, make_lung_phantom, write_phantom_dataset
from .series import dicom_series_to_nifti, read_dicom_series_hu
from .skipping import SkippingDataset, publish_skipped
from .sstl import sstl_datalist
from .utils import check_datalist, collect_files, require_file

__all__ = [
    "SkippingDataset",
    "publish_skipped",
    "label_fraction_subset",
    "COVID_CT_CLASSES",
    "CXR_CLASSES",
    "IMAGE_EXTENSIONS",
    "PHANTOM_LABELS",
    "check_datalist",
    "collect_files",
    "covid_ct_datalist",
    "covid_ct_datalists",
    "covidx_datalist",
    "dicom_series_to_nifti",
    "cxr_datalist",
    "image_folder_datalist",
    "make_lung_phantom",
    "meta_safe_collate",
    "natural_image_classes",
    "require_file",
    "natural_image_datalist",
    "read_dicom_series_hu",
    "split_datalist",
    "sstl_datalist",
    "unlabelled_datalist",
    "write_phantom_dataset",
]
