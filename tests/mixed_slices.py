"""A folder of valid CT slices of every kind the loader reads, made from the real data (for inference tests)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from PIL import Image

from mstl_monai.data import covid_ct_datalist


def make_mixed_slices(folder: Path, data_root: Path) -> dict[str, Path]:
    """Write real slices of different kinds into ``folder`` and return ``{kind: path}``.

    Kinds: two COVID19-CT PNGs, a real CT DICOM, a copy of the other DICOM slice stored flipped
    (``ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]``), a 2D NIfTI slice and a 3D NIfTI volume in HU (made from
    the DICOM's pixels with nibabel), and an all-black PNG (no lung in it).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Path] = {}
    pngs = [d["image"] for d in covid_ct_datalist(data_root / "covid-ct", "test")[:2]]
    for i, p in enumerate(pngs):
        out[f"png{i}"] = Path(shutil.copy(p, folder / f"png{i}.png"))
    dicoms = data_root / "dicom" / "lungmask"
    out["dicom"] = Path(shutil.copy(dicoms / "0.dcm", folder / "ct.dcm"))
    ds = pydicom.dcmread(dicoms / "1.dcm")
    ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
    out["dicom_flipped"] = folder / "ct_flipped.dcm"
    ds.save_as(out["dicom_flipped"])
    hu = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    out["nifti_slice"] = folder / "slice.nii.gz"
    nib.save(nib.Nifti1Image(hu.T, np.eye(4)), out["nifti_slice"])
    out["nifti_volume"] = folder / "volume.nii.gz"
    nib.save(nib.Nifti1Image(np.stack([hu.T] * 3, axis=-1), np.eye(4)), out["nifti_volume"])
    out["black"] = folder / "black.png"
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(out["black"])
    return out
