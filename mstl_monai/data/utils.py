# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Datalist checks and inference inputs: fail before training on a bad datalist; the files of a list of inputs."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from mstl_monai.data.datalists import IMAGE_EXTENSIONS

__all__ = ["check_datalist", "collect_files", "require_file"]

logger = logging.getLogger(__name__)


def check_datalist(
    datalist: Sequence[dict],
    num_classes: int,
    name: str = "data",
    root: str | None = None,
    class_names: Sequence[str] | None = None,
    for_training: bool = False,
    require_all_classes: bool = True,
) -> list[dict]:
    """Fail before training starts when a datalist is empty, lacks keys, names missing files or bad labels, lacks a
    class, or (a training set) has too few images for BatchNorm's batch statistics.

    Every stage's datalists pass here (the bundle's ``train#dataset`` / ``validate#dataset``), so a split without
    one of the classes stops the run instead of training to a checkpoint chosen by an undefined (NaN) val AUC.

    Args:
        datalist: list of ``{"image": path, "label": int}`` dicts.
        num_classes: labels must lie in ``[0, num_classes)``.
        name: the split's name for messages (``train``, ``val``, ...).
        root: the data folder, quoted in messages.
        class_names: the classes' names, quoted in messages (default: their indices only).
        for_training: the datalist is trained on: at least 2 images (BatchNorm normalises each batch by its own
            mean and variance, which one image does not have).
        require_all_classes: a class without images is an error; False: a warning (e.g. for an evaluation, whose
            AUC is then undefined).

    Raises:
        ValueError: an empty datalist, a bad label, too few training images, a missing class; KeyError: an item
            without ``image`` or ``label``; FileNotFoundError: a missing image. One line naming the split.
    """
    where = f" (dataset_dir={root})" if root else ""
    if len(datalist) == 0:
        raise ValueError(f"the {name} datalist is empty{where}.")
    for i, item in enumerate(datalist):
        for key in ("image", "label"):
            if key not in item:
                raise KeyError(f"{name} datalist item {i} has no {key!r} key: {item}")
        if not os.path.isfile(str(item["image"])):
            raise FileNotFoundError(f"{name} datalist item {i}: image file {item['image']!r} does not exist{where}.")
        label = item["label"]
        try:
            ok = int(label) == label and 0 <= int(label) < num_classes
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"{name} datalist item {i} ({item['image']}): label {label!r} is outside the classes 0..{num_classes - 1}."
            )
    if for_training and len(datalist) < 2:
        raise ValueError(
            f"the {name} split{where} has {len(datalist)} image: training needs at least 2 (BatchNorm normalises "
            "each batch by its own statistics, which one image does not have: it would stop with 'Expected more "
            "than 1 value per channel when training'). Add training images."
        )
    present = {int(item["label"]) for item in datalist}
    missing = [c for c in range(int(num_classes)) if c not in present]
    if missing:
        named = ", ".join(
            f"{c} ({class_names[c]})" if class_names is not None and c < len(class_names) else str(c) for c in missing[:5]
        )
        more = f", ... ({len(missing)} of {num_classes})" if len(missing) > 5 else ""
        count = f" ({len(missing)} of {num_classes})" if len(missing) > 1 and not more else ""
        msg = (
            f"the {name} split{where} has no image of class{'es' if len(missing) > 1 else ''} {named}{more}{count}: "
        )
        if not require_all_classes:
            logger.warning(msg + "its AUC (and that class's sensitivity or specificity) is undefined (NaN).")
        else:
            raise ValueError(
                msg + "every class needs images in every split (a class missing from train is never learnt; one "
                "missing from val makes the val AUC that picks the checkpoint undefined). Fix the split files or "
                "the class folders."
            )
    return list(datalist)


def require_file(path: str | os.PathLike, what: str = "file") -> str:
    """Return ``path`` when it is an existing file, else raise ``FileNotFoundError`` naming it and ``what``."""
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
    return str(path)


def collect_files(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand files and folders into a list of files: folders are searched recursively (sorted) for image files,
    including extension-less files (DICOM); files named directly are kept as given, checked later by the loader."""
    files: list[str] = []
    for entry in inputs:
        entry = str(entry)
        if os.path.isdir(entry):
            for root, _, names in sorted(os.walk(entry)):
                files.extend(
                    os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_EXTENSIONS) or "." not in n
                )
        else:
            files.append(entry)
    return files
