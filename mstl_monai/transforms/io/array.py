# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Loading of one CT slice (PNG/JPEG, DICOM or a slice of a NIfTI volume) into a (1, H, W) float tensor."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from monai.config import DtypeLike, PathLike
from monai.data import MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import Transform
from monai.utils import TransformBackends

__all__ = ["LoadCTSlice", "DEFAULT_LUNG_WINDOW", "CT_SLICE_FORMATS", "sniff_ct_format", "lung_window"]

#: default lung window in Hounsfield units (``a_min``, ``a_max``) mapped to [0, 1]
DEFAULT_LUNG_WINDOW = (-1350.0, 150.0)
#: the formats :class:`LoadCTSlice` reads (the ``source_format`` it writes into the metadata)
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
        ValueError: when the file is empty or its format is not one that :class:`LoadCTSlice` reads.
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


def _pil_to_unit(img, path: str) -> tuple[np.ndarray, str]:
    """Convert a PIL image (any common mode) to a float32 (H, W) gray image in [0, 1]."""
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
        maxv = 65535.0 if arr.max(initial=0) <= 65535 and arr.min(initial=0) >= 0 else None
        if maxv is None:
            lo, hi = float(arr.min()), float(arr.max())
            return ((arr.astype(np.float32) - lo) / max(hi - lo, 1.0)).astype(np.float32), mode
        return (arr.astype(np.float32) / maxv).astype(np.float32), mode
    if arr.dtype.kind == "f":  # mode F: keep values already in [0, 1], otherwise min-max
        arr = arr.astype(np.float32)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if lo >= 0.0 and hi <= 1.0:
            return arr, mode
        return (arr - lo) / max(hi - lo, 1e-12), mode
    raise ValueError(f"CT slice file {path!r} has an unsupported pixel type {arr.dtype} (PIL mode {mode!r}).")


def _canonical_axial(arr: np.ndarray, dir0: np.ndarray, dir1: np.ndarray) -> tuple[np.ndarray, list[str]]:
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


