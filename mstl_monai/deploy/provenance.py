# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""What a deployed answer rests on: the model's name, package version, weights hash and recorded training data.

.. code-block:: python

    model = model_description("runs/.../finetune/models/model.pt")
    model["name"], model["weights_sha256"], model["training_data"]
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["TRAINING_DATA_KEYS", "file_sha256", "model_description"]

#: where a checkpoint's settings file (``model.pt.json``) records its training data: ``provenance.trained_on``, which
#: ``scripts/ship_model.py`` writes (the settings file's schema, ``networks/sidecar.py``, allows no other field)
TRAINING_DATA_KEYS = ("provenance.trained_on",)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The SHA-256 hex digest of a file.

    Raises:
        FileNotFoundError: ``path`` is not a file (the message names it).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"cannot hash {os.fspath(path)!r}: not a file.")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def _network_name(settings: Mapping[str, Any]) -> str:
    name = str(settings.get("backbone", "unknown"))
    if settings.get("n_attn"):
        name += f" +{int(settings['n_attn'])} ATTN"
    if settings.get("attention_maps"):
        name += f" (MAG-SD, {int(settings['attention_maps'])} attention maps)"
    return name


def _lookup(settings: Mapping[str, Any], dotted: str) -> Any:
    value: Any = settings
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _training_data(settings: Mapping[str, Any]) -> str | None:
    for key in TRAINING_DATA_KEYS:
        value = _lookup(settings, key)
        if value in (None, "", [], {}):
            continue
        if isinstance(value, Mapping):
            return "; ".join(f"{k}: {v}" for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return "; ".join(str(v) for v in value)
        return str(value)
    return None


def model_description(ckpt_path: str | os.PathLike, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Describe the classifier in ``ckpt_path`` for a report.

    Args:
        ckpt_path: the checkpoint (``model.pt``); its bytes are hashed.
        settings: its settings (:func:`~mstl_monai.networks.checkpoint.checkpoint_settings`); read from ``<ckpt_path>.json``
            (or the weights) when not given.

    Returns:
        ``{"name", "network", "package", "version", "weights_file", "weights_sha256", "stage", "image_size",
        "training_data", "training_data_source", "settings_source", "temperature"}`` (``temperature``: the
        calibration the finetune stored, None without one). ``training_data`` is the value the
        checkpoint's settings file records under one of :data:`TRAINING_DATA_KEYS`, else None, and
        ``training_data_source`` says which (or that it is not recorded).

    Raises:
        FileNotFoundError, ValueError: the checkpoint is missing or unreadable (the message names it).
    """
    import mstl_monai
    from mstl_monai.networks.checkpoint import checkpoint_settings
    from mstl_monai.networks.sidecar import info_path

    path = os.fspath(ckpt_path)
    if settings is None:
        settings = checkpoint_settings(path)
    training = _training_data(settings)
    key = next((k for k in TRAINING_DATA_KEYS if _lookup(settings, k) not in (None, "", [], {})), None)
    network = _network_name(settings)
    return {
        "name": f"mstl-monai COVID-19 CT classifier ({network})",
        "network": network,
        "package": "mstl-monai",
        "version": str(mstl_monai.__version__),
        "weights_file": os.path.basename(path),
        "weights_sha256": file_sha256(path),
        "stage": settings.get("stage"),
        "image_size": settings.get("image_size"),
        "training_data": training,
        "training_data_source": f"{info_path(path).name}: {key}" if key else f"not recorded in {info_path(path).name}",
        "settings_source": settings.get("settings_source"),
        "temperature": settings.get("temperature"),
    }
