# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Reading a self-describing checkpoint: its weights (read once), its settings file and what they say together.

:func:`load_network` is the one way to get a network from a checkpoint: it reads the file once
(:func:`read_checkpoint_file`: ``torch.load(weights_only=True)``), checks the settings file
(:mod:`~mstl_monai.networks.sidecar`) against the weights and against explicit settings, builds the network and loads
the weights strictly. The bundle configs do the same in steps (:func:`checkpoint_settings`, :func:`checkpoint_network`
and the loader handler, which calls :func:`load_weights`); the weights read for the settings are kept until the
loader takes them, so an inference run deserialises the file once.

A checkpoint without a settings file (older runs, files from elsewhere) still loads: its architecture is read from
its weights and the input size and normalisation come from the explicit settings, or from the defaults with a
warning that says so. Every problem is one line naming the file, the setting and the values.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mstl_monai.networks.sidecar import (
    ARCH_KEYS,
    CHECKED_KEYS,
    FALLBACK,
    NORMALIZE,
    _architecture,
    _backbone_name,
    _check_against_weights,
    _default_names,
    _describe,
    info_path,
    read_checkpoint_info,
)

__all__ = [
    "check_checkpoint_settings",
    "checkpoint_network",
    "checkpoint_settings",
    "decision_threshold",
    "export_ckpt_file",
    "given_threshold",
    "load_network",
    "load_weights",
    "operating_threshold",
    "read_checkpoint_file",
    "read_network_state",
]

logger = logging.getLogger(__name__)

#: the last checkpoint read for its settings, until :func:`load_weights` takes it: ``(identity, object)``
_PENDING: dict[str, tuple[tuple[int, int, int], Any]] = {}


def _identity(path: str) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_checkpoint_file(path: str | os.PathLike, keep: bool = False) -> Any:
    """The deserialised checkpoint ``path`` (:func:`~mstl_monai.networks.state_dicts.read_checkpoint`:
    ``torch.load(weights_only=True)`` on the CPU, every failure one line naming the file).

    A file read with ``keep=True`` (for its settings) is kept until the next read of it without ``keep`` (the
    weights loaded into the network), unless it changed on disk in between: settings and weights then come from one
    deserialisation. Only the last such file is kept.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: an empty, truncated, corrupt or non-PyTorch file.
    """
    from mstl_monai.networks.state_dicts import read_checkpoint

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist.")
    key, ident = os.path.realpath(path), _identity(path)
    pending = _PENDING.get(key)
    if pending is not None and pending[0] == ident:
        if not keep:
            _PENDING.pop(key, None)
        return pending[1]
    obj = read_checkpoint(path)
    _PENDING.clear()
    if keep:
        _PENDING[key] = (ident, obj)
    return obj


def read_network_state(
    path: str | os.PathLike, key: str | None = None, keep: bool = False
) -> tuple[dict[str, torch.Tensor], str | None]:
    """The network weights in checkpoint ``path`` and the entry they came from.

    A plain state dict is returned as it is; a training checkpoint (``model_final.pt``,
    ``checkpoint_epoch=N.pt``: ``{"network": ..., "optimizer": ..., ...}``) gives its ``key`` entry or its
    ``network``/``model``/``state_dict``/``net`` entry. Read by :func:`read_checkpoint_file` (``keep`` as there).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: an empty, truncated, corrupt or non-PyTorch file, or one holding no tensors; one line that
            names the file.
    """
    from mstl_monai.networks.state_dicts import WRAPPER_KEYS, extract_state_dict

    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {os.fspath(path)!r} does not exist.")
    if os.path.getsize(path) == 0:
        raise ValueError(f"checkpoint {os.fspath(path)} is an empty file (0 bytes).")
    obj = read_checkpoint_file(path, keep=keep)
    entry = None
    if isinstance(obj, Mapping):
        for k in ([key] if key else []) + list(WRAPPER_KEYS):
            if k in obj and isinstance(obj[k], Mapping):
                obj, entry = obj[k], k
                break
    return extract_state_dict(obj, os.fspath(path)), entry


