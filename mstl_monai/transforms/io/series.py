# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Loading of a whole CT scan (a folder of DICOM files of one series, or a NIfTI volume) as a stack of axial slices."""

from __future__ import annotations

import logging
import math
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
from .dicom_folder import (
    DicomFolder,
    check_series_tags,
    dicom_series_headers,
    name_list,
    read_dicom_folder,
    reorient,
    series_geometry,
)
from .functional import DEFAULT_LUNG_WINDOW, canonical_axial, lung_window

__all__ = ["LoadCTSeries", "LoadCTSeriesd", "LoadCTSeriesD", "LoadCTSeriesDict", "dicom_series_headers", "find_gaps"]

logger = logging.getLogger(__name__)

#: a step between neighbouring slices larger than this multiple of the median step is a gap (missing slices)
GAP_FACTOR = 1.5


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
      file. Several series in one folder (``SeriesInstanceUID``) are an error listing them, unless ``series_uid``
      picks one. Nothing is left out unnamed (:mod:`.dicom_folder`): unreadable files (0 bytes, random bytes, a
      header cut short or without pixel data) are left out and named with their reason, wherever they sit;
      sub-folders, NIfTI volumes and other files beside the slices are listed as skipped. Where some files lack
      geometry, one rule holds for all slices: every slice gets the series' in-plane orientation (as stored when
      no file has ``ImageOrientationPatient``), and when a file has no ``ImagePositionPatient`` all slices are
      ordered by ``InstanceNumber`` with no positions (NaN; duplicate numbers are an error). A ``Modality`` other
      than CT is an error unless ``allow_non_ct``; several ``PatientID`` in one series are reported;
    - a NIfTI volume (``.nii``/``.nii.gz``): reoriented to RAS from its affine (nibabel's ``as_closest_canonical``;
      the axial slices are then the last axis, inferior -> superior), each slice put in the same orientation as
      the DICOM path (:func:`~mstl_monai.transforms.io.functional.canonical_axial`) and lung-windowed.

    Slices are ordered inferior -> superior (increasing position along the normal). The metadata holds
    ``slice_positions`` (mm along the normal; for an axial scan the patient z; NaN when ordered by
    InstanceNumber), ``position_source`` (``"ImagePositionPatient"``, ``"InstanceNumber"`` or ``"affine"``),
    ``slice_sources`` (the DICOM file or ``volume.nii.gz#k``), ``slice_spacing`` (median step, mm), ``pixel_spacing``,
    ``gaps`` (missing slices: a step over 1.5 x the median, of positions or of InstanceNumbers; logged as a
    warning), ``notes`` (every fallback and file left out, each also logged as a warning), ``unreadable_files``
    and ``skipped_files`` (``[(path, reason)]``), ``series_uid``, ``source_format`` (``"dicom-series"`` or
    ``"nifti"``), ``hu_window`` and ``hu_range``.

    Args:
        a_min: lower end of the lung window in HU.
        a_max: upper end of the lung window in HU.
        series_uid: the ``SeriesInstanceUID`` to read when a folder holds several series.
        hu: for NIfTI volumes, whether the values are HU (``None``: yes when the minimum is below -500).
        dtype: output dtype.
        allow_non_ct: read a DICOM series whose ``Modality`` is not CT (reported in ``notes``).

    Raises:
        ValueError: a folder without readable DICOM image files, several series without ``series_uid`` (or an
            unknown one), a Modality other than CT (without ``allow_non_ct``), slices of different sizes or
            orientations, several slices at one position, no position and no or duplicate InstanceNumbers;
            every message names the folder or file.

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
        allow_non_ct: bool = False,
    ) -> None:
        self.slice_loader = LoadCTSlice(a_min=a_min, a_max=a_max, dtype=torch.float32)
        self.a_min, self.a_max = float(a_min), float(a_max)
        self.series_uid = series_uid
        self.hu = hu
        self.dtype = dtype
        if not isinstance(allow_non_ct, (bool, np.bool_)):
            raise TypeError(f"allow_non_ct must be true or false, got {allow_non_ct!r}.")
        self.allow_non_ct = bool(allow_non_ct)

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
        if meta["position_source"] == "InstanceNumber":  # no positions: gaps in the numbering
            _, gaps = find_gaps(np.asarray(meta["instance_numbers"], dtype=float))
            step = math.nan
            gaps = [
                {"after_index": g["after_index"], "instance_before": int(g["z_before"]),
                 "instance_after": int(g["z_after"]), "missing": g["missing"]}
                for g in gaps
            ]
            where = ", ".join(f"{g['missing']} between InstanceNumber {g['instance_before']} and {g['instance_after']}"
                              for g in gaps)
        else:
            step, gaps = find_gaps(np.asarray(meta["slice_positions"]))
            where = ", ".join(f"{g['missing']} between z={g['z_before']:.1f} and z={g['z_after']:.1f} mm" for g in gaps)
            where += f"; usual step {step:.2f} mm"
        if gaps:
            logger.warning(f"CT scan {path!r}: missing slices ({where}).")
        meta.setdefault("notes", [])
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
    def _pick_series(self, found: DicomFolder) -> tuple[str, list[tuple[str, Any]]]:
        series, folder = found.series, found.folder
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
        found = read_dicom_folder(folder)
        uid, items = self._pick_series(found)
        notes = check_series_tags(items, folder, uid, self.allow_non_ct)
        unreadable = list(found.unreadable)
        read = []  # (path, header, slice) of the files whose pixels could be read
        for path, ds in items:
            try:
                read.append((path, ds, self.slice_loader(path)))
            except ValueError as e:  # cut short, no pixel data, a colour picture...: named, like unreadable headers
                unreadable.append((path, _reason(e, path)))
        unreadable.sort()
        if not read:
            raise ValueError(
                f"CT series {uid!r} in {folder!r}: none of its {len(items)} files could be read: "
                + "; ".join(f"{os.path.basename(p)} ({r})" for p, r in unreadable[:10])
            )
        geo = series_geometry([(p, ds) for p, ds, _ in read], folder)
        slices, hu_lo, hu_hi, shape = [], np.inf, -np.inf, None
        for i in geo.order:
            path, _, img = read[i]
            arr = img.as_tensor()[0].numpy()
            done = list(img.meta.get("orientation_ops") or [])
            if done != geo.orientation_ops:  # its own geometry missing: the reader fell back to another orientation
                arr = reorient(arr, done, geo.orientation_ops)
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise ValueError(
                    f"DICOM file {path!r} has a slice of shape {arr.shape}, the series {uid!r} in {folder!r} has {shape}."
                )
            lo, hi = img.meta.get("hu_range", (np.nan, np.nan))
            hu_lo, hu_hi = min(hu_lo, float(lo)), max(hu_hi, float(hi))
            slices.append(arr)
        if unreadable:
            for path, reason in unreadable:
                logger.warning(f"CT scan {folder!r}: unreadable file {path!r} left out: {reason}")
            listed = "; ".join(f"{os.path.basename(p)} ({r})" for p, r in unreadable[:10])
            more = f"; ... ({len(unreadable) - 10} more, see the log)" if len(unreadable) > 10 else ""
            notes.insert(0, f"{len(unreadable)} unreadable, left out: {listed}{more}")
        notes += geo.notes
        if found.skipped:
            notes.append("skipped: " + "; ".join(f"{name_list([p])}{'/' if p.endswith(os.sep) else ''} ({r})"
                                                 for p, r in found.skipped))
        for note in notes[1 if unreadable else 0 :]:
            logger.warning(f"CT scan {folder!r}: {note}")
        ds0 = read[geo.order[0]][1]
        meta = {
            "source_format": "dicom-series",
            "series_uid": uid,
            "slice_positions": geo.positions,
            "slice_sources": [read[i][0] for i in geo.order],
            "instance_numbers": geo.instance_numbers,
            "position_source": geo.source,
            "pixel_spacing": [float(v) for v in ds0.get("PixelSpacing", [1.0, 1.0])],
            "orientation_ops": geo.orientation_ops,
            "hu_range": (hu_lo, hu_hi),
            "notes": notes,
            "unreadable_files": unreadable,
            "skipped_files": list(found.skipped),
        }
        return np.stack(slices)[:, None], meta

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


