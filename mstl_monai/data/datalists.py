# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""MONAI-style datalists (lists of dicts) for the data sets of the pipeline's stages."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "COVID_CT_CLASSES",
    "CXR_CLASSES",
    "IMAGE_EXTENSIONS",
    "covid_ct_datalist",
    "covid_ct_datalists",
    "cxr_datalist",
    "covidx_datalist",
    "image_folder_datalist",
    "natural_image_classes",
    "natural_image_datalist",
    "split_datalist",
    "unlabelled_datalist",
]

#: COVID19-CT classes in label order (COVID is the positive class 1)
COVID_CT_CLASSES = ("NonCOVID", "COVID")
#: COVIDx chest X-ray classes in label order
CXR_CLASSES = ("normal", "pneumonia", "COVID-19")
#: file name endings read as images (lower case); DICOM files may also have no extension
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom", ".nii", ".nii.gz")

_SPLITS = ("train", "val", "test")
_CXR_ALIASES = {
    "normal": 0,
    "pneumonia": 1,
    "covid-19": 2,
    "covid19": 2,
    "covid": 2,
}


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {str(path)!r} does not exist.")


def _index_by_stem(folder: Path) -> dict[str, Path]:
    """Map each file's name without extension (and its full name) to its path."""
    index: dict[str, Path] = {}
    for f in folder.iterdir():
        if f.is_file():
            index.setdefault(f.name, f)
            index.setdefault(_stem(f.name), f)
    return index


def _stem(name: str) -> str:
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else os.path.splitext(name)[0]


def covid_ct_datalist(root: str | os.PathLike, split: str) -> list[dict]:
    """Datalist of one split of COVID19-CT (UCSD-AI4H/COVID-CT layout) with its official split.

    The folder holds ``CT_COVID/``, ``CT_NonCOVID/`` and ``Data-split/{COVID,NonCOVID}/{split}CT_{cls}.txt``; the
    split files name the original images (e.g. ``1%0.jpg``) and are matched to the stored file whatever its
    extension (our copy stores ``.png``).

    Args:
        root: the COVID19-CT folder.
        split: ``"train"``, ``"val"`` or ``"test"``.

    Returns:
        list of ``{"image": absolute path, "label": 1 for COVID / 0 for NonCOVID, "name": name in the split file,
        "split": split}``, COVID images first, each in split-file order.

    Raises:
        FileNotFoundError: the folder, a class folder or a split file is missing, or a name in a split file has
            no image (the message names it and the split file).
        ValueError: an unknown split.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
    root = Path(root).expanduser().resolve()
    _require_dir(root, "COVID19-CT")
    out: list[dict] = []
    for label, cls in ((1, "COVID"), (0, "NonCOVID")):
        img_dir = root / f"CT_{cls}"
        _require_dir(img_dir, f"COVID19-CT {cls} image")
        split_file = root / "Data-split" / cls / f"{split}CT_{cls}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"COVID19-CT split file {str(split_file)!r} does not exist.")
        index = _index_by_stem(img_dir)
        with open(split_file, encoding="utf-8", errors="replace") as f:
            names = [line.strip() for line in f if line.strip()]
        for name in names:
            path = index.get(name) or index.get(_stem(name))
            if path is None:
                raise FileNotFoundError(
                    f"COVID19-CT: {name!r} listed in {split_file} has no image in {img_dir} (any extension)."
                )
            out.append({"image": str(path), "label": label, "name": name, "split": split})
    return out


def covid_ct_datalists(root: str | os.PathLike) -> dict[str, list[dict]]:
    """All three official splits of COVID19-CT: ``{"train": [...], "val": [...], "test": [...]}``."""
    return {s: covid_ct_datalist(root, s) for s in _SPLITS}


def _cxr_label(value: str, where: str) -> int:
    key = str(value).strip().lower().replace("_", "-")
    if key not in _CXR_ALIASES:
        raise ValueError(f"{where}: label {value!r} is not one of the chest X-ray classes {CXR_CLASSES}.")
    return _CXR_ALIASES[key]


def cxr_datalist(
    root: str | os.PathLike, split: str, val_fraction: float = 0.1, seed: int = 0, manifest: str = "manifest.csv"
) -> list[dict]:
    """Datalist of COVIDx-style chest X-rays from a ``manifest.csv`` (columns ``file,label,split,...``).

    Labels: 0 normal, 1 pneumonia, 2 COVID-19 (:data:`CXR_CLASSES`). The manifest has train/test only; ``"val"``
    is a seeded, stratified ``val_fraction`` of the train rows, and ``"train"`` the rest (``val_fraction=0``:
    the whole train split).

    Raises:
        FileNotFoundError: missing folder, manifest or image (named).
        KeyError: a missing manifest column. ValueError: an unknown label or split.
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}.")
    root = Path(root).expanduser().resolve()
    _require_dir(root, "chest X-ray")
    man = root / manifest
    if not man.is_file():
        raise FileNotFoundError(f"chest X-ray manifest {str(man)!r} does not exist.")
    rows: list[dict] = []
    with open(man, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        for col in ("file", "label", "split"):
            if reader.fieldnames is None or col not in reader.fieldnames:
                raise KeyError(f"chest X-ray manifest {man} has no {col!r} column (columns: {reader.fieldnames}).")
        for i, r in enumerate(reader, start=2):
            path = root / r["file"]
            label = _cxr_label(r["label"], f"{man} line {i} ({r['file']})")
            rows.append({"image": str(path), "label": label, "name": r["file"], "split": r["split"].strip()})
    return _select_split(rows, split, val_fraction, seed, str(man))


def covidx_datalist(
    txt_file: str | os.PathLike, image_dir: str | os.PathLike, split: str | None = None, val_fraction: float = 0.0, seed: int = 0
) -> list[dict]:
    """Datalist from COVIDx's own label file (``train.txt`` / ``test.txt``: ``patient_id filename label source``).

    Args:
        txt_file: the COVIDx label file.
        image_dir: folder of the images it names.
        split: ``None`` (every row), or ``"train"``/``"val"`` for a seeded stratified ``val_fraction`` split.
    """
    txt_file, image_dir = Path(txt_file), Path(image_dir)
    if not txt_file.is_file():
        raise FileNotFoundError(f"COVIDx label file {str(txt_file)!r} does not exist.")
    _require_dir(image_dir, "COVIDx image")
    rows = []
    with open(txt_file, encoding="utf-8") as f:
        for i, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 3:
                raise ValueError(f"{txt_file} line {i}: expected 'patient_id filename label [source]', got {line.strip()!r}.")
            name, label = parts[1], parts[2]
            rows.append(
                {
                    "image": str(image_dir / name),
                    "label": _cxr_label(label, f"{txt_file} line {i} ({name})"),
                    "name": name,
                    "split": "train",
                }
            )
    if split is None:
        _check_files(rows, str(txt_file))
        return rows
    return _select_split(rows, split, val_fraction, seed, str(txt_file))


def split_datalist(
    datalist: Sequence[dict], split: str, val_fraction: float = 0.1, seed: int = 0, label_key: str = "label"
) -> list[dict]:
    """Seeded, stratified train/val split of a labelled datalist (for data sets shipped without a val split).

    Args:
        datalist: items with a ``label_key``.
        split: ``"train"`` or ``"val"``.
        val_fraction: share of each class held out for validation (at least one image per class when the class
            has two or more).
        seed: the split depends only on the seed and the datalist's order.
    """
    import numpy as np

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}.")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in (0, 1), got {val_fraction}.")
    rng = np.random.default_rng(seed)
    by_class: dict[Any, list[int]] = {}
    for i, item in enumerate(datalist):
        if label_key not in item:
            raise KeyError(f"datalist item {i} has no {label_key!r} key: {item}")
        by_class.setdefault(item[label_key], []).append(i)
    val_idx: set[int] = set()
    for _, idx in sorted(by_class.items(), key=lambda kv: str(kv[0])):
        n_val = int(round(len(idx) * val_fraction))
        if len(idx) >= 2:
            n_val = min(max(n_val, 1), len(idx) - 1)
        val_idx.update(rng.permutation(idx)[:n_val].tolist())
    return [dict(item) for i, item in enumerate(datalist) if (i in val_idx) == (split == "val")]


