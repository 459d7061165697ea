# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Loading of a whole CT scan (a folder of DICOM files of one series, or a NIfTI volume) as a stack of axial slices."""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, PathLike
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from monai.utils import TransformBackends

from .array import LoadCTSlice
from .functional import DEFAULT_LUNG_WINDOW, canonical_axial, lung_window, sniff_ct_format

__all__ = ["LoadCTSeries", "LoadCTSeriesd", "LoadCTSeriesD", "LoadCTSeriesDict", "dicom_series_headers", "find_gaps"]

logger = logging.getLogger(__name__)

#: a step between neighbouring slices larger than this multiple of the median step is a gap (missing slices)
GAP_FACTOR = 1.5


def _is_dicom_file(path: str) -> bool:
    try:
        return sniff_ct_format(path) == "dicom"
    except (ValueError, FileNotFoundError):
        return False


def dicom_series_headers(folder: PathLike) -> dict[str, list[tuple[str, Any]]]:
    """Read the headers (no pixel data) of the DICOM image files in ``folder`` and group them by series.

    Files that are not DICOM (by their first bytes or their extension) and DICOM files without pixel data
    (a ``DICOMDIR``, a structured report) are passed over.

    Args:
        folder: a folder (not searched recursively).

    Returns:
        ``{SeriesInstanceUID: [(path, dataset), ...]}`` in file-name order.

    Raises:
        ValueError: ``folder`` is not a folder or holds no DICOM image file (the message names it).
    """
    import pydicom

    folder = str(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"CT series folder {folder!r} does not exist or is not a folder.")
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))
    series: dict[str, list[tuple[str, Any]]] = {}
    for n in names:
        path = os.path.join(folder, n)
        if not _is_dicom_file(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        except Exception as e:  # pydicom raises InvalidDicomError, EOFError, struct.error, ...
            raise ValueError(f"cannot read the DICOM header of {path!r} (truncated or corrupt?): {e}") from e
        if "Rows" not in ds or "Columns" not in ds:  # no image (DICOMDIR, SR, ...)
            continue
        series.setdefault(str(ds.get("SeriesInstanceUID", "<no SeriesInstanceUID>")), []).append((path, ds))
    if not series:
        raise ValueError(f"CT series folder {folder!r} holds no DICOM image files ({len(names)} files looked at).")
    return series


def find_gaps(positions: np.ndarray, factor: float = GAP_FACTOR) -> tuple[float, list[dict[str, Any]]]:
    """The median step between sorted slice positions and the gaps in them.

    Returns:
        ``(step, gaps)``: the median step (mm; 0 for a single slice) and one dict per gap
        ``{"after_index", "z_before", "z_after", "missing"}`` where a step exceeds ``factor`` times the median.
    """
    pos = np.asarray(positions, dtype=float)
    if len(pos) < 2:
        return 0.0, []
    steps = np.diff(pos)
    step = float(np.median(steps))
    gaps = []
    if step > 0:
        for i in np.nonzero(steps > factor * step)[0].tolist():
            missing = int(round(steps[i] / step)) - 1
            gaps.append({"after_index": i, "z_before": float(pos[i]), "z_after": float(pos[i + 1]), "missing": missing})
    return step, gaps


class LoadCTSeries(Transform):
    """Load a whole CT scan as a stack of axial slices: a :class:`~monai.data.MetaTensor` (N, 1, H, W) in [0, 1].

    Reads

    - a folder of DICOM files of one series: the files are sorted by their ``ImagePositionPatient`` projected on
      the slice normal (the cross product of the two ``ImageOrientationPatient`` directions), not by file name;
      each slice is read by :class:`LoadCTSlice` (Hounsfield units from the rescale tags, lung window,
      radiological orientation), so a slice of the stack is exactly what the single-slice loader gives for that
      file. Files that are not DICOM are passed over. Several series in one folder (``SeriesInstanceUID``) are an
      error listing them, unless ``series_uid`` picks one;
    - a NIfTI volume (``.nii``/``.nii.gz``): reoriented to RAS from its affine (nibabel's ``as_closest_canonical``;
      the axial slices are then the last axis, inferior -> superior), each slice put in the same orientation as
      the DICOM path (:func:`~mstl_monai.transforms.io.functional.canonical_axial`) and lung-windowed.

    Slices are ordered inferior -> superior (increasing position along the normal). The metadata holds
    ``slice_positions`` (mm along the normal; for an axial scan the patient z), ``slice_sources`` (the DICOM file
    or ``volume.nii.gz#k``), ``slice_spacing`` (median step, mm), ``pixel_spacing``, ``gaps`` (missing slices:
    a step over 1.5 x the median; logged as a warning), ``series_uid``, ``source_format`` (``"dicom-series"`` or
    ``"nifti"``), ``hu_window`` and ``hu_range``.

    Args:
        a_min: lower end of the lung window in HU.
        a_max: upper end of the lung window in HU.
        series_uid: the ``SeriesInstanceUID`` to read when a folder holds several series.
        hu: for NIfTI volumes, whether the values are HU (``None``: yes when the minimum is below -500).
        dtype: output dtype.

    Raises:
        ValueError: a folder without DICOM image files, several series without ``series_uid`` (or an unknown
            one), slices of different sizes or orientations, a file that cannot be read; every message names
            the folder or file.

    .. code-block:: python

        stack = LoadCTSeries()("ct-series/lung-pet-ct-dx-A0002")  # (30, 1, 512, 512)
        stack.meta["slice_positions"][:2]  # [80.0, 88.0]
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        a_min: float = DEFAULT_LUNG_WINDOW[0],
        a_max: float = DEFAULT_LUNG_WINDOW[1],
        series_uid: str | None = None,
        hu: bool | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
    ) -> None:
        self.slice_loader = LoadCTSlice(a_min=a_min, a_max=a_max, dtype=torch.float32)
        self.a_min, self.a_max = float(a_min), float(a_max)
        self.series_uid = series_uid
        self.hu = hu
        self.dtype = dtype

    def __call__(self, path: PathLike) -> MetaTensor:
        """Load the scan at ``path`` (a DICOM series folder or a NIfTI file); see the class docstring."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"LoadCTSeries expects a folder or file path, got {type(path).__name__}.")
        path = str(path)
        if os.path.isdir(path):
            stack, meta = self._load_dicom_series(path)
        elif os.path.isfile(path) and path.lower().endswith((".nii", ".nii.gz")):
            stack, meta = self._load_nifti(path)
        elif os.path.isfile(path):
            raise ValueError(f"CT scan {path!r} is neither a folder of DICOM files nor a NIfTI volume (.nii/.nii.gz).")
        else:
            raise ValueError(f"CT scan {path!r} does not exist.")
        step, gaps = find_gaps(np.asarray(meta["slice_positions"]))
        if gaps:
            where = ", ".join(f"{g['missing']} between z={g['z_before']:.1f} and z={g['z_after']:.1f} mm" for g in gaps)
            logger.warning(f"CT scan {path!r}: missing slices ({where}; usual step {step:.2f} mm).")
        meta.update(
            {
                "filename_or_obj": path,
                "slice_spacing": step,
                "gaps": gaps,
                "n_slices": int(stack.shape[0]),
                "hu_window": (self.a_min, self.a_max),
            }
        )
        return MetaTensor(torch.as_tensor(stack).to(self.dtype), meta=meta)

    # -- DICOM -----------------------------------------------------------------------------------------------------
    def _pick_series(self, folder: str) -> tuple[str, list[tuple[str, Any]]]:
        series = dicom_series_headers(folder)
        if self.series_uid is not None:
            if self.series_uid not in series:
                raise ValueError(
                    f"CT series folder {folder!r} has no series {self.series_uid!r}; it holds {_describe(series)}."
                )
            return self.series_uid, series[self.series_uid]
        if len(series) > 1:
            raise ValueError(
                f"CT series folder {folder!r} holds {len(series)} series: {_describe(series)}; "
                "pick one with series_uid (bundle setting `series_uid`)."
            )
        uid = next(iter(series))
        return uid, series[uid]

    def _load_dicom_series(self, folder: str) -> tuple[np.ndarray, dict[str, Any]]:
        uid, items = self._pick_series(folder)
        positions, sort_key = _dicom_positions(items, folder)
        order = np.argsort(positions, kind="stable")
        slices, hu_lo, hu_hi, shape, ops = [], np.inf, -np.inf, None, None
        for i in order.tolist():
            path = items[i][0]
            img = self.slice_loader(path)  # raises ValueError naming the file
            if shape is None:
                shape, ops = tuple(img.shape), img.meta.get("orientation_ops")
            elif tuple(img.shape) != shape:
                raise ValueError(
                    f"DICOM file {path!r} has a slice of shape {tuple(img.shape[1:])}, the series {uid!r} in "
                    f"{folder!r} has {shape[1:]}."
                )
            lo, hi = img.meta.get("hu_range", (np.nan, np.nan))
            hu_lo, hu_hi = min(hu_lo, float(lo)), max(hu_hi, float(hi))
            slices.append(img.as_tensor())
        ds0 = items[order[0]][1]
        meta = {
            "source_format": "dicom-series",
            "series_uid": uid,
            "slice_positions": [round(float(positions[i]), 4) for i in order],
            "slice_sources": [items[i][0] for i in order],
            "position_source": sort_key,
            "pixel_spacing": [float(v) for v in ds0.get("PixelSpacing", [1.0, 1.0])],
            "orientation_ops": ops,
            "hu_range": (hu_lo, hu_hi),
        }
        return torch.stack(slices).numpy(), meta

    # -- NIfTI -----------------------------------------------------------------------------------------------------
    def _load_nifti(self, path: str) -> tuple[np.ndarray, dict[str, Any]]:
        # nibabel directly, not MONAI's NibabelReader: the reader turns the whole volume into a C-ordered float
        # array, a strided copy that takes longer than everything else (45 s of 60 for 300 slices of 512 x 512);
        # in NIfTI's own (Fortran) order each axial slice is contiguous
        import nibabel as nib

        try:
            img = nib.load(path)
            while len(img.shape) > 3 and img.shape[-1] == 1:
                img = img.slicer[..., 0]
            if len(img.shape) != 3 or min(img.shape) < 1:
                raise ValueError(f"NIfTI file {path!r} has shape {tuple(img.shape)}, expected one 3D volume.")
            ornt = nib.orientations.io_orientation(img.affine)  # original axis -> (RAS axis, direction)
            img = nib.as_closest_canonical(img)  # RAS+ from the affine: the last axis runs inferior -> superior
            data = np.asanyarray(img.dataobj)
        except ValueError as e:
            if path in str(e):
                raise
            raise ValueError(f"cannot read NIfTI volume {path!r}: {e}") from e
        except Exception as e:  # nibabel raises ImageFileError, EOFError, zlib.error, ...
            raise ValueError(f"cannot read NIfTI volume {path!r} (truncated or corrupt?): {e}") from e
        affine = np.asarray(img.affine, dtype=float)
        lo, hi = float(np.min(data)), float(np.max(data))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ValueError(f"NIfTI volume {path!r} holds non-finite values.")
        is_hu = self.hu if self.hu is not None else bool(lo < -500.0)
        if not is_hu:
            raise ValueError(
                f"NIfTI volume {path!r} does not look like CT in Hounsfield units (minimum {lo:.1f} > -500); "
                "pass hu=True if it is."
            )
        normal = affine[:3, 2] / np.linalg.norm(affine[:3, 2])
        n = data.shape[2]
        # position of each slice's first voxel along the slice normal (mm)
        positions = (affine[:3, :3] @ np.stack([np.zeros(n), np.zeros(n), np.arange(n)]) + affine[:3, 3:4]).T @ normal
        slices, ops = [], None
        for k in range(n):
            arr, ops = canonical_axial(np.asarray(data[:, :, k], dtype=np.float32), affine[:3, 0], affine[:3, 1])
            slices.append(lung_window(arr, self.a_min, self.a_max)[None])
        meta = {
            "source_format": "nifti",
            "series_uid": None,
            "slice_positions": [round(float(p), 4) for p in positions],
            "slice_sources": [f"{path}#{i}" for i in _original_indices(ornt, n)],
            "position_source": "affine",
            "pixel_spacing": [float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 0]))],
            "orientation_ops": ops,
            "hu_range": (lo, hi),
            "original_affine": affine,
        }
        return np.stack(slices), meta