def checkpoint_settings(path: str | os.PathLike, **fallback: Any) -> dict[str, Any]:
    """Everything a reader needs to use checkpoint ``path``: architecture, input size, class names, threshold.

    From the sidecar when there is one (checked against the weights); otherwise the architecture is read from the
    weights and ``image_size``/``resize_size``/``class_names``/``normalize`` come from ``fallback`` (else the
    bundle's defaults), with a warning that says so. ``normalize`` is always set: a settings file that records
    none gets :data:`~mstl_monai.networks.sidecar.NORMALIZE`, with a warning. The result has ``settings_source``:
    ``"sidecar"`` or ``"weights+defaults"``. The file read is kept for the weights' loader (:func:`load_weights`).

    Raises:
        FileNotFoundError, ValueError: unreadable checkpoint, not an (attentive) ResNet or ViT classifier, an invalid
            sidecar (:func:`validate_checkpoint_info`), or one that describes another network (architecture, number
            of classes, input channels, MAG-SD maps, a ViT's input size); one line naming the file.
    """
    path = os.fspath(path)
    state, _ = read_network_state(path, keep=True)
    arch = _architecture(state, path)
    info = read_checkpoint_info(path)
    if info is not None:
        _check_against_weights(info, arch, path)
        settings = {**{k: v for k, v in info.items() if k != "format"}, **arch, "settings_source": "sidecar"}
        if settings["class_names"] is None:
            names = fallback.get("class_names")
            ok = names is not None and len(names) == arch["num_classes"]
            settings["class_names"] = list(names) if ok else _default_names(arch["num_classes"])
        if settings["normalize"] is None:
            settings["normalize"] = dict(fallback.get("normalize") or NORMALIZE)
            logger.warning(
                f"{info_path(path)} records no normalize: the intensity normalisation {settings['normalize']} is used "
                "(the fallback; the training stages write it to the settings file)."
            )
        return settings
    settings = dict(arch)
    if "patch_size" not in arch:  # a ViT's input size is in its weights
        settings["image_size"] = int(fallback.get("image_size", FALLBACK["image_size"]))
    settings["resize_size"] = int(fallback.get("resize_size", FALLBACK["resize_size"]))
    names = fallback.get("class_names") or FALLBACK["class_names"]
    settings["class_names"] = list(names) if len(names) == arch["num_classes"] else _default_names(arch["num_classes"])
    settings["normalize"] = dict(fallback.get("normalize") or NORMALIZE)
    settings.update(decision_threshold=None, tta=False, settings_source="weights+defaults")
    logger.warning(
        f"checkpoint {path} has no settings file ({info_path(path).name}): architecture {_describe(arch)} read from "
        f"its weights; its input size, class names and normalisation are not known, so the configured ones are used "
        f"(the defaults image_size {settings['image_size']}, resize_size {settings['resize_size']}, class names "
        f"{settings['class_names']}, normalize {settings['normalize']} unless --image_size/--resize_size/"
        "--class_names are given)."
    )
    return settings


def export_ckpt_file(default: str | os.PathLike) -> str:
    """The checkpoint a config describes: ``default``, or under ``python -m monai.bundle ckpt_export`` the file given
    as ``--ckpt_file`` (MONAI passes that option to the exporter, not to the config, whose network must be
    built with that file's settings)."""
    import sys

    argv = list(sys.argv)
    if "ckpt_export" in argv:
        for i, arg in enumerate(argv):
            if arg == "--ckpt_file" and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith("--ckpt_file="):
                return arg.split("=", 1)[1]
    return os.fspath(default)


