# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The deploy application's operators as plain Python: DICOM series selection -> volume -> scan classifier -> SR.

:class:`ScanReportPipeline` chains them (``python -m mstl_monai.deploy``); the MONAI Deploy App SDK wrapper
(:mod:`mstl_monai.deploy.monai_deploy_app`) calls the same methods from its operators. The classifier, loader and
writer are those of the bundle's ``configs/inference_scan.yaml`` (network, input size, class names and threshold
from the checkpoint's ``model.pt.json``), so the application answers exactly as the bundle does.

Series selection rules are MONAI Deploy's ``DICOMSeriesSelectorOperator`` JSON
(``{"selections": [{"name": ..., "conditions": {"Modality": "(?i)CT", "ImageType": ["PRIMARY"]}}]}``): a string
condition matches a string attribute equal to it (case-insensitively) or containing its regular expression; a list
matches a multi-valued attribute holding every listed value (case-insensitively); a number matches an equal value;
a missing attribute never matches; an attribute name that is no DICOM keyword is refused. Then series with fewer
than ``min_slices`` images (scouts, localizers, dose reports) are passed over, and unless ``all_matched`` the study's
matching series with the most images is taken (among equally large ones the first by Series Number, then by
Series Instance UID; the line about the other says so).

.. code-block:: python

    pipeline = ScanReportPipeline("models/model.pt", "out")
    rows = pipeline.run("incoming/study_folder")   # one row per selected series, with "sr_file"
