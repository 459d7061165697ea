# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The MONAI Label app's datastore: CT slices with image-level class labels, checked when they are saved.

Image ids, label ids and label tags name files inside the studies folder (``<id><ext>``, ``labels/<tag>/<id>.json``):
every method that takes one refuses a name that would reach outside it (:func:`check_name`), with a 422.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import tempfile
from pathlib import Path, PureWindowsPath
from typing import Any, Callable, Sequence

from fastapi import HTTPException
from monailabel.datastore.local import LocalDatastore

from mstl_monai.data import IMAGE_EXTENSIONS as DATA_IMAGE_EXTENSIONS
from mstl_monai.label.prepare import parse_class_label
from mstl_monai.transforms import LoadCTSlice

logger = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "ClassLabelDatastore", "check_image_file", "check_name", "discard_upload", "is_plain_name"]

#: image files the datastore lists: the CT slice files of an image-folder data set (PNG/JPEG/BMP/TIFF, DICOM, NIfTI)
IMAGE_EXTENSIONS = [f"*{ext}" for ext in DATA_IMAGE_EXTENSIONS]


def is_plain_name(value: Any) -> bool:
    """Whether ``value`` is a name that stays inside its folder: a non-empty string without ``/``, ``\\`` or NUL,
    not ``.`` or ``..``, and neither absolute nor on a drive (``C:x``)."""
    return (
        isinstance(value, str)
        and value not in ("", ".", "..")
        and not any(c in value for c in ("/", "\\", "\0"))
        and not os.path.isabs(value)
        and not PureWindowsPath(value).drive
    )


def check_name(value: Any, what: str) -> str:
    """Return ``value`` when :func:`is_plain_name`, else raise ``HTTPException(422)`` naming it (``what``: e.g.
    ``"image id"``, ``"label tag"``)."""
    if not is_plain_name(value):
        raise HTTPException(
            status_code=422,
            detail=f"{what} {value!r} is not a plain name: ids and tags name files inside the studies folder and may "
            "not be empty, '.' or '..', or contain '/', '\\', a drive or NUL.",
        )
    return value


def discard_upload(path: str, upload_dir: str | None) -> None:
    """Remove the file ``path`` if it lies in ``upload_dir`` (the server's upload folder); any other file is kept."""
    if upload_dir and os.path.dirname(os.path.realpath(path)) == os.path.realpath(upload_dir) and os.path.isfile(path):
        with contextlib.suppress(OSError):
            os.remove(path)


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


#: what each name parameter of the Datastore methods is (for the messages)
_NAME_PARAMS = {"image_id": "image id", "label_id": "label id", "label_tag": "label tag", "tag": "label tag"}
#: the LocalDatastore lookups that take names, checked by ClassLabelDatastore (add_image, save_label and
#: remove_image check theirs themselves)
CHECKED_LOOKUPS = (
    "get_image", "get_image_uri", "get_image_info", "update_image_info", "get_labels_by_image_id",
    "get_label_by_image_id", "get_label", "get_label_uri", "get_label_info", "update_label_info", "remove_label",
)


def _checking_names(method: Callable[..., Any]) -> Callable[..., Any]:
    """``method`` that first checks its name parameters (:data:`_NAME_PARAMS`) with :func:`check_name`."""
    sig = inspect.signature(method)
    named = [p for p in sig.parameters if p in _NAME_PARAMS]

    @functools.wraps(method)
    def checked(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(self, *args, **kwargs)
        for p in named:
            if p in bound.arguments:
                check_name(bound.arguments[p], _NAME_PARAMS[p])
        return method(self, *args, **kwargs)

    return checked


class ClassLabelDatastore(LocalDatastore):
    """A local MONAI Label datastore of CT slices with image-level class labels.

    A label is a JSON file ``{"label": <index>, "class_name": <name>}`` under ``labels/<tag>/<image id>.json``; it is
    parsed and checked against the classes when it is saved, so a wrong label never reaches training. Every image
    id, label id and tag a method is given must be a plain name (:func:`check_name`: 422 otherwise), so no request
    reads, writes or deletes a file outside the studies folder; entries of ``datastore_v2.json`` with other names
    are dropped when the datastore is read (with a warning).

    Args:
        datastore_path: the studies folder.
        class_names: the classifier's classes, in output order.
        upload_dir: the folder the server saves uploads to: an upload from there that :meth:`add_image` or
            :meth:`save_label` refuses is removed (MONAI Label removes only the uploads it accepts).
        kwargs: passed to :class:`~monailabel.datastore.local.LocalDatastore`.
    """

    def __init__(
        self, datastore_path: str, class_names: Sequence[str], upload_dir: str | None = None, **kwargs: Any
    ) -> None:
        self.class_names = list(class_names)
        self.upload_dir = os.path.realpath(upload_dir) if upload_dir else None
        kwargs.setdefault("extensions", IMAGE_EXTENSIONS)
        super().__init__(datastore_path, **kwargs)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        try:
            if image_id:  # empty: MONAI Label names the image after the file
                check_name(image_id, "image id")
            check_image_file(image_filename, image_id or os.path.basename(image_filename))
        except HTTPException:
            discard_upload(image_filename, self.upload_dir)
            raise
        return super().add_image(image_id, image_filename, image_info)

    def remove_image(self, image_id: str) -> None:
        check_name(image_id, "image id")
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"image {image_id!r} is not in the datastore.")
        super().remove_image(image_id)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        try:
            check_name(image_id, "image id")
            check_name(label_tag, "label tag")
            if image_id not in self._datastore.objects:
                raise HTTPException(status_code=404, detail=f"image '{image_id}' is not in the datastore; add it first.")
            try:
                idx = parse_class_label(Path(label_filename).read_bytes(), self.class_names, f"label for image '{image_id}'")
            except ValueError as e:
                raise HTTPException(status_code=422, detail=str(e)) from None
        except HTTPException:
            discard_upload(label_filename, self.upload_dir)
            raise
        with tempfile.TemporaryDirectory() as d:
            canonical = os.path.join(d, f"{image_id}.json")
            with open(canonical, "w") as f:
                json.dump({"label": idx, "class_name": self.class_names[idx]}, f)
            info = dict(label_info or {}, label=idx, class_name=self.class_names[idx])
            return super().save_label(image_id, canonical, label_tag, info)

    def _remove_non_existing(self) -> int:
        invalidate = super()._remove_non_existing()
        objects = self._datastore.objects
        for image_id in [k for k in objects if not is_plain_name(k)]:
            logger.warning(f"{self._datastore_config_path}: dropped image id {image_id!r} (not a plain name).")
            del objects[image_id]
            invalidate += 1
        for image_id, obj in objects.items():
            for tag in [t for t in obj.labels if not is_plain_name(t)]:
                logger.warning(f"{self._datastore_config_path}: dropped label tag {tag!r} of image {image_id!r} (not a plain name).")
                del obj.labels[tag]
                invalidate += 1
        return invalidate

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


for _name in CHECKED_LOOKUPS:
    setattr(ClassLabelDatastore, _name, _checking_names(getattr(LocalDatastore, _name)))
del _name