def _reason(error: BaseException, path: str) -> str:
    """A slice loader's message about ``path`` without the path (it is named beside the reason)."""
    msg = str(error).replace(f"DICOM file {path!r} is ", "").replace(f"DICOM file {path!r} ", "")
    return msg.replace(repr(path), "the file").rstrip(".")


def _describe(series: Mapping[str, list]) -> str:
    parts = []
    for uid, items in series.items():
        desc = str(items[0][1].get("SeriesDescription", "")).strip()
        parts.append(f"{uid} ({len(items)} files{', ' + desc if desc else ''})")
    return "; ".join(parts)


class LoadCTSeriesd(MapTransform):
    """Dictionary wrapper of :class:`LoadCTSeries`: replaces the path under each key by the (N, 1, H, W) stack.

    Args:
        keys: keys holding a DICOM series folder or a NIfTI file.
        a_min: lower end of the lung window in HU.
        a_max: upper end of the lung window in HU.
        series_uid: the series to read when a folder holds several.
        hu: NIfTI values are HU (``None``: guess).
        dtype: output dtype.
        allow_non_ct: read DICOM series whose Modality is not CT.
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
        allow_non_ct: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadCTSeries(a_min=a_min, a_max=a_max, series_uid=series_uid, hu=hu, dtype=dtype,
                                   allow_non_ct=allow_non_ct)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


LoadCTSeriesD = LoadCTSeriesDict = LoadCTSeriesd
