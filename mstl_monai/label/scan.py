# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Scan-level inference for the MONAI Label app: the bundle's ``configs/inference_scan.yaml`` on one volume.

This module needs only the core package (no MONAI Label import), so the app's scan task
(:class:`mstl_monai.label.infers.MSTLScanInferTask`) stays a thin wrapper and the logic is tested in either
environment.

.. code-block:: python

    runner = ScanInferRunner("apps/covid/model/mstl_covid_classification")
    answer = runner("studies/patient7.nii.gz")  # {"probability": ..., "decision": ..., "top_slices": [...], ...}
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["SCAN_CONFIG", "CheckpointLoadError", "ScanInferRunner", "load_failure_message", "montage"]

#: the bundle config the scan task runs
SCAN_CONFIG = "inference_scan.yaml"


class CheckpointLoadError(RuntimeError):
    """The served checkpoint cannot be loaded; the message is one line ``cannot load models/model.pt: <cause>``."""


def load_failure_message(path: str | os.PathLike, shown: str, error: BaseException, network: Any = None) -> str:
    """One line ``cannot load <shown>: <cause>`` for a checkpoint ``path`` that did not load.

    The cause is the file's own (empty, truncated, corrupt, not a PyTorch file: as
    :func:`~mstl_monai.networks.checkpoint.read_network_state` words it), or for readable weights of another network
    than ``network``, both architectures; else the innermost error that loading raised.

    Args:
        path: the checkpoint file.
        shown: how the message names it (e.g. ``models/model.pt``: a server's answer keeps its folders out).
        error: what loading raised.
        network: the network the weights were loaded into (``torch.nn.Module``), if there is one.
    """
    from mstl_monai.networks.checkpoint import read_network_state
    from mstl_monai.networks.sidecar import _architecture, _describe

    inner = error
    while inner.__cause__ is not None:  # MONAI's config parser wraps what the expression raised
        inner = inner.__cause__
    cause = str(inner) or type(inner).__name__
    try:
        state, _ = read_network_state(path)
    except (FileNotFoundError, ValueError) as e:  # the file itself: one line naming it
        cause = str(e)
    else:
        if network is not None:
            try:
                have = _architecture(state, shown)
                want = _architecture(getattr(network, "module", network).state_dict(), "the served network")
            except ValueError:
                have = want = None
            if have != want:
                cause = (
                    f"it holds a {_describe(have)} network but the app serves a {_describe(want)} one; re-run "
                    "`python -m mstl_monai.label init --force` with this checkpoint"
                )
    cause = " ".join(cause.replace(os.fspath(path), shown).split())
    return f"cannot load {shown}: {cause if len(cause) <= 400 else cause[:400] + ' ...'}"


def montage(images: list[np.ndarray]) -> np.ndarray:
    """Put (H, W, 3) uint8 images side by side (padded to the tallest); an empty list gives a 1x1 black image."""
    if not images:
        return np.zeros((1, 1, 3), dtype=np.uint8)
    h = max(i.shape[0] for i in images)
    padded = [np.pad(i, ((0, h - i.shape[0]), (0, 0), (0, 0))) for i in images]
    return np.concatenate(padded, axis=1)


class ScanInferRunner:
    """Run ``configs/inference_scan.yaml`` of a bundle folder on one scan and answer in JSON.

    The network is built from the config's settings and loaded from ``models/model.pt``; it is reloaded when
    that file changes (after a ``/train``).

    Args:
        bundle_dir: the bundle folder (``configs/inference_scan.yaml``, ``models/model.pt``).
        overrides: further config settings (e.g. ``{"device": "cpu", "n_top": 3}``).
    """

    def __init__(self, bundle_dir: str | os.PathLike, overrides: dict[str, Any] | None = None) -> None:
        self.bundle_dir = Path(bundle_dir)
        self.config_file = self.bundle_dir / "configs" / SCAN_CONFIG
        self.ckpt_path = self.bundle_dir / "models" / "model.pt"
        self.overrides = dict(overrides or {})
        self._lock = threading.Lock()
        self._parts: tuple[Any, Any, Any] | None = None
        self._stamp: float | None = None

    def is_valid(self) -> bool:
        return self.config_file.is_file() and self.ckpt_path.is_file()

    def _load(self) -> tuple[Any, Any, Any]:
        from monai.bundle import ConfigParser

        stamp = os.path.getmtime(self.ckpt_path)
        if self._parts is None or stamp != self._stamp:
            parser = ConfigParser()
            parser.read_config(str(self.config_file))
            parser.update(
                dict({"bundle_root": str(self.bundle_dir), "ckpt_path": str(self.ckpt_path)}, **self.overrides)
            )
            parser.parse()
            self._parts = (parser.get_parsed_content("loader"), parser.get_parsed_content("classifier"), parser.get_parsed_content("writer"))
            self._stamp = stamp
        return self._parts

    def __call__(self, path: str | os.PathLike, series_uid: str | None = None) -> dict[str, Any]:
        """Classify the scan at ``path`` (a NIfTI volume or a DICOM series folder).

        Returns:
            the ``scans.csv`` row (``probability``, ``ci_low``, ``ci_high``, ``threshold``, ``decision``,
            ``slices_used``, ``slices_skipped``, ...) plus ``top_slices`` (``slice``, ``z_mm``, ``source``,
            ``probability``), ``used_slices`` (the indices) and, under the key ``_overlays``, the top slices'
            heat-map overlays as (H, W, 3) uint8 arrays (not JSON; the task turns them into a PNG).

        Raises:
            ValueError: the scan cannot be read or shows no lung (the message names it).
            CheckpointLoadError: ``models/model.pt`` (or the config) cannot be loaded (one line naming the cause).
        """
        from mstl_monai.visualize import overlay

        with self._lock:
            try:
                loader, classifier, writer = self._load()
            except Exception as e:  # config or weights: the scan is not to blame
                self._parts = None
                raise CheckpointLoadError(load_failure_message(self.ckpt_path, "models/model.pt", e)) from e
            if series_uid is not None:
                loader = type(loader)(
                    a_min=loader.a_min,
                    a_max=loader.a_max,
                    series_uid=series_uid,
                    hu=loader.hu,
                    allow_non_ct=getattr(loader, "allow_non_ct", False),
                )
            result = classifier(loader(str(path)), name=str(path))
        row = writer.summary(result)
        row["top_slices"] = [{k: t[k] for k in ("slice", "z_mm", "source", "probability")} for t in result["top_slices"]]
        row["used_slices"] = [s["slice"] for s in result["slices"] if s["used"]]
        row["slice_probabilities"] = {str(s["slice"]): s["probability"] for s in result["slices"] if s["used"]}
        row["_overlays"] = [overlay(np.clip(t["image"], 0, 1), t["heatmap"]) for t in result["top_slices"]]
        return row
