# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Datalist builders for the pipeline's data sets, a synthetic lung-CT phantom, and a DICOM series -> NIfTI converter."""

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
from .phantom import PHANTOM_LABELS, make_lung_phantom, write_phantom_dataset
from .series import dicom_series_to_nifti, read_dicom_series_hu

__all__ = [
    "COVID_CT_CLASSES",
    "CXR_CLASSES",
    "IMAGE_EXTENSIONS",
    "PHANTOM_LABELS",
    "covid_ct_datalist",
    "covid_ct_datalists",
    "covidx_datalist",
    "dicom_series_to_nifti",
    "cxr_datalist",
    "image_folder_datalist",
    "make_lung_phantom",
    "meta_safe_collate",
    "natural_image_classes",
    "natural_image_datalist",
    "read_dicom_series_hu",
    "split_datalist",
    "unlabelled_datalist",
    "write_phantom_dataset",
]