"""

from __future__ import annotations

import json
import numbers
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mstl_monai.utils.bundle import find_bundle

__all__ = ["DEFAULT_RULES", "ScanReportPipeline", "SelectedSeries", "SeriesSelector", "bundle_config"]

#: the default selection: original/primary CT images
DEFAULT_RULES: dict[str, Any] = {
    "selections": [{"name": "CT series", "conditions": {"Modality": "(?i)^CT$", "ImageType": ["ORIGINAL", "PRIMARY"]}}]
}


@dataclass(frozen=True)
class SelectedSeries:
    """A DICOM series chosen by :class:`SeriesSelector`: where it is and what it is."""

    selection: str
    folder: str
    study_uid: str
    series_uid: str
    n_images: int
    description: str = ""
    series_number: int | None = None


def _match(want: Any, value: Any) -> bool:
    if value is None or value == "":
        return False
    multi = isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue"
    if multi or isinstance(want, (list, tuple)):
        have = {str(v).strip().casefold() for v in (value if multi else [value])}
        return all(str(w).strip().casefold() in have for w in (want if isinstance(want, (list, tuple)) else [want]))
    if isinstance(want, numbers.Number) and not isinstance(want, bool):
        try:
            return float(value) == float(want)
        except (TypeError, ValueError):
            return False
    text = str(value).strip()
    return text.casefold() == str(want).casefold() or re.search(str(want), text, re.IGNORECASE) is not None


class SeriesSelector:
    """Find the DICOM series under a folder and select those to classify (rules: see the module docstring).

    Args:
        rules: selection rules as a dict, a JSON string or the path of a JSON file (None: :data:`DEFAULT_RULES`).
        all_matched: take every matching series of a study (default: the one with the most images).
        min_slices: fewest images a series needs.

    Raises:
        ValueError: rules that are not JSON or have no ``selections`` (the message names them).
    """

    def __init__(
        self, rules: str | os.PathLike | Mapping | None = None, all_matched: bool = False, min_slices: int = 10
    ) -> None:
        self.rules = self._load_rules(rules)
        self.all_matched = bool(all_matched)
        self.min_slices = int(min_slices)
        self.passed_over: list[tuple[str, str, str]] = []  # (folder, series UID, why)
        self.folders: dict[str, Any] = {}  # folder -> its DicomFolder (headers) read by the last find_series

    @staticmethod
    def _load_rules(rules: str | os.PathLike | Mapping | None) -> dict[str, Any]:
        if rules is None:
            return DEFAULT_RULES
        if isinstance(rules, Mapping):
            loaded: Any = dict(rules)
        else:
            text = Path(rules).read_text() if os.path.isfile(str(rules)) else str(rules)
            try:
                loaded = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(
                    f"series selection rules {str(rules)[:80]!r} are not JSON (nor a JSON file): {e}."
                ) from None
        sel = loaded.get("selections") if isinstance(loaded, Mapping) else None
        if not isinstance(sel, list) or not sel or not all(isinstance(s, Mapping) and s.get("conditions") for s in sel):
            raise ValueError(
                f"series selection rules need 'selections': a list of {{'name', 'conditions'}}, got {str(loaded)[:120]!r}."
            )
        for s in sel:
            if not isinstance(s["conditions"], Mapping):
                raise ValueError(f"series selection rule {s.get('name', '')!r}: 'conditions' must be a mapping "
                                 f"of DICOM attribute names to values, got {str(s['conditions'])[:80]!r}.")
            for key in s["conditions"]:
                _check_keyword(str(key), str(s.get("name", "")))
        return dict(loaded)

    def find_series(self, input_dir: str | os.PathLike) -> list[tuple[str, str, list]]:
        """Every DICOM image series under ``input_dir`` (the folder and its sub-folders): ``(folder, series UID,
        [(path, header), ...])``, in folder order. A folder whose DICOM files hold no readable image (an SR, a
        DICOMDIR, corrupt files) goes to :attr:`passed_over` with the reason.

        Raises:
            ValueError: ``input_dir`` is not a folder or holds no DICOM image (the message names it).
        """
        from mstl_monai.transforms.io.dicom_folder import _is_dicom_file, read_dicom_folder

        root = str(input_dir)
        if not os.path.isdir(root):
            raise ValueError(f"DICOM input {root!r} is not a folder.")
        found = []
        self.folders = {}
        for folder, dirs, names in sorted(os.walk(root)):
            dirs.sort()
            if not any(_is_dicom_file(os.path.join(folder, n)) for n in names):
                continue
            try:
                read = read_dicom_folder(folder)
            except ValueError as e:  # DICOM files but no readable image (an SR, a DICOMDIR, corrupt files)
                self.passed_over.append((folder, "", str(e)))
                continue
            self.folders[folder] = read
            found += [(folder, uid, items) for uid, items in read.series.items()]
        if not found:
            raise ValueError(f"DICOM input {root!r} holds no DICOM image series (its sub-folders searched too).")
        return found

    def __call__(self, input_dir: str | os.PathLike) -> list[SelectedSeries]:
        """The series to classify under ``input_dir``; :attr:`passed_over` says why the others were not taken.

        Raises:
            ValueError: no series matches (the message lists the series found and why each was passed over).
        """
        self.passed_over = []  # find_series adds the folders without a readable image
        by_study: dict[str, list[SelectedSeries]] = {}
        for folder, uid, items in self.find_series(input_dir):
            ds = items[0][1]
            name = next((s.get("name", "") for s in self.rules["selections"] if self._matches(s["conditions"], ds)), None)
            if name is None:
                self.passed_over.append((folder, uid, "matches no selection rule"))
                continue
            if len(items) < self.min_slices:
                self.passed_over.append((folder, uid, f"{len(items)} image(s) < min_slices {self.min_slices}"))
                continue
            study = str(ds.get("StudyInstanceUID", ""))
            desc = str(ds.get("SeriesDescription", "")).strip()
            by_study.setdefault(study, []).append(
                SelectedSeries(name, folder, study, uid, len(items), desc, _series_number(ds.get("SeriesNumber")))
            )
        chosen: list[SelectedSeries] = []
        for study, series in by_study.items():
            series = sorted(series, key=_selection_order)
            chosen += series if self.all_matched else series[:1]
            taken = series[0]
            for s in [] if self.all_matched else series[1:]:
                if taken.n_images > s.n_images:
                    why = (f"study {study} has a larger matching series, {taken.series_uid} "
                           f"({taken.n_images} images, this one {s.n_images})")
                else:
                    why = (f"study {study} has another matching series of the same size ({s.n_images} images): "
                           f"{taken.series_uid} was taken, the first by SeriesNumber, then SeriesInstanceUID")
                self.passed_over.append((s.folder, s.series_uid, why))
        if not chosen:
            why = "; ".join(f"{f} ({u}): {r}" for f, u, r in self.passed_over[:6])
            raise ValueError(f"no DICOM series under {str(input_dir)!r} matches the selection rules: {why}.")
        return chosen

    @staticmethod
    def _matches(conditions: Mapping[str, Any], ds: Any) -> bool:
        return all(want in (None, "") or _match(want, ds.get(key)) for key, want in conditions.items())


def _check_keyword(key: str, rule: str) -> None:
    """Refuse a selection condition on a name that is no DICOM attribute keyword (one line, with the closest)."""
    from pydicom.datadict import keyword_dict

    from mstl_monai.utils.settings import did_you_mean

    if key in keyword_dict:
        return
    hint = did_you_mean(key, list(keyword_dict), cutoff=0.75)  # ~5,000 keywords: only close ones
    raise ValueError(f"series selection rule {rule!r}: {key!r} is not a DICOM attribute keyword{hint}")


def _series_number(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _selection_order(series: SelectedSeries) -> tuple:
    """Most images first; among equals the lowest Series Number (a series without one after), then the UID."""
    number = series.series_number
    return (-series.n_images, number is None, number if number is not None else 0, series.series_uid)


def bundle_config(bundle_dir: str | os.PathLike | None = None) -> Path:
    """The bundle's ``configs/inference_scan.yaml``; the folder is ``bundle_dir``, else ``$MSTL_BUNDLE_DIR``, else
    ``bundle/`` in the current folder (:func:`~mstl_monai.utils.bundle.find_bundle`).

    Raises:
        FileNotFoundError: it is not there (the message names the folder, ``--bundle_dir`` and ``MSTL_BUNDLE_DIR``).
    """
    config = "configs/inference_scan.yaml"
    return find_bundle(bundle_dir, [config], option="--bundle_dir") / config


class ScanReportPipeline:
    """Selected DICOM series -> volume -> scan classification -> DICOM SR (+ ``scans.csv``, ``slices.csv``, heat maps).

    Args:
        ckpt_path: the classifier checkpoint (with its ``model.pt.json``).
        output_dir: where the reports go (``<output_dir>/sr/<series folder>.dcm``).
        bundle_dir: the bundle folder holding ``configs/inference_scan.yaml`` (:func:`bundle_config`).
        rules: series selection rules (:class:`SeriesSelector`).
        all_matched: classify every matching series of a study.
        min_slices: fewest images a series needs.
        overrides: further settings of ``inference_scan.yaml`` (e.g. ``{"device": "cpu", "n_bootstrap": 200}``).

    Raises:
        FileNotFoundError: no bundle config or checkpoint.
        ValueError: selection rules that cannot be used, or an override that names no setting of
            ``inference_scan.yaml`` or has a value its setting cannot take (one line, with the closest name).
    """

    def __init__(
        self,
        ckpt_path: str | os.PathLike,
        output_dir: str | os.PathLike,
        bundle_dir: str | os.PathLike | None = None,
        rules: str | os.PathLike | Mapping | None = None,
        all_matched: bool = False,
        min_slices: int = 10,
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        from monai.bundle import ConfigParser

        from mstl_monai.data import require_file
        from mstl_monai.utils.io import check_output_path
        from mstl_monai.utils.settings import check_settings

        config = bundle_config(bundle_dir)
        require_file(ckpt_path, "model checkpoint (ckpt_path)")
        check_output_path(output_dir, "output_dir", folder=True)
        check_settings(dict(overrides or {}), config)  # a misspelt or mistyped setting: one line ("did you mean")
        self.selector = SeriesSelector(rules, all_matched=all_matched, min_slices=min_slices)
        parser = ConfigParser()
        parser.read_config(str(config))
        settings = {"bundle_root": str(config.parents[1]), "ckpt_path": os.fspath(ckpt_path), "device": "cpu",
                    "output_dir": os.fspath(output_dir), "write_sr": True}
        parser.update(dict(settings, **dict(overrides or {})))
        parser.parse()
        self.loader = parser.get_parsed_content("loader")
        self.classifier = parser.get_parsed_content("classifier")
        self.writer = parser.get_parsed_content("writer")

    def select(self, input_dir: str | os.PathLike) -> list[SelectedSeries]:
        """Series selection (:class:`SeriesSelector`); prints one line per series passed over."""
        chosen = self.selector(input_dir)
        for folder, uid, why in self.selector.passed_over:
            print(f"{folder}: series {uid} passed over: {why}", flush=True)
        return chosen

    def volume(self, series: SelectedSeries) -> Any:
        """The series as a (N, 1, H, W) stack (the bundle's loader, picking the series by its UID; the headers the
        selection read are not read again)."""
        old = self.loader
        loader = type(old)(
            a_min=old.a_min, a_max=old.a_max, series_uid=series.series_uid, hu=old.hu, allow_non_ct=old.allow_non_ct
        )
        return loader(series.folder, headers=self.selector.folders.get(series.folder))

    def classify(self, stack: Any, series: SelectedSeries) -> dict[str, Any]:
        """The scan result (:class:`~mstl_monai.inferers.scan.ScanClassifier`)."""
        return self.classifier(stack, name=series.folder)

    def report(self, result: dict[str, Any]) -> dict[str, Any]:
        """Write the CSV rows, heat maps and the SR of one result; returns its row (``sr_file``: the SR). The SR
        references the slices by the headers the selection read."""
        from .writer import SRScanWriter

        found = self.selector.folders.get(str(result.get("scan")))
        if found is None or not isinstance(self.writer, SRScanWriter):
            return self.writer.add(result)
        return self.writer.add(result, headers={p: ds for items in found.series.values() for p, ds in items})

    def run(self, input_dir: str | os.PathLike) -> list[dict[str, Any]]:
        """Select, load, classify and report every selected series under ``input_dir``; a series that fails gets
        an error row (and a line) and the others go on.

        Raises:
            ValueError: no series selected, or none could be classified (the message names the input).
        """
        rows = []
        for series in self.select(input_dir):
            try:
                result = self.classify(self.volume(series), series)
            except (ValueError, FileNotFoundError, TypeError) as e:
                print(f"{series.folder}: series {series.series_uid} not classified: {e}", flush=True)
                rows.append(self.writer.add_error(series.folder, e))
                continue
            row = self.report(result)
            pos = self.writer.class_names[self.writer.positive_class]
            ci = "not available" if row["ci_low"] is None else f"{row['ci_low']:.3f}, {row['ci_high']:.3f}"
            sr = f"; SR {row['sr_file']}" if row.get("sr_file") else f"; no DICOM SR: {row.get('sr_message') or 'not asked'}"
            print(
                f"{series.folder} [{series.selection}: {series.n_images} images, series {series.series_uid}]: "
                f"P({pos}) = {row['probability']:.3f} [95% CI {ci}] -> "
                f"{row['decision']} at threshold {self.writer.threshold:.4g}; "
                f"{row['slices_used']}/{row['n_slices']} slices used{sr}",
                flush=True,
            )
            rows.append(row)
        if not any(r.get("status") == "ok" for r in rows):
            raise ValueError(f"none of the {len(rows)} selected series under {str(input_dir)!r} could be classified.")
        return rows
