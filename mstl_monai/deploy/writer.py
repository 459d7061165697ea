# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The scan writer of ``configs/inference_scan.yaml`` with an optional DICOM SR per DICOM series (``--write_sr true``)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mstl_monai.inferers.scan_inference import ScanWriter, _safe_name

__all__ = ["SRScanWriter"]

logger = logging.getLogger(__name__)


class SRScanWriter(ScanWriter):
    """:class:`~mstl_monai.inferers.scan_inference.ScanWriter` that also writes each DICOM series' answer as a DICOM Comprehensive
    SR (:func:`~mstl_monai.deploy.write_scan_sr`) to ``<output_dir>/sr/<series folder>-<hash of its path>.dcm``
    (named as the heat maps) when ``write_sr``.

    With ``write_sr=False`` it is the plain :class:`~mstl_monai.inferers.scan_inference.ScanWriter`. A scan that has no DICOM
    series behind it (a NIfTI volume) or whose files cannot be referenced gets no SR: one line naming the scan
    and the reason is printed (and logged), and the others go on. The row returned by :meth:`add` holds the
    SR's path under ``sr_file`` (None without one) and the reason under ``sr_message``.

    Args:
        output_dir: the output folder.
        write_sr: write the SRs.
        ckpt_path: the checkpoint, for the model description (name, version, weights SHA-256, training data).
        ckpt_settings: its settings (:func:`~mstl_monai.networks.checkpoint.checkpoint_settings`); read when not given.
        n_bootstrap: the bootstrap resamples behind the intervals (the SR says so when there is no interval).
        sr_dir: where the SRs go (default ``<output_dir>/sr``).
        kwargs: :class:`~mstl_monai.inferers.scan_inference.ScanWriter`'s (``threshold``, ``class_names``, ``positive_class``,
            ``save_heatmaps``).

    Raises:
        ValueError: ``write_sr`` without ``ckpt_path``.
    """

    def __init__(
        self,
        output_dir: str,
        write_sr: bool = False,
        ckpt_path: str | os.PathLike | None = None,
        ckpt_settings: Mapping[str, Any] | None = None,
        n_bootstrap: int | None = None,
        sr_dir: str | os.PathLike | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(output_dir, **kwargs)
        self.write_sr = _as_bool(write_sr, "write_sr")
        if self.write_sr and not ckpt_path:
            raise ValueError("write_sr=True needs ckpt_path (the model the report describes).")
        self.ckpt_path = None if ckpt_path is None else os.fspath(ckpt_path)
        self.ckpt_settings = ckpt_settings
        self.n_bootstrap = n_bootstrap
        self.sr_dir = Path(sr_dir) if sr_dir is not None else Path(self.output_dir) / "sr"
        self._model: dict[str, Any] | None = None
        self._names: set[str] = set()

    @property
    def model(self) -> dict[str, Any]:
        """The model description of the reports (computed once: the weights are hashed)."""
        from .provenance import model_description

        if self._model is None:
            self._model = model_description(self.ckpt_path, self.ckpt_settings)
        return self._model

    def sr_path(self, scan: str) -> Path:
        """A file name for the SR of ``scan`` not used before in this run."""
        stem = _safe_name(scan)
        name, i = f"{stem}.dcm", 1
        while name in self._names:
            i += 1
            name = f"{stem}_{i}.dcm"
        self._names.add(name)
        return self.sr_dir / name

    def write_report(self, result: Mapping[str, Any], headers: Mapping[str, Any] | None = None) -> Path:
        """Write the SR of one scan result; returns its path. ``headers``: the source files' DICOM headers by path,
        where a caller read them already (see :func:`~.sr.read_source_datasets`).

        Raises:
            ValueError: the scan is not a DICOM series or its files cannot be referenced (the message names it).
        """
        from .sr import read_source_datasets, write_scan_sr

        datasets = read_source_datasets(result, headers)  # raises before a file name is taken
        return write_scan_sr(
            result,
            self.sr_path(str(result["scan"])),
            self.model,
            threshold={"value": self.threshold, "source": self.threshold_source},
            n_bootstrap=self.n_bootstrap,
            positive_name=self.class_names[self.positive_class],
            datasets=datasets,
        )

    def add(self, result: dict[str, Any], headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Record a scan's result as :class:`~mstl_monai.inferers.scan_inference.ScanWriter` does, then write its SR
        (``headers``: see :meth:`write_report`)."""
        row = super().add(result)
        if not self.write_sr:
            return row
        try:
            path = self.write_report(result, headers)
        except ValueError as e:
            row.update(sr_file=None, sr_message=str(e))
            print(f"{result['scan']}: no DICOM SR: {e}", flush=True)
            logger.warning(f"{result['scan']}: no DICOM SR: {e}")
            return row
        row.update(sr_file=str(path), sr_message="")
        print(f"{result['scan']}: DICOM SR written to {path}", flush=True)
        return row


def _as_bool(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", "none", ""):
        return False
    raise ValueError(f"{name}={value!r} is not a boolean: use true or false.")
