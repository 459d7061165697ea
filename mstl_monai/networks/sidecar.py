# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Reading a self-describing checkpoint: its weights, its settings file (``<file>.json``) and what they say together.

The writers and the bundle's loader are in :mod:`mstl_monai.engines.checkpoint` (which re-exports these); this
module sits beside the networks so that any layer (``visualize``, ``label``, ``engines``) can read a checkpoint's
settings without importing the engines.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = [
    "ARCH_KEYS",
    "CHECKED_KEYS",
    "FALLBACK",
    "INFO_FORMAT",
    "checkpoint_settings",
    "info_path",
    "read_checkpoint_info",
    "read_network_state",
]

# the engines' logger name, as before the move (users filter on it)
logger = logging.getLogger("mstl_monai.engines.checkpoint")

#: the sidecar's format tag
INFO_FORMAT = "mstl_monai.checkpoint/1"
#: settings read off the weights themselves (``network_config_from_state_dict``)
ARCH_KEYS = ("backbone", "n_attn", "in_channels", "num_classes")
#: settings a reader of the checkpoint must use as they were in training
CHECKED_KEYS = ARCH_KEYS + ("image_size", "resize_size", "class_names")
#: used for a checkpoint without a sidecar when no explicit value is given (the bundle's defaults)
FALLBACK = {"image_size": 224, "resize_size": 256, "class_names": ["non-COVID", "COVID"]}


def info_path(path: str | os.PathLike) -> Path:
    """The sidecar of checkpoint ``path``: ``<path>.json``."""
    return Path(f"{os.fspath(path)}.json")


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The settings written beside checkpoint ``path``, or None when it has no sidecar.

    Raises:
        ValueError: the sidecar exists but is not a settings file of this format (the message names it).
    """
    side = info_path(path)
    if not side.is_file():
        return None
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{side} (the settings of checkpoint {path}) is not readable JSON: {e}.") from None
    if not isinstance(info, dict) or info.get("format") != INFO_FORMAT:
        raise ValueError(f"{side} (the settings of checkpoint {path}) is not a '{INFO_FORMAT}' file.")
    return info


def read_network_state(path: str | os.PathLike, key: str | None = None) -> tuple[dict[str, torch.Tensor], str | None]:
    """The network weights in checkpoint ``path`` and the entry they came from.

    A plain state dict is returned as it is; a training checkpoint (``model_final.pt``,
    ``checkpoint_epoch=N.pt``: ``{"network": ..., "optimizer": ..., ...}``) gives its ``key`` entry or its
    ``network``/``model``/``state_dict``/``net`` entry. Files are read with ``weights_only=True``.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: an empty, truncated, corrupt or non-PyTorch file, or one holding no tensors; one line that
            names the file.
    """
    from mstl_monai.networks.weights import WRAPPER_KEYS, extract_state_dict, read_checkpoint

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"checkpoint {os.fspath(path)} is an empty file (0 bytes).")
    obj = read_checkpoint(path)
    entry = None
    if isinstance(obj, Mapping):
        for k in ([key] if key else []) + list(WRAPPER_KEYS):
            if k in obj and isinstance(obj[k], Mapping):
                obj, entry = obj[k], k
                break
    return extract_state_dict(obj, os.fspath(path)), entry


def _describe(cfg: Mapping[str, Any]) -> str:
    attn = f" +{cfg['n_attn']} ATTN" if cfg.get("n_attn") else ""
    attn += f" with {cfg['attention_maps']} MAG-SD attention maps" if cfg.get("attention_maps") else ""
    return f"{cfg['backbone']}{attn} ({cfg['in_channels']} input channel(s), {cfg['num_classes']} classes)"


def _architecture(state: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
    from mstl_monai.networks.factory import network_config_from_state_dict

    return network_config_from_state_dict(state, source)


def checkpoint_settings(path: str | os.PathLike, **fallback: Any) -> dict[str, Any]:
    """Everything a reader needs to use checkpoint ``path``: architecture, input size, class names, threshold.

    From the sidecar when there is one (checked against the weights); otherwise the architecture is read from the
    weights and ``image_size``/``resize_size``/``class_names`` come from ``fallback`` (else the bundle's defaults),
    with a warning that says so. The result has ``settings_source``: ``"sidecar"`` or ``"weights+defaults"``.

    Raises:
        FileNotFoundError, ValueError: unreadable checkpoint, not an (attentive) ResNet classifier, or a sidecar
            that describes another network; one line naming the file.
    """
    path = os.fspath(path)
    state, _ = read_network_state(path)
    arch = _architecture(state, path)
    info = read_checkpoint_info(path)
    if info is not None:
        wrong = [k for k in ARCH_KEYS if info.get(k) is not None and info[k] != arch[k]]
        if wrong:
            raise ValueError(
                f"{info_path(path)} does not describe checkpoint {path}: it says "
                + ", ".join(f"{k}={info[k]!r}" for k in wrong)
                + " but the weights are "
                + ", ".join(f"{k}={arch[k]!r}" for k in wrong)
                + "."
            )
        settings = {**{k: v for k, v in info.items() if k != "format"}, **arch, "settings_source": "sidecar"}
        for k in ("image_size", "resize_size"):
            if settings.get(k) is None:
                settings[k] = fallback.get(k, FALLBACK[k])
        if settings.get("class_names") is None:
            settings["class_names"] = fallback.get("class_names") or _default_names(arch["num_classes"])
        settings["tta"] = bool(settings.get("tta") or False)
        return settings
    settings = dict(arch)
    settings["image_size"] = int(fallback.get("image_size", FALLBACK["image_size"]))
    settings["resize_size"] = int(fallback.get("resize_size", FALLBACK["resize_size"]))
    names = fallback.get("class_names") or FALLBACK["class_names"]
    settings["class_names"] = list(names) if len(names) == arch["num_classes"] else _default_names(arch["num_classes"])
    settings.update(decision_threshold=None, tta=False, settings_source="weights+defaults")
    logger.warning(
        f"checkpoint {path} has no settings file ({info_path(path).name}): architecture {_describe(arch)} read from "
        f"its weights; its input size and class names are not known, so the configured ones are used (the defaults "
        f"image_size {settings['image_size']}, resize_size {settings['resize_size']}, class names "
        f"{settings['class_names']} unless --image_size/--resize_size/--class_names are given)."
    )
    return settings


def _default_names(n: int) -> list[str]:
    return FALLBACK["class_names"] if n == 2 else [f"class_{i}" for i in range(n)]