def _select_split(rows: list[dict], split: str, val_fraction: float, seed: int, source: str) -> list[dict]:
    if split == "test":
        out = [r for r in rows if r["split"] == "test"]
    else:
        train = [r for r in rows if r["split"] == "train"]
        if val_fraction > 0:
            out = split_datalist(train, split, val_fraction=val_fraction, seed=seed)
        else:
            out = train if split == "train" else []
        for r in out:
            r["split"] = split
    _check_files(out, source)
    return out


def _check_files(rows: Sequence[dict], source: str) -> None:
    for r in rows:
        if not os.path.isfile(r["image"]):
            raise FileNotFoundError(f"{source} names {r['name']!r}, but {r['image']!r} does not exist.")


def _is_image(name: str) -> bool:
    low = name.lower()
    return low.endswith(IMAGE_EXTENSIONS)


def image_folder_datalist(root: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """Datalist of an image-folder data set (one sub-folder per class, e.g. ImageNet's ``train/``).

    Returns:
        ``(datalist, class_names)``: class indices follow the sorted folder names; items are
        ``{"image", "label", "name"}``.
    """
    root = Path(root).expanduser().resolve()
    _require_dir(root, "image-folder data set")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"image-folder data set {root} has no class sub-folders.")
    out = []
    for label, cls in enumerate(classes):
        for dirpath, _, files in sorted(os.walk(root / cls)):
            for f in sorted(files):
                if _is_image(f):
                    p = Path(dirpath) / f
                    out.append({"image": str(p), "label": label, "name": str(p.relative_to(root))})
    if not out:
        raise ValueError(f"image-folder data set {root} holds no image files ({IMAGE_EXTENSIONS}).")
    return out, classes


