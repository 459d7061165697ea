# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The MONAI Label app's datastore: CT slices with image-level class labels, checked when they are saved."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from mstl_monai.data import IMAGE_EXTENSIONS as DATA_IMAGE_EXTENSIONS
from mstl_monai.label.prepare import parse_class_label
from mstl_monai.transforms import LoadCTSlice

__all__ = ["IMAGE_EXTENSIONS", "ClassLabelDatastore", "check_image_file"]

#: image files the datastore lists: the CT slice files of an image-folder data set (PNG/JPEG/BMP/TIFF, DICOM, NIfTI)
IMAGE_EXTENSIONS = [f"*{ext}" for ext in DATA_IMAGE_EXTENSIONS]


def check_image_file(path: str, shown_name: str) -> None:
    """Raise ``HTTPException(415)`` unless ``path`` is a CT slice ``LoadCTSlice`` can read."""
    name = os.path.basename(path)
    if not any(Path(name.lower()).match(e) for e in IMAGE_EXTENSIONS):
        raise HTTPException(
            status_code=415, detail=f"'{shown_name}' is not a supported image file; use one of {IMAGE_EXTENSIONS}."
        )
    try:
        img = LoadCTSlice()(path)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise HTTPException(status_code=415, detail=f"'{shown_name}' is not a readable image: {e}") from None
    if float(img.max()) == float(img.min()):
        raise HTTPException(status_code=422, detail=f"'{shown_name}' is a constant image: nothing to classify.")


class ClassLabelDatastore(LocalDatastore):
    """A local MONAI Label datastore of CT slices with image-level class labels.

    A label is a JSON file ``{"label": <index>, "class_name": <name>}`` under ``labels/<tag>/<image id>.json``; it is
    parsed and checked against the classes when it is saved, so a wrong label never reaches training.

    Args:
        datastore_path: the studies folder.
        class_names: the classifier's classes, in output order.
        kwargs: passed to :class:`~monailabel.datastore.local.LocalDatastore`.
    """

    def __init__(self, datastore_path: str, class_names: Sequence[str], **kwargs: Any) -> None:
        self.class_names = list(class_names)
        kwargs.setdefault("extensions", IMAGE_EXTENSIONS)
        super().__init__(datastore_path, **kwargs)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        check_image_file(image_filename, image_id or os.path.basename(image_filename))
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"image '{image_id}' is not in the datastore; add it first.")
        try:
            idx = parse_class_label(Path(label_filename).read_bytes(), self.class_names, f"label for image '{image_id}'")
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        with tempfile.TemporaryDirectory() as d:
            canonical = os.path.join(d, f"{image_id}.json")
            with open(canonical, "w") as f:
                json.dump({"label": idx, "class_name": self.class_names[idx]}, f)
            info = dict(label_info or {}, label=idx, class_name=self.class_names[idx])
            return super().save_label(image_id, canonical, label_tag, info)

    def _list_files(self, path: str, patterns: Sequence[str]) -> dict[str, str]:
        # label files are JSON, which the image extensions do not match: list them in the label folders
        labels_root = os.path.realpath(self._datastore.label_path(None))
        if os.path.realpath(path).startswith(labels_root):
            patterns = [*patterns, "*.json"]
        return super()._list_files(path, patterns)

    def class_datalist(self) -> list[dict[str, Any]]:
        """``[{"image": path, "label": class index}]`` for every image with a final label.

        Raises:
            ValueError: a label file is unreadable or names no class (the message names the file).
        """
        out = []
        for item in self.datalist():
            path = item["label"]
            try:
                text = Path(path).read_bytes()
            except OSError as e:
                raise ValueError(f"cannot read the label file {path}: {e}") from None
            out.append({"image": item["image"], "label": parse_class_label(text, self.class_names, path)})
        return out
