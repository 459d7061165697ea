# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Atomic writers for metric reports (JSON) and per-image predictions (CSV).

``atomic_write`` and ``to_jsonable`` live in :mod:`mstl_monai.utils.io`; the names here are deprecated aliases.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monai.config import NdarrayOrTensor, PathLike
from monai.utils import deprecated

from mstl_monai import __version__
from mstl_monai.metrics.leep import labels_to_indices
from mstl_monai.utils import io as _io
from mstl_monai.utils.type_conversion import to_numpy

__all__ = [
    "PREDICTION_COLUMNS",
    "prediction_fields",
    "prediction_header",
    "read_predictions_csv",
    "write_metrics_json",
    "write_predictions_csv",
]


def write_metrics_json(path: PathLike, metrics: Mapping[str, Any], indent: int = 2) -> Path:
    """Write ``metrics`` (nested dicts of numbers, strings, arrays) to ``path`` as strict JSON, atomically.

    Returns:
        the path written.
    """
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping, got {type(metrics).__name__}.")
    data = _io.to_jsonable(metrics)
    with _io.atomic_write(path, "w") as f:
        json.dump(data, f, indent=indent, sort_keys=False, allow_nan=False)
        f.write("\n")
    return Path(path)


#: the columns of ``predictions.csv`` before the probabilities and after them (an evaluation adds ``label``)
PREDICTION_COLUMNS = (("file", "pred", "pred_class"), ("threshold", "lung_found", "lung_box_fraction"))


def prediction_header(class_names: Sequence[str], label: bool = False) -> list[str]:
    """The header of ``predictions.csv``: ``file, pred, pred_class, prob_<class>..., threshold, lung_found,
    lung_box_fraction`` (inference and evaluation), then ``label`` (evaluation)."""
    head, tail = PREDICTION_COLUMNS
    return [*head, *(f"prob_{c}" for c in class_names), *tail, *(["label"] if label else [])]


def _csv_field(s: str) -> str:
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n') else s


def prediction_fields(
    name: str,
    probs: Sequence[float] | np.ndarray,
    class_names: Sequence[str],
    threshold: float = 0.5,
    positive_class: int = 1,
    lung_found: bool | None = None,
    lung_box_fraction: float | None = None,
    label: int | None = None,
    exact: bool = False,
) -> tuple[int, list[str]]:
    """One row of ``predictions.csv`` (:func:`prediction_header`): the decision and the fields as CSV text.

    ``pred`` is the positive class when its probability exceeds ``threshold`` in a binary task, the argmax
    otherwise (:func:`~mstl_monai.metrics.classification.thresholded_index`); ``threshold`` is written for a binary
    task only. ``label`` (an evaluation's true class) is added when given. Probabilities have 6 decimals, or with
    ``exact`` every digit of the float (an evaluation's, read back for its statistics).

    Returns:
        ``(pred, fields)``.
    """
    from mstl_monai.metrics.classification import thresholded_index

    p = np.asarray(probs).reshape(-1)  # its own dtype: float32 scores are decided in float32, as the writer always did
    k = thresholded_index(p, threshold, positive_class)
    t = f"{threshold:.6g}" if p.size == 2 else ""
    found = "" if lung_found is None else str(bool(lung_found))
    frac = "" if lung_box_fraction is None else f"{lung_box_fraction:.4f}"
    fields = [_csv_field(str(name)), str(k), _csv_field(str(class_names[k]))] + [repr(float(v)) if exact else f"{v:.6f}" for v in p]
    fields += [t, found, frac] + ([] if label is None else [str(int(label))])
    return k, fields


def write_predictions_csv(
    path: PathLike,
    names: Sequence[str],
    y_true: NdarrayOrTensor,
    probs: NdarrayOrTensor,
    class_names: Sequence[str] | None = None,
    threshold: float = 0.5,
    positive_class: int = 1,
) -> Path:
    """Write an evaluation's predictions, one row per image, atomically: the columns of an inference run's
    ``predictions.csv`` (:func:`prediction_header`; ``pred`` decided at ``threshold``) and ``label``.

    Args:
        path: the CSV file.
        names: image identifiers (e.g. file names), one per row.
        y_true: ``(n,)`` true class indices (or one-hot ``(n, C)``).
        probs: ``(n, C)`` class probabilities, or ``(n,)`` probabilities of class 1 of a binary task.
        class_names: column suffixes for the probabilities; default ``0..C-1``.
        threshold: the decision threshold on the ``positive_class`` probability of a binary task (argmax otherwise).
        positive_class: the class whose probability is thresholded.

    Returns:
        the path written.
    """
    names = [str(n) for n in names]
    y = labels_to_indices(y_true, name="y_true")
    pr = to_numpy(probs, "probs").astype(np.float64)
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
    with _io.atomic_write(path, "w", newline="") as f:
        f.write(",".join(prediction_header(class_names, label=True)) + "\n")
        for i, name in enumerate(names):
            _, fields = prediction_fields(
                name, pr[i], class_names, threshold, positive_class, label=int(y[i]), exact=True
            )
            f.write(",".join(fields) + "\n")
    return Path(path)


def read_predictions_csv(path: PathLike) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Read an evaluation's ``predictions.csv``: the columns :func:`write_predictions_csv` writes (``file, pred,
    pred_class, prob_<class>..., threshold, lung_found, lung_box_fraction, label``) or those of earlier releases
    (``name, label, pred, prob_<class>...``, e.g. the published results).

    Returns:
        ``(names, y_true (n,) int64, probs (n, C) float64, class_names)``.

    Raises:
        ValueError: an empty file, another header (an inference run's file has no ``label``), a row with another
            number of fields, a label that is not an integer or a probability that is not a number; one line naming
            the file (and the line).
    """
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"predictions file {path} is empty.")
    header = rows[0]
    prob_cols = [i for i, h in enumerate(header) if h.startswith("prob_")]
    if header[:2] == ["name", "label"]:  # earlier releases
        name_col, label_col = 0, 1
    elif header[:1] == ["file"] and "label" in header:
        name_col, label_col = 0, header.index("label")
    else:
        name_col = label_col = None
    if label_col is None or not prob_cols:
        raise ValueError(
            f"predictions file {path} has header {header}; expected an evaluation's "
            f"{','.join(prediction_header(['<class>'], label=True))} (or name,label,pred,prob_<class>...)."
        )
    names, labels, probs = [], [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise ValueError(f"predictions file {path} line {line} has {len(row)} fields, expected {len(header)}.")
        names.append(row[name_col])
        try:
            labels.append(int(row[label_col]))
        except ValueError:
            raise ValueError(
                f"predictions file {path} line {line}: label {row[label_col]!r} is not an integer class index."
            ) from None
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


def _moved(func: Any) -> Any:
    return deprecated(
        since="0.1.0",
        removed="0.2.0",
        msg_suffix=f"import it from mstl_monai.utils.io ({func.__name__} moved there).",
        version_val=__version__,
    )(func)


def __getattr__(name: str) -> Any:
    """The old homes of ``atomic_write`` and ``to_jsonable`` (``mstl_monai.metrics.io``), one release, with a warning."""
    if name in ("atomic_write", "to_jsonable"):
        return _moved(getattr(_io, name))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