def _original_indices(ornt: np.ndarray, n: int) -> list[str]:
    """Index in the file of each RAS-ordered axial slice (``axis<a>:<i>`` when the file's slice axis is not its last)."""
    ax = int(np.nonzero(ornt[:, 0] == 2)[0][0])
    idx = list(range(n))[::-1] if ornt[ax, 1] < 0 else list(range(n))
    return [str(i) if ax == 2 else f"axis{ax}:{i}" for i in idx]


def _describe(series: Mapping[str, list]) -> str:
    parts = []
    for uid, items in series.items():
        desc = str(items[0][1].get("SeriesDescription", "")).strip()
        parts.append(f"{uid} ({len(items)} files{', ' + desc if desc else ''})")
    return "; ".join(parts)


def _dicom_positions(items: list[tuple[str, Any]], folder: str) -> tuple[np.ndarray, str]:
    """Each file's ``ImagePositionPatient`` projected on the slice normal, or ``InstanceNumber`` when a file lacks
    the position/orientation tags (said in a warning and in ``position_source``)."""
    iops = [ds.get("ImageOrientationPatient") for _, ds in items]
    ipps = [ds.get("ImagePositionPatient") for _, ds in items]
    if all(v is not None and len(v) == 6 for v in iops) and all(v is not None and len(v) == 3 for v in ipps):
        iop = np.asarray([[float(x) for x in v] for v in iops])
        if not np.allclose(iop, iop[0], atol=1e-3):
            bad = items[int(np.abs(iop - iop[0]).max(axis=1).argmax())][0]
            raise ValueError(f"DICOM file {bad!r} has another ImageOrientationPatient than the rest of its series in {folder!r}.")
        normal = np.cross(iop[0, :3], iop[0, 3:])
        normal = normal / max(np.linalg.norm(normal), 1e-12)
        if abs(normal[2]) < 0.5:
            logger.warning(f"CT series in {folder!r} is not axial (slice normal {normal.round(3).tolist()}).")
        if normal[2] < 0:  # count along the patient's inferior -> superior axis
            normal = -normal
        pos = np.asarray([[float(x) for x in v] for v in ipps]) @ normal
        if len(pos) > 1 and len(np.unique(pos.round(3))) < len(pos):
            dup = [items[i][0] for i in range(len(pos)) if np.sum(np.isclose(pos, pos[i], atol=1e-3)) > 1]
            raise ValueError(f"CT series in {folder!r} has several slices at the same position: {dup[:4]}.")
        return pos, "ImagePositionPatient"
    missing = next(p for (p, _), a, b in zip(items, iops, ipps) if a is None or b is None)
    if any(ds.get("InstanceNumber") is None for _, ds in items):
        raise ValueError(
            f"DICOM file {missing!r} has no ImagePositionPatient/ImageOrientationPatient and the series in {folder!r} "
            "has no InstanceNumber either: the slice order is unknown."
        )
    logger.warning(f"DICOM file {missing!r} has no ImagePositionPatient: slices of {folder!r} ordered by InstanceNumber.")
    return np.asarray([float(ds.InstanceNumber) for _, ds in items]), "InstanceNumber"


class LoadCTSeriesd(MapTransform):
    """Dictionary wrapper of :class:`LoadCTSeries`: replaces the path under each key by the (N, 1, H, W) stack.

    Args:
        keys: keys holding a DICOM series folder or a NIfTI file.
        a_min: lower end of the lung window in HU.
        a_max: upper end of the lung window in HU.
        series_uid: the series to read when a folder holds several.
        hu: NIfTI values are HU (``None``: guess).
        dtype: output dtype.
        allow_missing_keys: do not raise if a key is missing.

    .. code-block:: python

        d = LoadCTSeriesd(keys="image")({"image": "scan.nii.gz"})  # d["image"]: MetaTensor (N, 1, H, W)
    """

    backend = LoadCTSeries.backend

    def __init__(
        self,
        keys: KeysCollection,
        a_min: float = DEFAULT_LUNG_WINDOW[0],
        a_max: float = DEFAULT_LUNG_WINDOW[1],
        series_uid: str | None = None,
        hu: bool | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCTSeries(a_min=a_min, a_max=a_max, series_uid=series_uid, hu=hu, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


LoadCTSeriesD = LoadCTSeriesDict = LoadCTSeriesd
