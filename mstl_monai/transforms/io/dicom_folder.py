# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The files of a DICOM series folder and the geometry of a series, for :class:`~.series.LoadCTSeries`.

Every entry of the folder is accounted for: a slice of a series, an unreadable file (named with its reason), or
something skipped (a sub-folder, a NIfTI volume, a file that is not DICOM, a DICOM object without an image). The
geometry of a series is one for all its slices: one in-plane orientation, and one rule for the slice order
(``ImagePositionPatient`` when every slice has it, else ``InstanceNumber`` for all, without positions).
"""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from monai.config import PathLike

from .functional import canonical_axial, sniff_ct_format

__all__ = [
    "DicomFolder",
    "SeriesGeometry",
    "check_series_tags",
    "dicom_series_headers",
    "name_list",
    "read_dicom_folder",
    "reorient",
    "series_geometry",
]

logger = logging.getLogger(__name__)

#: how many file names a message lists before it says how many more there are
MAX_NAMES = 10
#: values longer than this (bytes; the pixel data) are not read with a header: pydicom reads them from their place
#: in the file when they are used (after checking that the file has not changed), so a slice's file is parsed once
DEFER_SIZE = 1 << 16


def name_list(paths: Sequence[str], limit: int = MAX_NAMES) -> str:
    """``"a.dcm, b.dcm"``: the base names of ``paths``, the first ``limit`` and then ``"... (k more)"``."""
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _which(paths: Sequence[str], n: int) -> str:
    """``"a.dcm, b.dcm (2 of 30 files)"``, or ``"all 30 files"``."""
    return f"all {n} files" if len(paths) == n and n > 1 else f"{name_list(paths)} ({len(paths)} of {n} files)"


def _is_dicom_file(path: str) -> bool:
    try:
        return sniff_ct_format(path) == "dicom"
    except (ValueError, FileNotFoundError):
        return False


@dataclass
class DicomFolder:
    """What a folder holds: ``series`` (``{SeriesInstanceUID: [(path, header), ...]}`` in file-name order),
    ``unreadable`` (``[(path, reason)]``: files that should be DICOM images and cannot be read) and ``skipped``
    (``[(path, reason)]``: sub-folders and files that are not DICOM images)."""

    folder: str
    series: dict[str, list[tuple[str, Any]]] = field(default_factory=dict)
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def _sop_name(ds: Any) -> str:
    sop = ds.get("SOPClassUID", None)
    if sop is None and getattr(ds, "file_meta", None) is not None:
        sop = ds.file_meta.get("MediaStorageSOPClassUID", None)
    return "" if sop is None else str(getattr(sop, "name", sop))


def _classify(path: str) -> tuple[str, Any]:
    """``("image", header)``, ``("unreadable", reason)`` or ``("skipped", reason)`` for one file."""
    import pydicom

    try:
        fmt = sniff_ct_format(path)
    except FileNotFoundError:
        return "skipped", "not a regular file"
    except ValueError:
        return ("unreadable", "empty (0 bytes)") if os.path.getsize(path) == 0 else ("skipped", "not DICOM")
    if fmt == "nifti":
        return "skipped", "NIfTI volume: give it as an input of its own"
    if fmt != "dicom":
        return "skipped", f"{fmt} image, not DICOM"
    try:
        ds = pydicom.dcmread(path, defer_size=DEFER_SIZE, force=True)
    except Exception as e:  # pydicom raises InvalidDicomError, EOFError, struct.error, ...
        return "unreadable", f"not a DICOM image: cannot read its header: {e}"
    if "Rows" in ds and "Columns" in ds:
        return "image", ds
    sop = _sop_name(ds)
    if sop and "Image Storage" not in sop:  # a DICOMDIR, a structured report, ...: no image to read
        return "skipped", f"DICOM without an image: {sop}"
    return "unreadable", f"not a DICOM image: its{' ' + sop if sop else ''} header has no Rows/Columns (corrupt or cut short)"


def read_dicom_folder(folder: PathLike) -> DicomFolder:
    """Read the headers of the files in ``folder`` (not searched recursively; values over :data:`DEFER_SIZE` bytes,
    i.e. the pixel data, are deferred: read from the file when used) and sort every entry into a series, the
    unreadable files or the skipped ones.

    Raises:
        ValueError: ``folder`` is not a folder or holds no DICOM image file (the message names it and lists the
            unreadable files).
    """
    folder = str(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"CT series folder {folder!r} does not exist or is not a folder.")
    found = DicomFolder(folder)
    names = sorted(os.listdir(folder))
    for n in names:
        path = os.path.join(folder, n)
        if os.path.isdir(path):
            found.skipped.append((path + os.sep, "sub-folder, not searched"))
            continue
        kind, what = _classify(path)
        if kind == "image":
            found.series.setdefault(str(what.get("SeriesInstanceUID", "<no SeriesInstanceUID>")), []).append((path, what))
        else:
            (found.unreadable if kind == "unreadable" else found.skipped).append((path, what))
    if not found.series:
        bad = "; ".join(f"{os.path.basename(p)} ({r})" for p, r in found.unreadable[:MAX_NAMES])
        raise ValueError(
            f"CT series folder {folder!r} holds no DICOM image files ({len(names)} files looked at"
            f"{'; unreadable: ' + bad if bad else ''})."
        )
    return found


def dicom_series_headers(folder: PathLike) -> dict[str, list[tuple[str, Any]]]:
    """The DICOM image headers in ``folder`` grouped by series: ``{SeriesInstanceUID: [(path, dataset), ...]}``
    (see :func:`read_dicom_folder`, which also says what was left out)."""
    return read_dicom_folder(folder).series


def _counted(values: Mapping[str, list[str]], show: int = 3) -> str:
    """``"'MR' (6 files); 'PT' (1 file: x.dcm)"``: each value with its file count, the names when few."""
    parts = []
    for v, paths in sorted(values.items(), key=lambda kv: -len(kv[1])):
        names = f": {name_list(paths)}" if len(paths) <= show else ""
        parts.append(f"{v!r} ({len(paths)} file{'s' if len(paths) > 1 else ''}{names})")
    return "; ".join(parts)


def check_series_tags(items: Sequence[tuple[str, Any]], folder: str, uid: str, allow_non_ct: bool = False) -> list[str]:
    """Check the Modality and PatientID of a series' files; returns the notes to report.

    Raises:
        ValueError: a file's Modality is not CT and ``allow_non_ct`` is not set (the message names the folder,
            the modalities and the setting).
    """
    by_modality: dict[str, list[str]] = {}
    by_patient: dict[str, list[str]] = {}
    for path, ds in items:
        by_modality.setdefault(str(ds.get("Modality", "") or "").strip().upper(), []).append(path)
        if ds.get("PatientID", None) is not None:
            by_patient.setdefault(str(ds.PatientID), []).append(path)
    notes = []
    other = {m: p for m, p in by_modality.items() if m not in ("CT", "")}
    if other and not allow_non_ct:
        raise ValueError(
            f"CT series folder {folder!r}: Modality {_counted(other)}, not CT: not classified; set allow_non_ct: "
            "true (bundle setting) to read it anyway."
        )
    if other:
        notes.append(f"Modality {_counted(other)}, not CT: read because allow_non_ct is set")
    if "" in by_modality:
        notes.append(f"no Modality in {len(by_modality[''])} of {len(items)} files: taken as CT")
    if len(by_patient) > 1:
        notes.append(f"several PatientIDs in series {uid}: {_counted(by_patient)}")
    return notes


def _floats(value: Any, n: int) -> np.ndarray | None:
    """The ``n`` finite numbers of a DICOM multi-value, or None when missing or malformed."""
    try:
        v = np.asarray([float(x) for x in value], dtype=float)
    except (TypeError, ValueError):
        return None
    return v if v.shape == (n,) and np.isfinite(v).all() else None


def orientation_ops(iop: Sequence[float]) -> list[str]:
    """The reorientation (:func:`~.functional.canonical_axial`) of a slice with this ``ImageOrientationPatient``
    as MONAI's PydicomReader reads it (array axis 0 along the column direction, LPS turned to RAS)."""
    iop = np.asarray(iop, dtype=float)
    lps_to_ras = np.array([-1.0, -1.0, 1.0])
    return canonical_axial(np.zeros((2, 2), np.float32), iop[3:] * lps_to_ras, iop[:3] * lps_to_ras)[1]


