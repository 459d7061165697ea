# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Loading of CT images as array transforms: one slice (PNG/JPEG, DICOM or a slice of a NIfTI volume) as a (1, H, W)
float tensor, and a whole scan (a DICOM series folder or a NIfTI volume) as an (N, 1, H, W) stack of axial slices."""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, PathLike
from monai.data import MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import Transform
from monai.utils import TransformBackends

from .dicom_folder import (
    DicomFolder,
    SeriesGeometry,
    check_series_tags,
    dicom_series_headers,
    name_list,
    read_dicom_folder,
    reorient,
    series_geometry,
)
from .functional import (
    ASSUMED_CT_INTERCEPT,
    CT_SLICE_FORMATS,
    DEFAULT_LUNG_WINDOW,
    canonical_axial,
    describe_series,
    dicom_slice_array,
    dicom_to_hu,
    find_gaps,
    lung_window,
    nifti_axial_stack,
    pil_to_unit,
    png_sbit,
    read_error_reason,
    significant_bits,
    sniff_ct_format,
)

# the format sniffing, pixel conversions, reorientation and gaps the loaders use live in .functional; named here too
__all__ = [
    "LoadCTSlice",
    "LoadCTSeries",
    "dicom_series_headers",
    "find_gaps",
    "significant_bits",
    "png_sbit",
    "DEFAULT_LUNG_WINDOW",
    "CT_SLICE_FORMATS",
    "ASSUMED_CT_INTERCEPT",
    "sniff_ct_format",
    "lung_window",
]

logger = logging.getLogger(__name__)
_TOLD: set[str] = set()  # the volumes already named by _tell_one_slice (a training run reads them every epoch)


def _tell_one_slice(path: str, n: int, index: int, what: str) -> None:
    """Say (once per file) that a slice loader read one slice of a volume: nothing else in its output shows it."""
    if path in _TOLD or len(_TOLD) > 100_000:
        return
    _TOLD.add(path)
    logger.warning(
        f"{path} holds {n} {what}: only the middle one ({index}) is read as the slice (give slice_index to choose "
        "another; for one answer per scan use configs/inference_scan.yaml)."
    )


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
        loaders = {"dicom": self._load_dicom, "nifti": self._load_nifti}
        return self._read(path, fmt, lambda: loaders.get(fmt, self._load_pil)(path))

    def from_dicom_dataset(self, ds: Any, filename: PathLike) -> MetaTensor:
        """The slice of the DICOM file ``filename`` whose dataset ``ds`` was read already, e.g. by a series reader
        that read the headers with the pixel data deferred (``pydicom.dcmread(..., defer_size=...)``): the same as
        ``self(filename)`` (the same array, metadata and errors), without parsing the file again."""
        path = str(filename)
        return self._read(path, "dicom", lambda: self._load_dicom(path, ds))

    def _read(self, path: str, fmt: str, load) -> MetaTensor:
        """``load()`` -> ``(array, meta)`` with every failure as one ``ValueError`` naming the file, then checked and
        wrapped as the (1, H, W) MetaTensor."""
        try:
            arr, meta = load()
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

    def _load_dicom(self, path: str, ds: Any = None) -> tuple[np.ndarray, dict]:
        deferred = None
        if ds is not None and "PixelData" in ds:
            try:  # pydicom 3: the element as read, its value still in the file when deferred
                deferred = ds.get_item("PixelData", keep_deferred=True)
            except TypeError:  # pydicom 2 (the MONAI Label environment): no such option, the value stays once read
                deferred = None
        try:
            return self._load_dicom_dataset(path, ds)
        finally:  # a given header keeps its pixel data deferred (not held in memory once read)
            if deferred is not None and deferred.value is None:
                ds[deferred.tag] = deferred

    def _load_dicom_dataset(self, path: str, ds: Any = None) -> tuple[np.ndarray, dict]:
        given = ds is not None
        if not given:
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
        # rescaled to HU when the file has RescaleSlope/RescaleIntercept; a slice with its geometry without the
        # reader's metadata dictionary (the same array and affine)
        found = dicom_slice_array(ds)
        if found is None:
            if given:  # the reader's general path works on its own reading of the file
                ds = self._dicom.read(path)
            data, hdr = self._dicom.get_data(ds)
            data, affine = np.asarray(data), np.asarray(hdr["affine"], dtype=float)
        else:
            data, affine = found
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
            if self.slice_index is None:
                _tell_one_slice(path, frames, frame, "frames")
            data = data[frame]
            meta.update({"number_of_frames": frames, "frame_index": frame})
        if data.ndim == 3 and data.shape[-1] == 1:
            data = data[..., 0]
        if data.ndim != 2:
            raise ValueError(f"DICOM file {path!r} has pixel data of shape {data.shape}, expected one 2D slice.")
        data, rescale = dicom_to_hu(ds, data, path, frame)
        meta.update(rescale)
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
        # HU rescaled into a new float32 array by dicom_slice_array: windowed in place (no second slice-sized array)
        own = found is not None and rescale["hu_rescale"] == "dicom" and arr.dtype == np.float32 and arr.flags.writeable
        return lung_window(arr, self.a_min, self.a_max, out=arr if own else None), meta

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
            if self.slice_index is None and n > 1:
                _tell_one_slice(path, n, idx % n, "slices")
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
      the DICOM path (:func:`~.functional.canonical_axial`) and lung-windowed.

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

    def __call__(self, path: PathLike, headers: DicomFolder | None = None) -> MetaTensor:
        """Load the scan at ``path`` (a DICOM series folder or a NIfTI file); see the class docstring.

        ``headers``: what :func:`~.dicom_folder.read_dicom_folder` found in the folder ``path``, when a caller read
        it already (a series selector): taken instead of reading the headers again.

        Raises:
            ValueError: ``headers`` are those of another folder.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"LoadCTSeries expects a folder or file path, got {type(path).__name__}.")
        path = str(path)
        if headers is not None and os.path.normpath(headers.folder) != os.path.normpath(path):
            raise ValueError(f"LoadCTSeries got the headers of folder {headers.folder!r} for {path!r}.")
        if os.path.isdir(path):
            stack, meta = self._load_dicom_series(path, headers)
        elif os.path.isfile(path) and path.lower().endswith((".nii", ".nii.gz")):
            stack, meta = nifti_axial_stack(path, self.hu, self.a_min, self.a_max)
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
                    f"CT series folder {folder!r} has no series {self.series_uid!r}; it holds {describe_series(series)}."
                )
            return self.series_uid, series[self.series_uid]
        if len(series) > 1:
            raise ValueError(
                f"CT series folder {folder!r} holds {len(series)} series: {describe_series(series)}; "
                "pick one with series_uid (bundle setting `series_uid`)."
            )
        uid = next(iter(series))
        return uid, series[uid]

    def _load_dicom_series(self, folder: str, headers: DicomFolder | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        found = read_dicom_folder(folder) if headers is None else headers
        uid, items = self._pick_series(found)
        notes = check_series_tags(items, folder, uid, self.allow_non_ct)
        unreadable = list(found.unreadable)
        try:  # the usual series: its geometry from the headers, every slice read straight into its place
            geo = series_geometry(items, folder)
            fast = self._read_in_order(items, geo)
        except ValueError:
            fast = None
        if fast is not None:
            stack, (hu_lo, hu_hi) = fast
            read = [(path, ds, None) for path, ds in items]
        else:  # files whose pixels cannot be read, or a geometry to check on the readable files only
            stack, read, geo, (hu_lo, hu_hi) = self._read_then_order(folder, uid, items, unreadable)
        unreadable.sort()
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
        return stack, meta

    def _slice(self, path: str, ds: Any) -> MetaTensor:
        """One file of a series: the pixel data deferred by the folder reader is read from its place in the file, no
        second parse (a file without the DICOM preamble, which the folder reader forces, goes the single-slice
        loader's way)."""
        parsed = "PixelData" in ds and getattr(ds, "preamble", None) is not None
        return self.slice_loader.from_dicom_dataset(ds, path) if parsed else self.slice_loader(path)

    def _read_in_order(
        self, items: list[tuple[str, Any]], geo: SeriesGeometry
    ) -> tuple[np.ndarray, tuple[float, float]] | None:
        """The (N, 1, H, W) stack of a series whose files can all be read, each slice copied into its place as soon as
        it is read (no list of slices and no second copy of them): ``(stack, hu_range)``. ``None`` at the first file
        that cannot be read or a slice of another shape: :meth:`_read_then_order` then reads the series and names
        what is wrong."""
        stack, hu_lo, hu_hi = None, np.inf, -np.inf
        for k, i in enumerate(geo.order):
            path, ds = items[i]
            try:
                img = self._slice(path, ds)
            except ValueError:
                return None
            arr = img.as_tensor()[0].numpy()
            done = list(img.meta.get("orientation_ops") or [])
            if done != geo.orientation_ops:  # its own geometry missing: the reader fell back to another orientation
                arr = reorient(arr, done, geo.orientation_ops)
            if stack is None:
                stack = np.empty((len(geo.order), 1, *arr.shape), dtype=arr.dtype)
            elif arr.shape != stack.shape[2:] or arr.dtype != stack.dtype:
                return None
            stack[k, 0] = arr
            lo, hi = img.meta.get("hu_range", (np.nan, np.nan))
            hu_lo, hu_hi = min(hu_lo, float(lo)), max(hu_hi, float(hi))
        return stack, (hu_lo, hu_hi)

    def _read_then_order(
        self, folder: str, uid: str, items: list[tuple[str, Any]], unreadable: list[tuple[str, str]]
    ) -> tuple[np.ndarray, list[tuple[str, Any, MetaTensor]], SeriesGeometry, tuple[float, float]]:
        """Read every file of a series (the ones that cannot be read added to ``unreadable`` with their reason), take
        the geometry of the readable ones and stack their slices in its order: ``(stack, read, geometry, hu_range)``,
        ``read`` the ``(path, header, slice)`` of the readable files in file order.

        Raises:
            ValueError: no file can be read, the geometry is refused, or the slices differ in shape.
        """
        read = []  # (path, header, slice) of the files whose pixels could be read
        for path, ds in items:
            try:
                read.append((path, ds, self._slice(path, ds)))
            except ValueError as e:  # cut short, no pixel data, a colour picture...: named, like unreadable headers
                unreadable.append((path, read_error_reason(e, path)))
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
        return np.stack(slices)[:, None], read, geo, (hu_lo, hu_hi)

    # -- NIfTI -----------------------------------------------------------------------------------------------------