def natural_image_classes(root: str | os.PathLike) -> list[str]:
    """Class ids (e.g. ImageNet ``wnid`` values) of a natural-image data set, in label order.

    The order is the one of ``<root>/wnids.txt`` (one id a line, as Tiny ImageNet ships it) when that file exists,
    otherwise the sorted class folders of ``<root>/train`` (torchvision's ``ImageFolder`` order, which for ImageNet
    is the order of its checkpoints' 1000 outputs), otherwise the sorted class folders of ``root`` itself.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: ``wnids.txt`` is empty or repeats an id, or there are no class folders (the message names the
            folder or file).
    """
    root = Path(root).expanduser().resolve()
    _require_dir(root, "natural-image data set")
    wnids = root / "wnids.txt"
    if wnids.is_file():
        classes = [line.strip() for line in wnids.read_text().splitlines() if line.strip()]
        if not classes:
            raise ValueError(f"class list {wnids} is empty.")
        dup = sorted({c for c in classes if classes.count(c) > 1})
        if dup:
            raise ValueError(f"class list {wnids} repeats {dup[:5]}.")
        return classes
    folder = root / "train" if (root / "train").is_dir() else root
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(f"natural-image data set {folder} has no class sub-folders (expected <class>/<image> files).")
    return classes


def natural_image_datalist(
    root: str | os.PathLike, split: str, val_fraction: float = 0.05, seed: int = 0
) -> list[dict]:
    """Datalist of an ImageNet-style natural-image folder (STL-N's source), e.g. Tiny ImageNet or ImageNet itself.

    Layout: ``<root>/train/<class>/**/<image>`` and, optionally, ``<root>/val/<class>/**/<image>`` (ImageNet's
    validation images sorted into class folders), with an optional ``<root>/wnids.txt`` fixing the class order
    (:func:`natural_image_classes`). A folder without ``train/`` is read as one image-folder set
    (``<root>/<class>/<image>``).

    Splits:
        ``"train"`` / ``"val"``: a seeded, stratified split of the *train* images (``val_fraction`` of each class held
        out), used to train and to choose the checkpoint; ``"test"``: the images of ``<root>/val`` (or, when there is
        none, the held-out ``"val"`` split), scored once for the source's top-1 (Table 1).

    Returns:
        items ``{"image": path, "label": class index, "name": path relative to root}``.

    Raises:
        FileNotFoundError: a missing folder (named).
        ValueError: an unknown split, a class folder in ``val/`` that ``train``'s classes lack, or a class without
            images (named).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}.")
    root = Path(root).expanduser().resolve()
    classes = natural_image_classes(root)
    index = {c: i for i, c in enumerate(classes)}
    train_dir = root / "train" if (root / "train").is_dir() else root
    val_dir = root / "val"
    if split == "test" and val_dir.is_dir() and train_dir != root:
        return _class_folder_items(val_dir, index, root, require_all=False)
    items = _class_folder_items(train_dir, index, root, require_all=True)
    return split_datalist(items, "val" if split == "test" else split, val_fraction=val_fraction, seed=seed)


def _class_folder_items(folder: Path, index: dict[str, int], root: Path, require_all: bool) -> list[dict]:
    found = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    unknown = [c for c in found if c not in index]
    if unknown:
        raise ValueError(f"{folder} has class folders {unknown[:5]} that the class list ({len(index)} ids) lacks.")
    out = []
    for cls in found:
        n = len(out)
        for dirpath, _, files in sorted(os.walk(folder / cls)):
            for f in sorted(files):
                if _is_image(f):
                    p = Path(dirpath) / f
                    out.append({"image": str(p), "label": index[cls], "name": str(p.relative_to(root))})
        if len(out) == n:
            raise ValueError(f"class folder {folder / cls} holds no image files ({IMAGE_EXTENSIONS}).")
    if require_all:
        missing = [c for c in index if c not in set(found)]
        if missing:
            raise ValueError(f"{folder} lacks class folders {missing[:5]} ({len(missing)} of {len(index)} classes).")
    return out


def unlabelled_datalist(roots: str | os.PathLike | Sequence[str | os.PathLike]) -> list[dict]:
    """Every image file under one or more folders (recursively, sorted): ``[{"image": path, "name": ...}]``.

    Used for unlabelled slices (LUNA16) in the self-supervised stage.
    """
    if isinstance(roots, (str, os.PathLike)):
        roots = [roots]
    out = []
    for root in roots:
        root = Path(root).expanduser().resolve()
        _require_dir(root, "unlabelled image")
        for dirpath, _, files in sorted(os.walk(root)):
            for f in sorted(files):
                if _is_image(f):
                    p = Path(dirpath) / f
                    out.append({"image": str(p), "name": str(p.relative_to(root))})
    if not out:
        raise ValueError(f"no image files ({IMAGE_EXTENSIONS}) under {[str(r) for r in roots]}.")
    return out