def decision_threshold(threshold: Any, settings: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The decision threshold a reader applies, and where it comes from.

    Args:
        threshold: the configured value (a bundle's ``threshold`` setting, by default the checkpoint's own
            ``decision_threshold``); None or ``"none"``: none, 0.5 applies.
        settings: the checkpoint's settings (:func:`checkpoint_settings`), to tell its own value from an override.

    Returns:
        ``{"value": t, "source": ...}``, ``source`` one of ``"checkpoint"`` (chosen on the val split by the
        finetune stage: maximum Youden index), ``"override"`` or ``"default"`` (none given or stored: 0.5).

    Raises:
        ValueError: a threshold outside (0, 1) or not a number; one line naming the setting.
    """
    if threshold is None or (isinstance(threshold, str) and threshold.strip().lower() in ("", "none", "null")):
        return {"value": 0.5, "source": "default"}
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold={threshold!r} is not a number: give a value in (0, 1), e.g. --threshold 0.5.")
    if not 0.0 < value < 1.0:
        raise ValueError(f"threshold={threshold!r} is outside (0, 1): give a probability, e.g. --threshold 0.5.")
    stored = (settings or {}).get("decision_threshold")
    source = "checkpoint" if stored is not None and float(stored) == value else "override"
    if source == "override":
        for name, t in ((settings or {}).get("operating_points") or {}).items():
            if t is not None and float(t) == value:
                source = f"checkpoint ({name})"
                break
    return {"value": value, "source": source}


def given_threshold(threshold: float | Mapping | None) -> dict:
    """``{"value", "source"}`` of a threshold given as a number, such a dict, or None (0.5, ``default``)."""
    if isinstance(threshold, Mapping):
        return {"value": float(threshold["value"]), "source": str(threshold.get("source", "given"))}
    used = decision_threshold(threshold)
    return used if used["source"] == "default" else {**used, "source": "given"}


def operating_threshold(settings: Mapping[str, Any] | None, operating_point: str = "youden") -> float | None:
    """The threshold of a named operating point stored in a checkpoint's settings (chosen on val by the finetune).

    ``"youden"``: the maximum-Youden-J threshold (``decision_threshold``; None when none was chosen: 0.5 applies);
    ``"sensitivity_90"``: the highest val threshold whose sensitivity is at least 90 % (a screening point); any other
    name stored under ``operating_points``.

    Raises:
        ValueError: a name the checkpoint does not store (one line naming it and the stored ones).
    """
    settings = settings or {}
    points = dict(settings.get("operating_points") or {})
    name = str(operating_point).strip().lower()
    if name == "youden":
        return settings.get("decision_threshold")
    if name not in points:
        known = ["youden", *sorted(k for k in points if k != "youden")]
        raise ValueError(
            f"operating_point={operating_point!r} is not stored in this checkpoint's settings (it has {known}); "
            "checkpoints finetuned before calibration have only 'youden'."
        )
    return points[name]


def _given_value(path: str, key: str, value: Any) -> Any:
    """A setting given to :func:`check_checkpoint_settings` in the form the checkpoint's settings have."""
    if key == "backbone":
        return _backbone_name(value)
    if key == "class_names":
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise ValueError(
                f"checkpoint {path}: {key}={value!r} (given) is not a list of names, e.g. ['non-COVID', 'COVID']."
            )
        return [str(c) for c in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"checkpoint {path}: {key}={value!r} (given) is not an integer.")
    return int(value)


def check_checkpoint_settings(path: str | os.PathLike, **given: Any) -> dict[str, Any]:
    """Check settings a config uses (``backbone=..., image_size=...``) against what checkpoint ``path`` says.

    ``None`` values are not checked. Without a sidecar only the architecture (read from the weights) is checked.
    Returns the checkpoint's settings (:func:`checkpoint_settings`).

    Raises:
        ValueError: a setting contradicts the checkpoint, or a given setting is of the wrong type (a number that is
            not an integer, class names that are not a list); one line naming the file, the setting and the values.
    """
    path = os.fspath(path)
    unknown = set(given) - set(CHECKED_KEYS)
    if unknown:
        raise KeyError(f"cannot check {sorted(unknown)} against a checkpoint: use {list(CHECKED_KEYS)}.")
    given = {k: _given_value(path, k, v) for k, v in given.items() if v is not None}
    settings = checkpoint_settings(path, **{k: v for k, v in given.items() if k in FALLBACK})
    checked = CHECKED_KEYS if settings["settings_source"] == "sidecar" else ARCH_KEYS
    wrong = []
    for k in checked:
        value, want = given.get(k), settings.get(k)
        if value is None or want is None:
            continue
        if value != want:
            wrong.append(f"{k}={value!r} (checkpoint: {want!r})")
    if wrong:
        raise ValueError(
            f"checkpoint {path} was trained with other settings than given: {'; '.join(wrong)}. Drop these "
            "overrides (the checkpoint's own settings are used) or pass the checkpoint they belong to."
        )
    return settings


def checkpoint_network(
    checkpoint: str | os.PathLike,
    name: str = "resnet50",
    n_attn: int = 0,
    image_size: int | None = None,
    resize_size: int | None = None,
    class_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> torch.nn.Module:
    """:func:`~mstl_monai.networks.factory.build_network` for the weights in ``checkpoint``, after checking that the
    given settings (architecture, input size, class names) are those of the checkpoint
    (:func:`check_checkpoint_settings`). The weights are not loaded (:func:`load_weights`, :func:`load_network`).

    Used as ``network_def`` by the bundle's inference and evaluation, so ``ckpt_export`` and MONAI Label check too.
    ``kwargs`` go to :func:`~mstl_monai.networks.factory.build_network` (``n_input_channels``, ``num_classes``,
    ``dropout``).
    """
    from mstl_monai.networks.factory import build_network

    settings = check_checkpoint_settings(
        checkpoint,
        backbone=name,
        n_attn=n_attn,
        in_channels=kwargs.get("n_input_channels"),
        num_classes=kwargs.get("num_classes"),
        image_size=image_size,
        resize_size=resize_size,
        class_names=class_names,
    )
    if settings.get("num_layers") and kwargs.get("num_layers") is None:  # a ViT's depth is in its weights
        kwargs["num_layers"] = settings["num_layers"]
    patch = settings.get("patch_size")  # a ViT's patch size too
    if patch is not None and kwargs.get("patch_size") is not None and int(kwargs["patch_size"]) != int(patch):
        raise ValueError(
            f"checkpoint {os.fspath(checkpoint)} was trained with other settings than given: "
            f"patch_size={int(kwargs['patch_size'])!r} (checkpoint: {int(patch)!r}). Drop this override."
        )
    # MAG-SD's attention head is in the weights too (``attention_maps``); a given value must be the checkpoint's
    maps = int(settings.get("attention_maps") or 0)
    given = kwargs.pop("attention_maps", None)
    if given is not None and int(given) != maps:
        raise ValueError(
            f"checkpoint {os.fspath(checkpoint)} was trained with attention_maps={maps} (MAG-SD "
            f"{'on' if maps else 'off'}) but attention_maps={given} is given: drop the override (mag_sd) or pass "
            "the checkpoint it belongs to."
        )
    return build_network(name, n_attn=n_attn, attention_maps=maps, **kwargs)


def load_weights(
    network: torch.nn.Module, path: str | os.PathLike, key: str | None = None, strict: bool = True
) -> str | None:
    """Load the weights in checkpoint ``path`` into ``network`` (strictly by default), every failure one line.

    A training checkpoint gives its ``key`` entry (or its ``network``/``model``/``state_dict``/``net`` entry); a
    checkpoint of another architecture names the settings to use. The file is read by :func:`read_checkpoint_file`
    (the copy kept by :func:`checkpoint_settings`, when there is one). Returns the entry the weights came from
    (None: the file is the state dict).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: an unreadable file, weights of another architecture, or weights that do not fit the network.
    """
    from mstl_monai.networks.weights import _describe as describe_keys

    net = getattr(network, "module", network)
    path = os.fspath(path)
    state, entry = read_network_state(path, key)
    if not isinstance(net, torch.nn.Module):
        net.load_state_dict(state)
        return entry
    own = net.state_dict()
    try:
        want, have = _architecture(own, "the network"), _architecture(state, path)
    except ValueError:
        want = have = None
    if want is not None and want != have:
        flags = " ".join(f"--{k} {have[k]}" for k in ARCH_KEYS if have[k] != want[k])
        if have.get("attention_maps", 0) != want.get("attention_maps", 0):
            flags = (flags + f" --mag_sd {str(bool(have.get('attention_maps'))).lower()}").strip()
        raise ValueError(
            f"checkpoint {path} holds a {_describe(have)} network but the config builds a {_describe(want)} "
            f"one: run with {flags} (or leave these settings to the checkpoint)."
        )
    try:
        net.load_state_dict(state, strict=strict)
    except RuntimeError as e:
        missing = [k for k in own if k not in state]
        extra = [k for k in state if k not in own]
        raise ValueError(
            f"checkpoint {path} does not fit the network ({len(missing)} missing, {len(extra)} unexpected "
            f"tensors, e.g. {(missing + extra)[:3]}; checkpoint: {describe_keys(list(state))}): "
            f"{str(e).splitlines()[0]}"
        ) from None
    return entry


def load_network(
    path: str | os.PathLike, device: str | torch.device = "cpu", **overrides: Any
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network in checkpoint ``path``, built from its settings with its weights loaded, in eval mode.

    The file is read once. Explicit settings (``backbone``, ``n_attn``, ``in_channels``, ``num_classes``,
    ``image_size``, ``resize_size``, ``class_names``) are checked against the checkpoint's settings
    (:func:`check_checkpoint_settings`); for a checkpoint without a settings file they give the input size and
    class names (``normalize`` too), else the defaults apply with a warning.

    Args:
        path: the checkpoint (``models/model.pt``, a training checkpoint, a state dict from elsewhere).
        device: where the network goes.
        overrides: settings a caller uses, checked against the checkpoint's; ``None`` values are ignored.

    Returns:
        ``(network, settings)``: settings as :func:`checkpoint_settings` gives them (``normalize`` always set).

    Raises:
        FileNotFoundError, ValueError: as :func:`checkpoint_settings` and :func:`load_weights`; an unknown setting.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    normalize = overrides.pop("normalize", None)
    unknown = set(overrides) - set(CHECKED_KEYS)
    if unknown:
        raise KeyError(f"load_network: unknown setting(s) {sorted(unknown)}: use {list(CHECKED_KEYS)}.")
    settings = check_checkpoint_settings(path, **overrides)
    if normalize is not None and settings["settings_source"] != "sidecar":
        settings["normalize"] = dict(normalize)
    net = checkpoint_network(
        path,
        name=settings["backbone"],
        n_attn=settings["n_attn"],
        n_input_channels=settings["in_channels"],
        num_classes=settings["num_classes"],
        image_size=settings["image_size"],
        resize_size=settings["resize_size"],
        class_names=settings["class_names"],
        img_size=settings["image_size"],
        patch_size=settings.get("patch_size"),
    )
    load_weights(net, path)
    return net.to(device).eval(), settings
