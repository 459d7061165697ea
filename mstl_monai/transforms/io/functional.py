# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Functional core of CT loading: format sniffing, the lung window, pixel values to [0, 1] or HU, axial reorientation,
and for whole scans the gaps between slices and the axial stack of a NIfTI volume."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from monai.config import PathLike

__all__ = [
    "GAP_FACTOR",
    "find_gaps",
    "nifti_axial_stack",
    "original_indices",
    "read_error_reason",
    "describe_series",
    "ASSUMED_CT_INTERCEPT",
    "CT_SLICE_FORMATS",
    "DEFAULT_LUNG_WINDOW",
    "canonical_axial",
    "dicom_to_hu",
    "dicom_slice_array",
    "lung_window",
    "pil_to_unit",
    "png_sbit",
    "significant_bits",
    "sniff_ct_format",
]

#: default lung window in Hounsfield units (``a_min``, ``a_max``) mapped to [0, 1]
DEFAULT_LUNG_WINDOW = (-1350.0, 150.0)
#: the formats :class:`~.array.LoadCTSlice` reads (the ``source_format`` it writes into the metadata)
CT_SLICE_FORMATS = ("png", "jpeg", "image", "dicom", "nifti")

_PIL_EXTENSIONS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".bmp": "image", ".tif": "image", ".tiff": "image"}
_DICOM_EXTENSIONS = {".dcm", ".dicom", ".ima"}


