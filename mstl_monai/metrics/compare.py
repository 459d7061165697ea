# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Is model a better than model b on the same test images? Paired differences with CIs, over seeds when given.

Each arm is one or more ``predictions.csv`` files written by the bundle's evaluation (or the folders that hold one,
e.g. ``results/cpu_scale/<chain>``): one file per seed. The images of every file must be the same (matched by name
and label, in any order). The difference a - b of accuracy, F1, AUC, sensitivity and specificity comes with a 95%
CI from :func:`~mstl_monai.metrics.seed_paired_difference`: a bootstrap over the test images, paired between the
arms, and over each arm's seeds when it has several (with one file per arm it is the plain paired bootstrap). The
seed ensembles (mean probability over each arm's seeds) are compared too when an arm has several seeds.

.. code-block:: bash

    # MAG-SD vs plain finetune of the same chain, seeds 0 and 1 of each
    python -m mstl_monai.metrics compare \\
        --a results/cpu_scale/r18_base_stln_stlm_sstl_ours_robust_magsd results/cpu_scale/r18_base_stln_stlm_sstl_ours_robust_magsd_ft_s1 \\
        --b results/cpu_scale/r18_base_stln_stlm_sstl_ours_robust results/cpu_scale/r18_base_stln_stlm_sstl_ours_robust_ft_s1
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .io import read_predictions_csv
from .seeds import seed_paired_difference

__all__ = [
    "aligned_probs",
    "compare_predictions",
    "image_keys",
    "load_arm",
    "match_rows",
    "read_binary_predictions",
    "undefined_metrics",
]


def _predictions_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "predictions.csv"
    if not p.is_file():
        raise FileNotFoundError(f"no predictions file at {p} (give a predictions.csv or the folder holding one).")
    return p


def read_binary_predictions(path: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """A two-class predictions file, checked: ``(names, y (n,), class-1 probabilities (n,), the two class names)``.

    Raises:
        ValueError: not two probability columns, a label other than 0/1, or a probability that is NaN, infinite or
            outside [0, 1]; one line naming the file (and the line and image).
    """
    names, y, probs, classes = read_predictions_csv(path)
    if probs.shape[1] != 2:
        cols = ", ".join(f"prob_{c}" for c in classes)
        raise ValueError(
            f"{path} has {probs.shape[1]} probability column{'s' if probs.shape[1] != 1 else ''} ({cols}): compare "
            "needs the two columns of a two-class model (prob_<negative class>, prob_<positive class>)."
        )
    bad = np.flatnonzero((y < 0) | (y > 1))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{path} line {i + 2} ({names[i]}): label {y[i]} is not 0 or 1 (a two-class test set).")
    ok = np.isfinite(probs) & (probs >= 0) & (probs <= 1)
    if not ok.all():
        i, j = (int(v) for v in np.argwhere(~ok)[0])
        raise ValueError(
            f"{path} line {i + 2} ({names[i]}): prob_{classes[j]}={float(probs[i, j])} is not a probability in [0, 1]."
        )
    return names, y, probs[:, 1], classes


def _same_classes(files: Sequence[Path]) -> None:
    """Every file has the class columns of the first."""
    first = read_binary_predictions(files[0])[3]
    for f in files[1:]:
        classes = read_binary_predictions(f)[3]
        if classes != first:
            raise ValueError(
                f"{f} has the class columns {', '.join(f'prob_{c}' for c in classes)} but {files[0]} has "
                f"{', '.join(f'prob_{c}' for c in first)}: compare predictions of models with the same classes."
            )


def image_keys(names: Sequence, labels: Sequence) -> list[tuple[str, int]]:
    """``(name, label)`` of each row of a predictions file: what identifies a test image across runs."""
    return [(str(n), int(y)) for n, y in zip(names, labels)]


def match_rows(ref: Sequence[tuple[str, int]], keys: Sequence[tuple[str, int]]) -> list[int] | None:
    """The row of ``keys`` holding each image of ``ref``, ``None`` when one of them is not in ``keys``."""
    pos = {k: i for i, k in enumerate(keys)}
    try:
        return [pos[k] for k in ref]
    except KeyError:
        return None


def aligned_probs(files: Sequence[str | os.PathLike], ref: Sequence[tuple[str, int]]) -> np.ndarray | None:
    """``(K, n)`` class-1 probabilities of the predictions ``files`` on the images ``ref`` (:func:`image_keys`), in
    that order; ``None`` when a file scored other images than ``ref``.

    Raises:
        ValueError: a file that is not a valid two-class predictions file (:func:`read_binary_predictions`).
    """
    out = np.empty((len(files), len(ref)))
    for k, f in enumerate(files):
        names, labels, p1, _ = read_binary_predictions(f)
        keys = image_keys(names, labels)
        rows = match_rows(ref, keys) if len(keys) == len(ref) else None
        if rows is None:
            return None
        out[k] = p1[rows]
    return out


def load_arm(paths: Sequence[str | os.PathLike], ref: Sequence[tuple[str, int]] | None = None
             ) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """``(images, y (n,), probs (K, n))`` of one arm: the class-1 probability from each of its ``K`` predictions files
    (or folders holding a ``predictions.csv``), rows in the order of ``ref`` (:func:`image_keys`; default: the first
    file's images).

    Raises:
        FileNotFoundError: a path holds no predictions file.
        ValueError: a file scored other images (name and label) than ``ref``, has other class columns than the
            arm's first file, or is not a valid two-class predictions file (:func:`read_binary_predictions`); naming it.
    """
    if not paths:
        raise ValueError("an arm needs at least one predictions file.")
    files = [_predictions_file(p) for p in paths]
    _same_classes(files)
    rows = []
    if ref is None:
        names, y, p1, _ = read_binary_predictions(files[0])
        ref = image_keys(names, y)
        if len(set(ref)) != len(ref):
            raise ValueError(f"{files[0]} lists an image twice; cannot pair images.")
        rows.append(p1)
    for f in files[len(rows):]:
        p = aligned_probs([f], ref)
        if p is None:
            names, labels, _, _ = read_binary_predictions(f)
            label_of = dict(zip(names, (int(v) for v in labels)))
            if len(names) == len(ref) and set(label_of) == {k[0] for k in ref}:
                first = next(k for k in ref if label_of[k[0]] != k[1])
                raise ValueError(f"{f} scores the same images as the first file of the comparison but with other "
                                 f"labels (first: {first[0]!r}, label {label_of[first[0]]} there, {first[1]} in the "
                                 "first file); compare predictions of the same test split.")
            raise ValueError(f"{f} holds other images than the first file of the comparison ({len(ref)} images); "
                             "compare predictions of the same test split.")
        rows.append(p[0])
    return list(ref), np.array([k[1] for k in ref], dtype=np.int64), np.stack(rows)


def compare_predictions(a: Sequence[str | os.PathLike], b: Sequence[str | os.PathLike], n_bootstrap: int = 1000,
                        seed: int = 0, threshold: float = 0.5) -> dict:
    """:func:`~mstl_monai.metrics.seed_paired_difference` of arm ``a`` minus arm ``b`` (:func:`load_arm`: one
    predictions file per seed, b's images matched to a's), with the files under ``"files"``."""
    if not 0.0 < float(threshold) < 1.0:  # NaN fails too
        raise ValueError(f"threshold {threshold!r} must lie strictly between 0 and 1 (a probability cut-off).")
    _same_classes([_predictions_file(a[0]), _predictions_file(b[0])] if a and b else [])
    ref, y, pa = load_arm(a)
    _, _, pb = load_arm(b, ref)
    out = seed_paired_difference(y, pa, pb, n_bootstrap=n_bootstrap, seed=seed, threshold=threshold)
    out["files"] = {arm: [str(_predictions_file(f)) for f in files] for arm, files in (("a", a), ("b", b))}
    out["undefined"] = undefined_metrics(y, read_binary_predictions(_predictions_file(a[0]))[3])
    return out


def undefined_metrics(y: np.ndarray, class_names: Sequence[str] = ("0", "1")) -> dict[str, str]:
    """Why metrics are undefined on test labels ``y`` (binary): ``{metric: reason}``, empty when both classes occur."""
    n, pos = len(y), int(np.sum(y == 1))
    if 0 < pos < n:
        return {}
    have, lack = (1, 0) if pos else (0, 1)
    why = f"all {n} test images are of class {have} ({class_names[have]})"
    out = {"auc": f"{why}; AUC needs images of both classes"}
    out["specificity" if lack == 0 else "sensitivity"] = f"{why}: no image of class {lack} ({class_names[lack]})"
    return out



if __name__ == "__main__":  # the old command line, one release; the package's own is metrics/__main__.py
    import runpy

    print(f"python -m {__spec__.name} is deprecated: use python -m mstl_monai.metrics compare", file=sys.stderr)
    sys.argv[1:1] = ["compare"]
    runpy.run_module("mstl_monai.metrics", run_name="__main__", alter_sys=True)