def reorient(arr: np.ndarray, done: Sequence[str], wanted: Sequence[str]) -> np.ndarray:
    """Undo the :func:`~.functional.canonical_axial` operations ``done`` on a 2D array and apply ``wanted``."""
    ops = {"transpose": lambda a: a.T, "flip-rows": lambda a: a[::-1, :], "flip-cols": lambda a: a[:, ::-1]}
    for op in reversed(list(done)):  # each operation is its own inverse
        arr = ops.get(op, lambda a: a)(arr)
    for op in wanted:
        arr = ops.get(op, lambda a: a)(arr)
    return np.ascontiguousarray(arr)


@dataclass
class SeriesGeometry:
    """One series' geometry: ``order`` (indices of the files in stack order), ``positions`` (mm along the slice
    normal, NaN for all when not every file has a position), ``instance_numbers`` (in stack order), ``source``
    (``"ImagePositionPatient"`` or ``"InstanceNumber"``), ``orientation_ops`` (every slice's reorientation) and
    ``notes`` (the fallbacks used, to report)."""

    order: list[int]
    positions: list[float]
    instance_numbers: list[int | None]
    source: str
    orientation_ops: list[str]
    notes: list[str]


def _orientation(items: Sequence[tuple[str, Any]], folder: str) -> tuple[np.ndarray, list[str]]:
    """The series' ``ImageOrientationPatient`` (the same in every file that has it) and the notes on it."""
    iops = [_floats(ds.get("ImageOrientationPatient", None), 6) for _, ds in items]
    have = [i for i, v in enumerate(iops) if v is not None]
    n = len(items)
    if not have:
        note = (
            f"no ImageOrientationPatient in any of the {n} files: slices taken as stored (rows anterior -> posterior, "
            "image left = patient right assumed)"
        )
        return np.array([1.0, 0, 0, 0, 1.0, 0]), [note]
    iop = iops[have[0]]
    for i in have:
        if not np.allclose(iops[i], iop, atol=1e-3):
            raise ValueError(
                f"DICOM file {items[i][0]!r} has another ImageOrientationPatient than the rest of its series in {folder!r}."
            )
    missing = [items[i][0] for i in range(n) if iops[i] is None]
    notes = []
    if missing:
        notes.append(
            f"no ImageOrientationPatient in {_which(missing, n)}: oriented like the rest of the series"
        )
    return iop, notes