def sniff_ct_format(path: PathLike) -> str:
    """Return the format of a slice file from its first bytes, falling back to its extension.

    Args:
        path: the file.

    Returns:
        one of :data:`CT_SLICE_FORMATS`.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is empty or its format is not one that :class:`~.array.LoadCTSlice` reads.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"CT slice file {str(p)!r} does not exist (or is not a file).")
    if p.stat().st_size == 0:
        raise ValueError(f"CT slice file {str(p)!r} is empty (0 bytes).")
    with open(p, "rb") as f:
        head = f.read(132)
    name = p.name.lower()
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    suffix = p.suffix.lower()
    if suffix in _DICOM_EXTENSIONS:
        return "dicom"
    if suffix in _PIL_EXTENSIONS:
        return _PIL_EXTENSIONS[suffix]
    raise ValueError(
        f"CT slice file {str(p)!r} is not a PNG/JPEG/DICOM/NIfTI file (unknown signature {head[:8]!r}, "
        f"extension {suffix!r})."
    )


def lung_window(hu: np.ndarray, a_min: float, a_max: float, out: np.ndarray | None = None) -> np.ndarray:
    """Clip Hounsfield units to ``[a_min, a_max]`` and map them linearly to [0, 1] (float32); into ``out`` (a
    float32 array of ``hu``'s shape, which may be ``hu`` itself) when given."""
    if not a_max > a_min:
        raise ValueError(f"lung window needs a_max > a_min, got a_min={a_min}, a_max={a_max}.")
    out = np.subtract(np.asarray(hu, dtype=np.float32), np.float32(a_min), out=out)
    out /= np.float32(a_max - a_min)  # in place: one new array per slice at most
    return np.clip(out, 0.0, 1.0, out=out)


def significant_bits(max_value: int, sbit: int | None = None) -> int:
    """The bits a 16-bit gray image uses, for scaling it to [0, 1] by ``2**bits - 1``.

    The PNG's ``sBIT`` chunk (its ``BitsStored``) when it has one; otherwise the bit length of the largest value
    rounded up to 8, 10, 12, 14 or 16 (12-bit CT data stored in 16 bits is scaled by 4095, not 65535).
    """
    if sbit is not None and 1 <= sbit <= 16 and max_value < 2**sbit:
        return int(sbit)
    n = max(int(max_value), 1).bit_length()
    return next(b for b in (8, 10, 12, 14, 16) if n <= b)


def png_sbit(path: PathLike) -> int | None:
    """The significant bits of a PNG's gray (or colour) samples from its ``sBIT`` chunk; ``None`` without one."""
    with open(path, "rb") as f:
        if f.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        while True:
            head = f.read(8)
            if len(head) < 8:
                return None
            length, kind = int.from_bytes(head[:4], "big"), head[4:]
            if kind in (b"IDAT", b"IEND"):
                return None
            data = f.read(length)
            f.seek(4, os.SEEK_CUR)  # CRC
            if kind == b"sBIT" and data:
                return max(data[:3]) if len(data) in (3, 4) else data[0]


def pil_to_unit(img, path: str, sbit: int | None = None) -> tuple[np.ndarray, str] | tuple[np.ndarray, str, dict]:
    """Convert a PIL image (any common mode) to a float32 (H, W) gray image in [0, 1] (and extra metadata)."""
    mode = img.mode
    if mode == "P" or mode == "PA":
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA" else "RGB")
        mode = img.mode
    arr = np.asarray(img)
    if mode == "1":
        return arr.astype(np.float32), mode
    if arr.ndim == 3:
        if arr.shape[-1] in (3, 4):  # RGB / RGBA / RGBX: luminance of the colour channels, alpha ignored
            rgb = arr[..., :3].astype(np.float32)
            arr = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
            scale = float(np.iinfo(np.asarray(img).dtype).max) if np.asarray(img).dtype.kind in "ui" else 1.0
            return np.clip(arr / scale, 0.0, 1.0).astype(np.float32), mode
        if arr.shape[-1] == 2:  # LA: gray + alpha
            arr = arr[..., 0]
        else:
            raise ValueError(f"CT slice file {path!r} has an unsupported PIL mode {mode!r} with shape {arr.shape}.")
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0, mode
    if arr.dtype.kind in "ui":  # I;16 / I;16B / I (16-bit PNGs open as one of these)
        lo, hi = int(arr.min(initial=0)), int(arr.max(initial=0))
        if lo < 0 or hi > 65535:
            return ((arr.astype(np.float32) - lo) / max(hi - lo, 1.0)).astype(np.float32), mode
        bits = significant_bits(hi, sbit)
        meta = {"bits_stored": bits, "bits_source": "sBIT" if sbit else "max value"}
        return (arr.astype(np.float32) / np.float32(2**bits - 1)).astype(np.float32), mode, meta
    if arr.dtype.kind == "f":  # mode F: keep values already in [0, 1], otherwise min-max
        arr = arr.astype(np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if lo >= 0.0 and hi <= 1.0:
            return arr, mode
        return (arr - lo) / max(hi - lo, 1e-12), mode
    raise ValueError(f"CT slice file {path!r} has an unsupported pixel type {arr.dtype} (PIL mode {mode!r}).")


#: the intercept assumed for a CT DICOM without rescale tags whose stored values are never negative
ASSUMED_CT_INTERCEPT = -1024.0


def _functional_group_rescale(ds, frame: int | None) -> tuple[float, float] | None:
    """RescaleSlope/RescaleIntercept from an enhanced multi-frame DICOM's functional groups, if it has them."""
    groups = []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", None)
    if per_frame is not None and frame is not None and frame < len(per_frame):
        groups.append(per_frame[frame])
    shared = ds.get("SharedFunctionalGroupsSequence", None)
    if shared:
        groups.append(shared[0])
    for g in groups:
        seq = g.get("PixelValueTransformationSequence", None)
        if seq and "RescaleSlope" in seq[0] and "RescaleIntercept" in seq[0]:
            return float(seq[0].RescaleSlope), float(seq[0].RescaleIntercept)
    return None


#: the uncompressed little-endian transfer syntaxes (implicit and explicit VR): the pixel data is the array's bytes
_NATIVE_LITTLE_ENDIAN = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def _native_pixels(ds) -> np.ndarray | None:
    """``ds.pixel_array`` of an uncompressed little-endian single-frame gray slice of 16-bit values (the usual CT
    file), read straight from the pixel data bytes (pydicom's decoder setup costs more than the copy): the same
    array, with the bits above ``BitsStored`` corrected as pydicom does (shifted out and back: zero for unsigned
    values, the sign extended for signed ones). ``None`` for anything else (then ``pixel_array`` is used)."""
    meta = getattr(ds, "file_meta", None)
    if meta is None or str(meta.get("TransferSyntaxUID", "")) not in _NATIVE_LITTLE_ENDIAN:
        return None
    try:
        rows, cols, allocated = int(ds.Rows), int(ds.Columns), int(ds.BitsAllocated)
        stored, signed, samples = int(ds.BitsStored), int(ds.PixelRepresentation), int(ds.get("SamplesPerPixel", 1))
    except (AttributeError, TypeError, ValueError):
        return None
    if allocated != 16 or not 1 <= stored <= 16 or signed not in (0, 1) or samples != 1 or "PixelData" not in ds:
        return None
    raw = ds.PixelData
    if not isinstance(raw, bytes) or len(raw) != rows * cols * 2:  # pydicom's own checks and messages otherwise
        return None
    view = np.frombuffer(raw, dtype="<i2" if signed else "<u2").reshape(rows, cols)
    if stored == 16:
        return view.astype(view.dtype.newbyteorder("="))  # a copy, writeable, as pixel_array's
    if not signed:  # shifting the unused bits out and back (logically) is masking them
        return np.bitwise_and(view, np.uint16((1 << stored) - 1), dtype=np.uint16)
    arr = np.left_shift(view, 16 - stored, dtype=np.int16)
    np.right_shift(arr, 16 - stored, out=arr)  # arithmetic: the sign extended
    return arr


def dicom_slice_array(ds) -> tuple[np.ndarray, np.ndarray] | None:
    """The pixel array and the RAS affine of a single-slice DICOM dataset with its full geometry, as MONAI's
    ``PydicomReader(swap_ij=False, affine_lps_to_ras=True).get_data`` gives them (the same numbers), without its
    metadata dictionary (the whole header converted to JSON, most of the time of reading a slice).

    The array is ``pixel_array``, rescaled with ``RescaleSlope``/``RescaleIntercept`` when the dataset has either
    (16-bit stored values with a small integer slope and intercept, the usual CT: in float32, which holds the
    reader's float64 values exactly; otherwise as the reader computes them); the affine is built from
    ``ImageOrientationPatient``, ``ImagePositionPatient`` and ``PixelSpacing`` (1, 1 without it). ``None`` where the
    reader's general path is needed: no or incomplete orientation or position, a non-finite value in them, several
    frames or a segmentation.
    """
    from monai.data.utils import orientation_ras_lps

    if "SegmentSequence" in ds or int(ds.get("NumberOfFrames", 1) or 1) > 1:
        return None
    try:
        rx, ry, rz, cx, cy, cz = (float(v) for v in ds.ImageOrientationPatient)
        sx, sy, sz = (float(v) for v in ds.ImagePositionPatient)
        dr, dc = (float(v) for v in (ds.PixelSpacing if "PixelSpacing" in ds else (1.0, 1.0)))
    except (AttributeError, TypeError, ValueError):  # missing, empty or of another multiplicity
        return None
    affine = np.eye(4)
    affine[:3, 0] = cx * dr, cy * dr, cz * dr
    affine[:3, 1] = rx * dc, ry * dc, rz * dc
    affine[:3, 3] = sx, sy, sz
    if not np.isfinite(affine).all():
        return None
    data = _native_pixels(ds)
    if data is None:
        data = ds.pixel_array
    if hasattr(ds, "RescaleSlope") or hasattr(ds, "RescaleIntercept"):
        slope = ds.RescaleSlope if hasattr(ds, "RescaleSlope") else 1.0
        offset = ds.RescaleIntercept if hasattr(ds, "RescaleIntercept") else 0.0
        exact = (
            data.dtype.itemsize <= 2
            and data.dtype.kind in "iu"
            and all(isinstance(v, (int, float)) and float(v).is_integer() for v in (slope, offset))
            and abs(float(slope)) * 2**16 + abs(float(offset)) <= 2**24
        )
        if exact:  # integers of at most 2**24 at every step: float32 holds the reader's float64 values exactly
            data = data.astype(np.float32)
            if slope != 1:
                data *= np.float32(slope)
            data += np.float32(offset)
        else:
            data = data.astype(np.float32) * slope + offset
    return np.ascontiguousarray(data), orientation_ras_lps(affine)


def dicom_to_hu(ds, data: np.ndarray, path: str, frame: int | None) -> tuple[np.ndarray, dict]:
    """Hounsfield units of a DICOM slice (``data`` as the reader returned it) and how they were obtained.

    - ``RescaleSlope``/``RescaleIntercept`` present: the reader applied them (``hu_rescale: "dicom"``).
    - In an enhanced multi-frame file's functional groups: applied here (``"dicom functional groups"``).
    - Missing, 8-bit data (a secondary-capture picture): not HU; shown as the picture is (``"display"``), warned.
    - Missing otherwise (a documented rule, warned, ``hu_rescale_assumed: True``): when no stored value is
      negative, HU = stored - 1024 (:data:`ASSUMED_CT_INTERCEPT`, the usual CT intercept: a slice in HU holds air
      at about -1000, so all-positive values cannot be HU); when some are negative, the values are HU already.
    """
    if "RescaleSlope" in ds or "RescaleIntercept" in ds:
        slope, icpt = float(ds.get("RescaleSlope", 1.0)), float(ds.get("RescaleIntercept", 0.0))
        return data, {"hu_rescale": "dicom", "hu_rescale_assumed": False, "rescale": (slope, icpt)}
    found = _functional_group_rescale(ds, frame)
    if found is not None:
        out = data.astype(np.float32) * np.float32(found[0]) + np.float32(found[1])
        return out, {"hu_rescale": "dicom functional groups", "hu_rescale_assumed": False, "rescale": found}
    lo, hi = float(data.min()), float(data.max())
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 16)) or 16)
    if bits <= 8 and lo >= 0 and hi <= 255:
        warnings.warn(
            f"DICOM file {path!r} has no RescaleSlope/RescaleIntercept and {bits}-bit values: taken as a displayed "
            f"picture (value / 255), not as Hounsfield units.",
            stacklevel=4,
        )
        return data.astype(np.float32), {"hu_rescale": "display", "hu_rescale_assumed": True}
    icpt = ASSUMED_CT_INTERCEPT if lo >= 0 else 0.0
    rule = f"HU = stored - {-icpt:g}" if icpt else "the stored values are HU"
    warnings.warn(
        f"DICOM file {path!r} has no RescaleSlope/RescaleIntercept (stored values {lo:g}..{hi:g}): assuming {rule} "
        f"({'no stored value is negative' if icpt else 'some stored values are negative'}); add the tags to the "
        f"file if this is wrong.",
        stacklevel=4,
    )
    out = data.astype(np.float32) + np.float32(icpt)
    return out, {"hu_rescale": rule, "hu_rescale_assumed": True, "rescale": (1.0, icpt)}


