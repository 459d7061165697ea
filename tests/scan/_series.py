"""Synthetic CT series (DICOM written from scratch with pydicom), modified copies of the real series, and broken
files to put beside them; a series as NIfTI: mstl_monai.data.dicom_series_to_nifti."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def phantom_hu(size: int = 64, lung_scale: float = 1.0) -> np.ndarray:
    """An axial chest phantom in HU (rows, cols): air -1000, body 40, two lungs -850 scaled by ``lung_scale``
    (0: no lung), the left lung (image right) a little larger so that a left/right flip is visible."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.full((size, size), -1000.0)
    img[((xx - 0.5) / 0.42) ** 2 + ((yy - 0.5) / 0.34) ** 2 <= 1] = 40.0
    if lung_scale > 0:
        for cx, rx in ((0.33, 0.11), (0.67, 0.13)):
            inside = ((xx - cx) / (rx * lung_scale)) ** 2 + ((yy - 0.5) / (0.22 * lung_scale)) ** 2 <= 1
            img[inside] = -850.0
    img[int(size * 0.2), int(size * 0.5)] = 400.0  # a bright dot in front: marks anterior
    return img


#: the real 30-slice series under the data root (slice files 1-01.dcm .. 1-30.dcm, z = 312 .. 80 mm)
REAL_SERIES = "ct-series/lung-pet-ct-dx-A0002"


def write_slice(
    path: str | os.PathLike, hu: np.ndarray, z: float, series_uid: str, instance: int, spacing: float = 5.0,
    modality: str = "CT", patient_id: str = "PHANTOM",
) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientID = patient_id
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.3.4"
    ds.SeriesDescription = f"phantom {series_uid[-6:]}"
    ds.InstanceNumber = instance
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = 5.0
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-100.0, -120.0, float(z)]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.PixelData = np.clip(np.round(hu + 1024), 0, 65535).astype(np.uint16).tobytes()
    try:  # pydicom 3
        ds.save_as(str(path), enforce_file_format=True)
    except TypeError:  # pydicom 2 (the MONAI Label environment pins pydicom<3)
        ds.save_as(str(path), write_like_original=False)


def lung_profile(n: int) -> np.ndarray:
    """Lung scale per slice: none in the first and last two slices, full in the middle."""
    t = np.linspace(-1, 1, n)
    s = np.clip(1.2 * (1 - t**2), 0, 1)
    s[:2] = s[-2:] = 0.0
    return s


def write_series(
    folder: str | os.PathLike, zs, series_uid: str | None = None, names=None, size: int = 64, constant: float | None = None,
    **tags,
) -> str:
    """Write one slice per z into ``folder`` (file names ``names`` or ``s<i>.dcm``; ``tags``: ``modality``,
    ``patient_id`` for every slice); returns the series UID."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    uid = series_uid or generate_uid()
    scales = lung_profile(len(zs))
    for i, z in enumerate(zs):
        hu = np.full((size, size), constant) if constant is not None else phantom_hu(size, scales[i])
        write_slice(folder / (names[i] if names else f"s{i:03d}.dcm"), hu, z, uid, i + 1, **tags)
    return uid


def copy_series(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Copy the series folder ``src`` (e.g. the real one) to ``dst``, to be modified there."""
    shutil.copytree(src, dst)
    return Path(dst)


def edit_slice(path: str | os.PathLike, delete: tuple[str, ...] = (), **tags) -> Path:
    """Rewrite the DICOM file ``path`` without the tags ``delete`` and with the values ``tags`` (keyword names)."""
    ds = pydicom.dcmread(str(path))
    for name in delete:
        delattr(ds, name)
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.save_as(str(path))
    return Path(path)


def broken_dicom(path: str | os.PathLike, kind: str, like: str | os.PathLike | None = None) -> Path:
    """Write an unreadable ``.dcm`` at ``path``: ``"empty"`` (0 bytes), ``"random"`` (random bytes), ``"truncated"``
    (the first 400 bytes of the DICOM file ``like``: its header cut before Rows/Columns), ``"header"`` (``like``'s
    bytes up to its pixel data: a header-only file) or ``"no_pixels"`` (``like``'s dataset without PixelData)."""
    path = Path(path)
    raw = Path(like).read_bytes() if like is not None else b""
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    elif kind == "truncated":
        path.write_bytes(raw[:400])
    elif kind == "header":
        path.write_bytes(raw[: raw.rindex(b"\xe0\x7f\x10\x00")])  # (7FE0,0010) PixelData, little endian
    elif kind == "no_pixels":
        ds = pydicom.dcmread(str(like))
        del ds.PixelData
        ds.save_as(str(path))
    else:
        raise ValueError(f"unknown kind {kind!r}")
    return path