def series_geometry(items: Sequence[tuple[str, Any]], folder: str) -> SeriesGeometry:
    """The geometry of the files ``items`` (``[(path, header)]``) of one series; see :class:`SeriesGeometry`.

    Slices are ordered by ``ImagePositionPatient`` projected on the slice normal (inferior -> superior) when every
    file has it, otherwise all by ``InstanceNumber`` (their positions unknown, NaN). The in-plane orientation is
    the series' ``ImageOrientationPatient``, for the files that lack it too.

    Raises:
        ValueError: files with different orientations, several files at one position, or no position and no
            (or duplicate) InstanceNumbers (the message names the folder and files).
    """
    iop, notes = _orientation(items, folder)
    ops = orientation_ops(iop)
    normal = np.cross(iop[:3], iop[3:])
    normal = normal / max(float(np.linalg.norm(normal)), 1e-12)
    if abs(normal[2]) < 0.5:
        notes.append(f"not axial (slice normal {normal.round(3).tolist()})")
    if normal[2] < 0:  # count along the patient's inferior -> superior axis
        normal = -normal
    n = len(items)
    ipps = [_floats(ds.get("ImagePositionPatient", None), 3) for _, ds in items]
    raw_inst = [ds.get("InstanceNumber", None) for _, ds in items]
    instances = [None if v is None or str(v).strip() == "" else int(v) for v in raw_inst]
    if all(v is not None for v in ipps):
        pos = np.stack(ipps) @ normal
        if n > 1 and len(np.unique(pos.round(3))) < n:
            dup = [items[i][0] for i in range(n) if np.sum(np.isclose(pos, pos[i], atol=1e-3)) > 1]
            raise ValueError(f"CT series in {folder!r} has several slices at the same position: {dup[:4]}.")
        order = np.argsort(pos, kind="stable").tolist()
        positions = [round(float(pos[i]), 4) for i in order]
        return SeriesGeometry(order, positions, [instances[i] for i in order], "ImagePositionPatient", ops, notes)
    missing = [items[i][0] for i in range(n) if ipps[i] is None]
    if any(v is None for v in instances):
        raise ValueError(
            f"DICOM file {missing[0]!r} has no ImagePositionPatient and the series in {folder!r} has no InstanceNumber "
            f"in {name_list([items[i][0] for i in range(n) if instances[i] is None])} either: the slice order is unknown."
        )
    count = Counter(instances)
    dups = {v: [items[i][0] for i in range(n) if instances[i] == v] for v, c in sorted(count.items()) if c > 1}
    if dups:
        what = "; ".join(f"{v} in {' and '.join(os.path.basename(p) for p in ps)}" for v, ps in dups.items())
        raise ValueError(
            f"CT series in {folder!r} has no ImagePositionPatient in {_which(missing, n)} and duplicate InstanceNumbers "
            f"({what}): the slice order is unknown."
        )
    notes.append(
        f"no ImagePositionPatient in {_which(missing, n)}: all slices ordered by InstanceNumber, z_mm not available"
    )
    order = np.argsort(np.asarray(instances), kind="stable").tolist()
    return SeriesGeometry(order, [math.nan] * n, [instances[i] for i in order], "InstanceNumber", ops, notes)