class LoadCTSlice(Transform):
    """Load one CT slice file as a 1-channel float32 :class:`~monai.data.MetaTensor` of shape (1, H, W) in [0, 1].

    Reads (format sniffed from the file's first bytes, then its extension):

    - PNG/JPEG/BMP/TIFF (8- or 16-bit, L/LA/P/RGB/RGBA; colour becomes luminance, alpha is ignored) through
      MONAI's :class:`~monai.data.PILReader`; the picture is taken as displayed (radiological convention).
    - DICOM through :class:`~monai.data.PydicomReader`: stored values -> Hounsfield units with the rescale
      slope/intercept -> lung window ``[a_min, a_max]`` -> [0, 1].
    - NIfTI (``.nii``/``.nii.gz``) through :class:`~monai.data.NibabelReader`: the axial slice ``slice_index``
      (default: the middle one), windowed like DICOM if the values look like HU (``hu=None``: minimum below
      -500), otherwise scaled to [0, 1].

    DICOM and NIfTI slices are reoriented with their affine so that rows run anterior -> posterior and the
    image's left is the patient's right, like PNG slices. The metadata keeps ``filename_or_obj``,
    ``source_format``, ``original_shape``, ``orientation_ops`` and, for HU data, ``hu_window``.

    Args:
        a_min: lower end of the lung window in HU.
        a_max: upper end of the lung window in HU.
        slice_index: for NIfTI volumes, the index along the axial axis (negative counts from the end);
            ``None`` takes the middle slice.
        hu: for NIfTI volumes, whether the values are HU (``None``: guess from the minimum).
        dtype: output dtype.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is empty, truncated, unreadable or not an image (the message names the file;
            a DICOM without pixel data says it is "not an image").

    .. code-block:: python

        img = LoadCTSlice()("CT_COVID/2020.03.01.20029769-p21-73_1%2.png")  # MetaTensor (1, H, W)
    """

    backend = [TransformBackends.TORCH, TransformBackends.NUMPY]

    def __init__(
        self,
        a_min: float = DEFAULT_LUNG_WINDOW[0],
        a_max: float = DEFAULT_LUNG_WINDOW[1],
        slice_index: int | None = None,
        hu: bool | None = None,
        dtype: DtypeLike | torch.dtype = torch.float32,
    ) -> None:
        if not a_max > a_min:
            raise ValueError(f"LoadCTSlice needs a_max > a_min, got a_min={a_min}, a_max={a_max}.")
        self.a_min = float(a_min)
        self.a_max = float(a_max)
        self.slice_index = slice_index
        self.hu = hu
        self.dtype = dtype
        self._pil = PILReader(reverse_indexing=False)
        self._dicom = PydicomReader(swap_ij=False, affine_lps_to_ras=True)
        self._nifti = NibabelReader()

    def __call__(self, filename: PathLike) -> MetaTensor:
        """Load ``filename``; see the class docstring."""
        if not isinstance(filename, (str, os.PathLike)):
            raise TypeError(f"LoadCTSlice expects a file path, got {type(filename).__name__}.")
        path = str(filename)
        fmt = sniff_ct_format(path)
        try:
            if fmt == "dicom":
                arr, meta = self._load_dicom(path)
            elif fmt == "nifti":
                arr, meta = self._load_nifti(path)
            else:
                arr, meta = self._load_pil(path)
        except (ValueError, FileNotFoundError, TypeError) as e:
            if path in str(e):
                raise
            raise ValueError(f"cannot read CT slice file {path!r} as {fmt}: {e}") from e
        except Exception as e:  # PIL/pydicom/nibabel raise OSError, SyntaxError, EOFError, struct.error, ...
            raise ValueError(f"cannot read CT slice file {path!r} as {fmt} (truncated or corrupt?): {e}") from e
        if arr.ndim != 2 or arr.size == 0 or min(arr.shape) < 1:
            raise ValueError(f"CT slice file {path!r} gave an array of shape {arr.shape}, expected a 2D image.")
        if not np.isfinite(arr).all():
            raise ValueError(f"CT slice file {path!r} holds non-finite pixel values.")
        meta.update({"filename_or_obj": path, "source_format": fmt, "spatial_shape": np.asarray(arr.shape)})
        t = torch.as_tensor(np.ascontiguousarray(arr)[None]).to(self.dtype)
        return MetaTensor(t, meta=meta)

    # -- readers -------------------------------------------------------------------------------------------------
    def _load_pil(self, path: str) -> tuple[np.ndarray, dict]:
        img = self._pil.read(path)
        try:
            img.load()  # decode now: a truncated file fails here
            arr, mode = _pil_to_unit(img, path)
            meta = {"original_shape": (img.height, img.width), "original_mode": mode, "orientation_ops": []}
        finally:
            img.close()
        return arr, meta

    def _load_dicom(self, path: str) -> tuple[np.ndarray, dict]:
        ds = self._dicom.read(path)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            sop = ds.get("SOPClassUID", None)
            sop_name = getattr(sop, "name", sop)
            raise ValueError(f"DICOM file {path!r} is not an image (no pixel data; SOP class {sop_name}).")
        data, hdr = self._dicom.get_data(ds)
        data = np.asarray(data)
        if data.ndim == 3 and data.shape[-1] in (3, 4) and str(ds.get("PhotometricInterpretation", "")) != "":
            if str(ds.PhotometricInterpretation).startswith(("RGB", "YBR")):
                raise ValueError(f"DICOM file {path!r} is a colour image, not a CT slice.")
        if data.ndim == 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim == 3:  # multi-frame: take the middle frame (or slice_index)
            idx = data.shape[-1] // 2 if self.slice_index is None else self.slice_index
            data = data[..., idx]
        if data.ndim != 2:
            raise ValueError(f"DICOM file {path!r} has pixel data of shape {data.shape}, expected one 2D slice.")
        if str(ds.get("PhotometricInterpretation", "MONOCHROME2")) == "MONOCHROME1":
            raise ValueError(f"DICOM file {path!r} is MONOCHROME1 (inverted display), not a CT slice in HU.")
        affine = np.asarray(hdr["affine"], dtype=float)
        arr, ops = _canonical_axial(data, affine[:3, 0], affine[:3, 1])
        meta = {
            "original_shape": tuple(data.shape),
            "orientation_ops": ops,
            "hu_window": (self.a_min, self.a_max),
            "hu_range": (float(arr.min()), float(arr.max())),
            "original_affine": affine,
        }
        return lung_window(arr, self.a_min, self.a_max), meta

    def _load_nifti(self, path: str) -> tuple[np.ndarray, dict]:
        img = self._nifti.read(path)
        data, hdr = self._nifti.get_data(img)
        data = np.asarray(data)
        affine = np.asarray(hdr["affine"], dtype=float)
        while data.ndim > 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim == 2:
            sl, axes = data, (0, 1)
            ax = None
        elif data.ndim == 3:
            ax = int(np.abs(affine[2, :3]).argmax())  # voxel axis that runs mostly along S/I
            n = data.shape[ax]
            idx = n // 2 if self.slice_index is None else int(self.slice_index)
            if not -n <= idx < n:
                raise ValueError(f"slice_index {self.slice_index} is out of range for {n} slices in {path!r}.")
            sl = np.take(data, idx, axis=ax)
            axes = tuple(a for a in range(3) if a != ax)
        else:
            raise ValueError(f"NIfTI file {path!r} has shape {data.shape}, expected a 2D or 3D volume.")
        arr, ops = _canonical_axial(sl, affine[:3, axes[0]], affine[:3, axes[1]])
        arr = arr.astype(np.float32)
        meta = {
            "original_shape": tuple(data.shape),
            "orientation_ops": ops,
            "slice_axis": ax,
            "original_affine": affine,
        }
        is_hu = self.hu if self.hu is not None else bool(arr.min(initial=0.0) < -500.0)
        if is_hu:
            meta.update({"hu_window": (self.a_min, self.a_max), "hu_range": (float(arr.min()), float(arr.max()))})
            return lung_window(arr, self.a_min, self.a_max), meta
        lo, hi = float(arr.min()), float(arr.max())
        if lo >= 0.0 and hi <= 1.0:
            return arr, meta
        scale = 255.0 if lo >= 0.0 and hi <= 255.0 else None
        if scale is not None:
            return arr / scale, meta
        return (arr - lo) / max(hi - lo, 1e-12), meta
