# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Functional core of CT loading: format sniffing, the lung window, pixel values to [0, 1] or HU, axial reorientation."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from monai.config import PathLike

__all__ = [
    "ASSUMED_CT_INTERCEPT",
    "CT_SLICE_FORMATS",
    "DEFAULT_LUNG_WINDOW",
    "canonical_axial",
    "dicom_to_hu",
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


def lung_window(hu: np.ndarray, a_min: float, a_max: float) -> np.ndarray:
    """Clip Hounsfield units to ``[a_min, a_max]`` and map them linearly to [0, 1] (float32)."""
    if not a_max > a_min:
        raise ValueError(f"lung window needs a_max > a_min, got a_min={a_min}, a_max={a_max}.")
    out = (np.asarray(hu, dtype=np.float32) - np.float32(a_min)) / np.float32(a_max - a_min)
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
