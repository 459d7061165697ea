# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""A DICOM series as a NIfTI volume, written with pydicom, numpy and nibabel only.

A plain converter for an axial series of one ``SeriesInstanceUID``: slices sorted by the z of
``ImagePositionPatient``, HU from the rescale tags, the affine from ``ImageOrientationPatient``, ``PixelSpacing`` and
the slice step, turned from DICOM's LPS to NIfTI's RAS. It shares no code with
:class:`~mstl_monai.transforms.LoadCTSeries`, so the tests use it to check that reader, and the scan benchmark to
make its volumes.

.. code-block:: python

    dicom_series_to_nifti("ct-series/lung-pet-ct-dx-A0002", "a0002.nii.gz")
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["dicom_series_to_nifti", "read_dicom_series_hu"]


def read_dicom_series_hu(folder: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """The HU volume ``(columns, rows, slices)`` of the ``*.dcm`` files in ``folder`` (float32) and its RAS affine.

    Raises:
        FileNotFoundError: ``folder`` holds fewer than two ``.dcm`` files (the message names it).
    """
    import pydicom

    files = sorted(n for n in os.listdir(folder) if n.lower().endswith(".dcm"))
    if len(files) < 2:
        raise FileNotFoundError(f"{os.fspath(folder)} holds {len(files)} .dcm file(s); a series needs at least two.")
    dss = [pydicom.dcmread(os.path.join(folder, n)) for n in files]
    dss.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss], -1)
    vol = vol.transpose(1, 0, 2)  # (rows, cols, slices) -> (cols = i, rows = j, slices = k)
    d0 = dss[0]
    iop = np.asarray(d0.ImageOrientationPatient, dtype=float)
    dr, dc = (float(v) for v in d0.PixelSpacing)
    step = float(dss[1].ImagePositionPatient[2]) - float(d0.ImagePositionPatient[2])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * dc, iop[3:] * dr
    lps[:3, 2] = np.cross(iop[:3], iop[3:]) * step
    lps[:3, 3] = np.asarray(d0.ImagePositionPatient, dtype=float)
    return vol, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def dicom_series_to_nifti(folder: str | os.PathLike, path: str | os.PathLike, dtype: type = np.int16) -> Path:
    """Write the DICOM series in ``folder`` (see :func:`read_dicom_series_hu`) as a NIfTI volume in HU at ``path``."""
    import nibabel as nib

    vol, affine = read_dicom_series_hu(folder)
    path = Path(path)
    nib.save(nib.Nifti1Image(vol.astype(dtype), affine), str(path))
    return path