def canonical_axial(arr: np.ndarray, dir0: np.ndarray, dir1: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Reorient a 2D slice so that rows run anterior -> posterior and columns patient right -> left.

    ``dir0``/``dir1`` are the RAS directions of the array's axes 0 and 1. Only the in-plane x (R/L) and
    y (A/P) parts are used; a slice whose axes are not x/y (e.g. coronal) is returned unchanged.
    """
    ops: list[str] = []
    d = np.stack([np.asarray(dir0, dtype=float)[:3], np.asarray(dir1, dtype=float)[:3]])  # (axis, ras)
    dom = np.abs(d).argmax(axis=1)
    if set(dom.tolist()) != {0, 1}:
        return arr, ["not-axial:unchanged"]
    if dom[0] == 0:  # axis 0 runs along x: swap to make rows run along y
        arr = arr.T
        d = d[::-1]
        ops.append("transpose")
    if d[0, 1] > 0:  # rows should go towards posterior (RAS -y)
        arr = arr[::-1, :]
        ops.append("flip-rows")
    if d[1, 0] > 0:  # columns should go towards patient left (RAS -x)
        arr = arr[:, ::-1]
        ops.append("flip-cols")
    return np.ascontiguousarray(arr), ops


# ---------------------------------------------------------------------------------------------------------------
# whole scans
# ---------------------------------------------------------------------------------------------------------------
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


def nifti_axial_stack(path: str, hu: bool | None, a_min: float, a_max: float) -> tuple[np.ndarray, dict[str, Any]]:
    """The axial slices of a NIfTI volume, RAS-reoriented from its affine (the last axis inferior -> superior), each
    put in the DICOM path's orientation (:func:`canonical_axial`) and lung-windowed: ``(stack, meta)``, stack
    (N, 1, H, W) float32 in [0, 1]; see :class:`~.array.LoadCTSeries` (``hu``: the values are HU, ``None``: yes when
    the minimum is below -500).

    Raises:
        ValueError: the file is not one readable 3D volume, holds non-finite values or is not in HU; the message
            names the file.
    """
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
    is_hu = hu if hu is not None else bool(lo < -500.0)
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
        slices.append(lung_window(arr, a_min, a_max)[None])
    meta = {
        "source_format": "nifti",
        "series_uid": None,
        "slice_positions": [round(float(p), 4) for p in positions],
        "slice_sources": [f"{path}#{i}" for i in original_indices(ornt, n)],
        "position_source": "affine",
        "pixel_spacing": [float(np.linalg.norm(affine[:3, 1])), float(np.linalg.norm(affine[:3, 0]))],
        "orientation_ops": ops,
        "hu_range": (lo, hi),
        "original_affine": affine,
    }
    return np.stack(slices), meta


def original_indices(ornt: np.ndarray, n: int) -> list[str]:
    """Index in the file of each RAS-ordered axial slice (``axis<a>:<i>`` when the file's slice axis is not its last)."""
    ax = int(np.nonzero(ornt[:, 0] == 2)[0][0])
    idx = list(range(n))[::-1] if ornt[ax, 1] < 0 else list(range(n))
    return [str(i) if ax == 2 else f"axis{ax}:{i}" for i in idx]


def read_error_reason(error: BaseException, path: str) -> str:
    """A slice loader's message about ``path`` without the path (it is named beside the reason)."""
    msg = str(error).replace(f"DICOM file {path!r} is ", "").replace(f"DICOM file {path!r} ", "")
    return msg.replace(repr(path), "the file").rstrip(".")


def describe_series(series: Mapping[str, list]) -> str:
    """The series of a DICOM folder, one ``uid (n files, description)`` each, for an error message."""
    parts = []
    for uid, items in series.items():
        desc = str(items[0][1].get("SeriesDescription", "")).strip()
        parts.append(f"{uid} ({len(items)} files{', ' + desc if desc else ''})")
    return "; ".join(parts)
