# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Atomic writers for metric reports (JSON) and per-image predictions (CSV)."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from monai.config import NdarrayOrTensor, PathLike

from mstl_monai.metrics.leep import _to_numpy, labels_to_indices

__all__ = ["atomic_write", "to_jsonable", "write_metrics_json", "write_predictions_csv", "read_predictions_csv"]


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it onto ``path`` with ``os.replace`` on success.

    Readers never see a half-written file; on an exception the temporary file is removed and ``path`` is
    left as it was. Missing parent folders are created.

    Args:
        path: the final file.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        open_kwargs: passed to ``open`` (e.g. ``newline=""`` for csv).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths, tuples and sets to plain JSON types.

    Non-finite floats (``nan``, ``inf``) become ``None`` so that the output is strict JSON.
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot write a value of type {type(obj).__name__} to JSON: {obj!r}")


def write_metrics_json(path: PathLike, metrics: Mapping[str, Any], indent: int = 2) -> Path:
    """Write ``metrics`` (nested dicts of numbers, strings, arrays) to ``path`` as strict JSON, atomically.

    Returns:
        the path written.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}.")
    data = to_jsonable(metrics)
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=indent, sort_keys=False, allow_nan=False)
        f.write("\n")
    return Path(path)


def write_predictions_csv(
    path: PathLike,
    names: Sequence[str],
    y_true: NdarrayOrTensor,
    probs: NdarrayOrTensor,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write one row per image: ``name, label, pred, prob_<class>...``, atomically.

    Args:
        path: the CSV file.
        names: image identifiers (e.g. file names), one per row.
        y_true: ``(n,)`` true class indices (or one-hot ``(n, C)``).
        probs: ``(n, C)`` class probabilities, or ``(n,)`` probabilities of class 1 of a binary task.
        class_names: column suffixes for the probabilities; default ``0..C-1``.

    Returns:
        the path written.
    """
    names = [str(n) for n in names]
    y = labels_to_indices(y_true, name="y_true")
    pr = _to_numpy(probs, "probs").astype(np.float64)
    if pr.ndim == 1:
        pr = np.stack([1.0 - pr, pr], axis=1)
    if pr.ndim != 2:
        raise ValueError(f"probs must have shape (n,) or (n, num_classes), got {tuple(pr.shape)}.")
    if not len(names) == y.shape[0] == pr.shape[0]:
        raise ValueError(
            f"names ({len(names)}), y_true ({y.shape[0]}) and probs ({pr.shape[0]}) must have the same length."
        )
    if class_names is None:
        class_names = [str(c) for c in range(pr.shape[1])]
    if len(class_names) != pr.shape[1]:
        raise ValueError(f"class_names has {len(class_names)} entries but probs has {pr.shape[1]} columns.")
    pred = np.argmax(pr, axis=1)
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "label", "pred"] + [f"prob_{c}" for c in class_names])
        for i, name in enumerate(names):
            writer.writerow([name, int(y[i]), int(pred[i])] + [repr(float(v)) for v in pr[i]])
    return Path(path)


def read_predictions_csv(path: PathLike) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Read a file written by :func:`write_predictions_csv`.

    Returns:
        ``(names, y_true (n,) int64, probs (n, C) float64, class_names)``.

    Raises:
        ValueError: an empty file, another header, a row with another number of fields, a label that is not an
            integer or a probability that is not a number; one line naming the file (and the line).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"predictions file {path} is empty.")
    header = rows[0]
    prob_cols = [i for i, h in enumerate(header) if h.startswith("prob_")]
    if header[:2] != ["name", "label"] or not prob_cols:
        raise ValueError(f"predictions file {path} has header {header}; expected name,label,pred,prob_<class>...")
    names, labels, probs = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"predictions file {path} line {line} has {len(row)} fields, expected {len(header)}.")
        names.append(row[0])
        try:
            labels.append(int(row[1]))
        except ValueError:
            raise ValueError(f"predictions file {path} line {line}: label {row[1]!r} is not an integer class index.") from None
        values = []
        for i in prob_cols:
            try:
                values.append(float(row[i]))
            except ValueError:
                raise ValueError(f"predictions file {path} line {line}: {header[i]} {row[i]!r} is not a number.") from None
        probs.append(values)
    return (
        names,
        np.asarray(labels, dtype=np.int64),
        np.asarray(probs, dtype=np.float64).reshape(len(names), len(prob_cols)),
        [header[i][len("prob_") :] for i in prob_cols],
    )
