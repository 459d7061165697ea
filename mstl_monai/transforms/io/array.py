# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Loading of one CT slice (PNG/JPEG, DICOM or a slice of a NIfTI volume) into a (1, H, W) float tensor."""

from __future__ import annotations

import os

import numpy as np
import torch
from monai.config import DtypeLike, PathLike
from monai.data import MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import Transform
from monai.utils import TransformBackends

from .functional import (
    ASSUMED_CT_INTERCEPT,
    CT_SLICE_FORMATS,
    DEFAULT_LUNG_WINDOW,
    canonical_axial,
    dicom_to_hu,
    lung_window,
    pil_to_unit,
    png_sbit,
    significant_bits,
    sniff_ct_format,
)

# the format sniffing, pixel conversions and reorientation LoadCTSlice uses live in .functional; named here too
__all__ = [
    "LoadCTSlice",
    "significant_bits",
    "png_sbit",
    "DEFAULT_LUNG_WINDOW",
    "CT_SLICE_FORMATS",
    "ASSUMED_CT_INTERCEPT",
    "sniff_ct_format",
    "lung_window",
]

class LoadCTSlice(Transform):
    """Load one CT slice file as a 1-channel float32 :class:`~monai.data.MetaTensor` of shape (1, H, W) in [0, 1].

    Reads (format sniffed from the file's first bytes, then its extension):

    - PNG/JPEG/BMP/TIFF (8- or 16-bit, L/LA/P/RGB/RGBA; colour becomes luminance, alpha is ignored) through
      MONAI's :class:`~monai.data.PILReader`; the picture is taken as displayed (radiological convention).
      16-bit gray images are divided by ``2**bits - 1`` with ``bits`` the PNG's ``sBIT`` chunk (its BitsStored) or,
      without one, the bit length of the largest value rounded up to 8/10/12/14/16 (:func:`significant_bits`:
      12-bit data in a 16-bit PNG is scaled by 4095); the metadata keeps ``bits_stored`` and ``bits_source``.
    - DICOM through :class:`~monai.data.PydicomReader`: stored values -> Hounsfield units with the rescale
      slope/intercept -> lung window ``[a_min, a_max]`` -> [0, 1]. A multi-frame DICOM is a volume: the frame
      ``slice_index`` (default: the middle one) is taken, and ``number_of_frames``/``frame_index`` are recorded.
      Without ``RescaleSlope``/``RescaleIntercept`` (nor in an enhanced file's functional groups) a warning says
      which rule was used and the metadata has ``hu_rescale_assumed: True``: when no stored value is negative,
      HU = stored - 1024 (a slice in HU holds air near -1000, so all-positive values are not HU); otherwise the
      values are taken as HU; 8-bit data is a displayed picture (value / 255). ``hu_rescale`` names the rule.
    DICOM and NIfTI slices are reoriented with their affine so that rows run anterior -> posterior and the
    image's left is the patient's right, like PNG slices. The metadata keeps ``filename_or_obj``,
    ``source_format``, ``original_shape``, ``orientation_ops`` and, for HU data, ``hu_window``.

    Args:
        a_min: lower end of the lung window in HU.
        a_max: upper end of the lung window in HU.
        slice_index: for NIfTI volumes the index along the axial axis, for multi-frame DICOM the frame
            (negative counts from the end); ``None`` takes the middle one.
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
            sbit = png_sbit(path) if img.format == "PNG" else None
            arr, mode, *extra = pil_to_unit(img, path, sbit)
            meta = {"original_shape": (img.height, img.width), "original_mode": mode, "orientation_ops": []}
            meta.update(*extra)
        finally:
            img.close()
        return arr, meta

    def _load_dicom(self, path: str) -> tuple[np.ndarray, dict]:
        ds = self._dicom.read(path)
        if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
            sop = ds.get("SOPClassUID", None)
            sop_name = getattr(sop, "name", sop)
            raise ValueError(f"DICOM file {path!r} is not an image (no pixel data; SOP class {sop_name}).")
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        if int(ds.get("SamplesPerPixel", 1) or 1) > 1 or photometric.startswith(("RGB", "YBR", "PALETTE")):
            raise ValueError(f"DICOM file {path!r} is a colour image ({photometric}), not a CT slice.")
        if photometric == "MONOCHROME1":
            raise ValueError(f"DICOM file {path!r} is MONOCHROME1 (inverted display), not a CT slice in HU.")
        data, hdr = self._dicom.get_data(ds)  # rescaled to HU when the file has RescaleSlope/RescaleIntercept
        data = np.asarray(data)
        full_shape = tuple(data.shape)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        meta: dict = {}
        frame = None
        if frames > 1:  # multi-frame: frames on the first axis; one frame is chosen, like a NIfTI volume's slice
            if data.ndim != 3 or data.shape[0] != frames:
                raise ValueError(
                    f"DICOM file {path!r} has {frames} frames but pixel data of shape {data.shape}, expected "
                    f"({frames}, rows, columns)."
                )
            frame = frames // 2 if self.slice_index is None else int(self.slice_index)
            if not -frames <= frame < frames:
                raise ValueError(f"slice_index {self.slice_index} is out of range for {frames} frames in {path!r}.")
            frame %= frames
            data = data[frame]
            meta.update({"number_of_frames": frames, "frame_index": frame})
        if data.ndim == 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != 2:
            raise ValueError(f"DICOM file {path!r} has pixel data of shape {data.shape}, expected one 2D slice.")
        data, rescale = dicom_to_hu(ds, data, path, frame)
        meta.update(rescale)
        affine = np.asarray(hdr["affine"], dtype=float)
        arr, ops = canonical_axial(data, affine[:3, 0], affine[:3, 1])
        if rescale["hu_rescale"] == "display":  # an 8-bit picture (secondary capture): shown as it is
            meta.update({"original_shape": full_shape, "orientation_ops": ops, "original_affine": affine})
            return (arr / 255.0).astype(np.float32), meta
        meta.update(
            {
                "original_shape": full_shape,
                "orientation_ops": ops,
                "hu_window": (self.a_min, self.a_max),
                "hu_range": (float(arr.min()), float(arr.max())),
                "original_affine": affine,
            }
        )
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
        arr, ops = canonical_axial(sl, affine[:3, axes[0]], affine[:3, axes[1]])
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
