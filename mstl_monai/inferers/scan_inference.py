# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Scan inference over files: find the scans among the inputs, classify each with
:class:`~mstl_monai.inferers.scan.ScanClassifier`, write ``scans.csv``, ``slices.csv`` and the heat maps."""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .scan import ScanClassifier

__all__ = ["SCAN_COLUMNS", "SLICE_COLUMNS", "ScanWriter", "collect_scans", "run_scan_inference"]


#: columns of ``scans.csv`` (one row per scan)
SCAN_COLUMNS = (
    "scan",
    "status",
    "source_format",
    "n_slices",
    "slices_used",
    "slices_skipped",
    "probability",
    "ci_low",
    "ci_high",
    "threshold",
    "decision",
    "aggregation",
    "top_slices_z_mm",
    "gaps",
    "position_source",
    "message",
)
#: columns of ``slices.csv`` (one row per slice of every scan read)
SLICE_COLUMNS = ("scan", "slice", "z_mm", "source", "lung_fraction", "used", "probability")



def _holds_dicom(folder: str) -> bool:
    from mstl_monai.transforms.io.dicom_folder import _is_dicom_file

    return any(_is_dicom_file(os.path.join(folder, n)) for n in sorted(os.listdir(folder)) if os.path.isfile(os.path.join(folder, n)))


def collect_scans(inputs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand ``inputs`` into scans: a NIfTI file is a scan; a folder holding DICOM files is a scan (one series);
    any other folder is searched (recursively) for such folders and NIfTI files. Other entries are kept as given,
    so that the loader reports them by name."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    scans: list[str] = []
    for entry in inputs:
        entry = str(entry)
        if os.path.isdir(entry) and not _holds_dicom(entry):
            found = []
            for root, dirs, names in sorted(os.walk(entry)):
                dirs.sort()
                found += [os.path.join(root, n) for n in sorted(names) if n.lower().endswith((".nii", ".nii.gz"))]
                if root != entry and _holds_dicom(root):
                    found.append(root)
            scans.extend(found or [entry])  # an empty folder stays, so that the loader names it
        else:
            scans.append(entry)
    return scans


def _fmt(v: Any, column: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return repr(v) if column == "threshold" else f"{v:.6f}"  # the threshold as stored, not rounded
    return str(v)


def _gap_text(g: Mapping[str, Any]) -> str:
    if "instance_before" in g:  # a series without positions: a gap in its InstanceNumbers
        return f"{g['missing']} missing after InstanceNumber {g['instance_before']}"
    return f"{g['missing']} missing after z={g['z_before']:g}"


def _z_text(z: float | None) -> str:
    return "" if z is None else f"{z:g}"


class ScanWriter:
    """Write ``scans.csv`` and ``slices.csv`` (rewritten atomically after every scan, so a crash loses nothing
    already written) and the top slices' heat-map overlays as PNG files under ``heatmaps/``.

    Args:
        output_dir: the output folder.
        threshold: decision threshold on the scan probability: a number, or ``{"value", "source"}`` as
            :func:`~mstl_monai.networks.checkpoint.decision_threshold` gives (the bundle passes the checkpoint's); None: 0.5.
        class_names: class names, in output order; the decision is ``class_names[positive_class]`` when the
            probability is above ``threshold`` (as for single slices, :class:`~mstl_monai.handlers.predictions.PredictionWriter`).
        positive_class: index of the class whose probability is reported.
        save_heatmaps: write the overlays.
    """

    def __init__(
        self,
        output_dir: str,
        threshold: float | Mapping | None = 0.5,
        class_names: Sequence[str] = ("non-COVID", "COVID"),
        positive_class: int = 1,
        save_heatmaps: bool = True,
    ) -> None:
        from mstl_monai.networks.checkpoint import given_threshold

        used = given_threshold(threshold)  # ValueError naming the setting for a value outside (0, 1)
        self.output_dir = str(output_dir)
        self.threshold = used["value"]
        self.threshold_source = used["source"]
        self.class_names = list(class_names)
        self.positive_class = int(positive_class)
        self.save_heatmaps = save_heatmaps
        self.scan_rows: list[dict] = []
        self.slice_rows: list[dict] = []

    def decision(self, probability: float) -> str:
        """The class decided at the threshold."""
        neg = self.class_names[1 - self.positive_class] if len(self.class_names) == 2 else f"not {self.class_names[self.positive_class]}"
        return self.class_names[self.positive_class] if probability > self.threshold else neg

    def summary(self, result: dict[str, Any]) -> dict[str, Any]:
        """The ``scans.csv`` row (and JSON answer) of a result of :class:`ScanClassifier`; its ``message`` holds
        every fallback, file left out and missing interval of the scan (:class:`~mstl_monai.transforms.LoadCTSeries`'s
        notes, the interval's note), then the missing slices."""
        gaps = result.get("gaps") or []
        notes = list(result.get("notes") or [])
        if gaps:
            notes.append("missing slices (see gaps)")
        return {
            "scan": result["scan"],
            "status": "ok",
            "source_format": result.get("source_format"),
            "n_slices": result["n_slices"],
            "slices_used": result["slices_used"],
            "slices_skipped": result["slices_skipped"],
            "probability": result["probability"],
            "ci_low": result["ci_low"],
            "ci_high": result["ci_high"],
            "threshold": self.threshold,
            "decision": self.decision(result["probability"]),
            "aggregation": result["aggregation"],
            "top_slices_z_mm": ";".join(_z_text(t["z_mm"]) for t in result.get("top_slices", [])).strip(";"),
            "gaps": ";".join(_gap_text(g) for g in gaps),
            "position_source": result.get("position_source"),
            "message": "; ".join(notes),
        }

    def add(self, result: dict[str, Any]) -> dict[str, Any]:
        """Record a scan's result, write the heat maps and rewrite the CSV files; returns the scan row."""
        row = self.summary(result)
        if self.save_heatmaps:
            self._write_heatmaps(result)
        self.scan_rows.append(row)
        self.slice_rows += [dict(s, scan=result["scan"]) for s in result.get("slices", [])]
        self.flush()
        return row

    def add_error(self, scan: str, error: BaseException) -> dict[str, Any]:
        """Record a scan that could not be classified (a row with status ``error`` and the message)."""
        msg = str(error).replace("\n", " ")
        row = {c: "" for c in SCAN_COLUMNS}
        row.update(scan=scan, status="no-lung" if "no slice shows lung" in msg else "error", threshold=self.threshold, message=msg)
        self.scan_rows.append(row)
        self.flush()
        return row

    def _write_heatmaps(self, result: dict[str, Any]) -> None:
        from PIL import Image

        from mstl_monai.utils.io import atomic_write
        from mstl_monai.visualize import overlay

        stem = _safe_name(result["scan"])
        for rank, t in enumerate(result.get("top_slices", []), start=1):
            where = f"s{t['slice']}" if t["z_mm"] is None else f"z{t['z_mm']:g}"  # no positions: the slice index
            path = os.path.join(self.output_dir, "heatmaps", f"{stem}_top{rank}_{where}.png")
            t["heatmap_file"] = path
            img = np.clip(t["image"], 0, 1)
            buf = io.BytesIO()
            Image.fromarray(overlay(img, t["heatmap"])).save(buf, format="PNG")
            with atomic_write(path, "wb") as f:
                f.write(buf.getvalue())

    def flush(self) -> None:
        """Rewrite ``scans.csv`` and ``slices.csv`` atomically."""
        from mstl_monai.utils.io import atomic_write

        for name, cols, rows in (("scans.csv", SCAN_COLUMNS, self.scan_rows), ("slices.csv", SLICE_COLUMNS, self.slice_rows)):
            with atomic_write(os.path.join(self.output_dir, name), "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(cols)
                for r in rows:
                    w.writerow([_fmt(r.get(c), c) for c in cols])


#: how the one line per scan names where its threshold came from
_SOURCE = {"checkpoint": " (the checkpoint's, chosen on val)", "default": " (none stored with the checkpoint)"}


def _safe_name(path: str) -> str:
    """The scan's file or folder name (no NIfTI ending) and a short hash of its absolute path: two scans of one
    name in different folders (``a/scan1``, ``b/scan1``) get their own heat maps."""
    base = os.path.basename(os.path.normpath(str(path))) or "scan"
    for ext in (".nii.gz", ".nii"):
        if base.lower().endswith(ext):
            base = base[: -len(ext)]
    tag = hashlib.sha1(os.path.abspath(str(path)).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base) + "-" + tag


def run_scan_inference(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    loader: Callable[[str], torch.Tensor],
    classifier: ScanClassifier,
    writer: ScanWriter,
) -> list[dict[str, Any]]:
    """Classify every scan in ``inputs`` (see :func:`collect_scans`); print one line per scan and write the CSVs.

    A scan that cannot be read or shows no lung gets a row with its message (and a warning in the log); the
    others go on. Returns the ``scans.csv`` rows.

    Raises:
        ValueError: ``inputs`` is empty, or no scan could be classified (after writing the CSVs).
    """
    scans = collect_scans(inputs)
    if not scans:
        raise ValueError("no input scans: set --input to DICOM series folders or NIfTI files.")
    rows = []
    for scan in scans:
        try:
            result = classifier(loader(scan), name=scan)
        except (ValueError, FileNotFoundError, TypeError) as e:
            print(f"{scan}: not classified: {e}", flush=True)  # the one line about it (also in scans.csv)
            rows.append(writer.add_error(scan, e))
            continue
        row = writer.add(result)
        rows.append(row)
        pos = writer.class_names[writer.positive_class]
        gap = f"; {row['gaps']}" if row["gaps"] else ""
        ci = "not available" if row["ci_low"] is None else f"{row['ci_low']:.3f}, {row['ci_high']:.3f}"
        if row["top_slices_z_mm"]:
            top = f"top slices at z = {row['top_slices_z_mm'].replace(';', ', ')} mm"
        else:  # no heat maps asked, or no positions (then the files)
            top = "top slices " + (", ".join(os.path.basename(t["source"]) for t in result["top_slices"]) or "not asked")
        line = (
            f"{scan}: P({pos}) = {row['probability']:.3f} [95% CI {ci}] "
            f"-> {row['decision']} at threshold {writer.threshold!r}{_SOURCE.get(writer.threshold_source, '')}; "
            f"{row['slices_used']}/{row['n_slices']} slices used "
            f"({row['slices_skipped']} without enough lung skipped), {row['aggregation']}; {top}{gap}"
            + (f"; {row['message']}" if row["message"] else "")
        )
        print(line, flush=True)
    print(f"wrote {os.path.join(writer.output_dir, 'scans.csv')} and slices.csv ({len(rows)} scans)", flush=True)
    if not any(r["status"] == "ok" for r in rows):
        raise ValueError(f"none of the {len(scans)} scans could be classified; see {os.path.join(writer.output_dir, 'scans.csv')}.")
    return rows
