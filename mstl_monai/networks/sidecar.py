# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""A checkpoint's settings file (``<file>.json``): its fields, their checks, reading and writing it.

Every checkpoint the stages write (``model.pt``, ``model_final.pt``, ``checkpoint_epoch=N.pt``) gets a settings
file beside it (``models/model.pt`` -> ``models/model.pt.json``), written atomically before the checkpoint itself:

.. code-block:: json

    {"format": "mstl_monai.checkpoint/1", "stage": "finetune", "backbone": "resnet18", "n_attn": 5,
     "in_channels": 1, "num_classes": 2, "image_size": 128, "resize_size": 146,
     "class_names": ["non-COVID", "COVID"], "decision_threshold": null, "dropout": 0.2,
     "state_dict_key": null, "normalize": {"subtrahend": ..., "divisor": ...}}

The checkpoint files stay plain state dicts (``torch.load`` + ``load_state_dict`` read them). Reading a checkpoint
together with its settings (and checking one against the other) is :mod:`mstl_monai.networks.checkpoint`.

Every reader goes through :func:`read_checkpoint_info`, which checks the file against :data:`SIDECAR_FIELDS`
(each field's type and range; the required fields present; no unknown field) and fills the optional fields'
defaults; :func:`checkpoint_settings` then checks it against the weights (architecture, classes, a ViT's input
size). A problem is one ``ValueError`` line naming the file, the field and its value (as JSON), e.g.
``models/model.pt.json: image_size=-8 is not a positive integer; tta="false" is not true or false``.

A new optional field is one entry of :data:`SIDECAR_FIELDS` with its check and default; readers then always see it.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from mstl_monai.utils.names import BACKBONES

__all__ = [
    "ARCH_KEYS",
    "CHECKED_KEYS",
    "FALLBACK",
    "INFO_FORMAT",
    "NORMALIZE",
    "SIDECAR_FIELDS",
    "SidecarField",
    "check_setting_values",
    "checkpoint_info",
    "info_path",
    "read_checkpoint_info",
    "validate_checkpoint_info",
    "write_checkpoint_info",
]

logger = logging.getLogger(__name__)

#: the sidecar's format tag
INFO_FORMAT = "mstl_monai.checkpoint/1"
#: settings read off the weights themselves (``network_config_from_state_dict``)
ARCH_KEYS = ("backbone", "n_attn", "in_channels", "num_classes")
#: settings a reader of the checkpoint must use as they were in training
CHECKED_KEYS = ARCH_KEYS + ("image_size", "resize_size", "class_names")
#: used for a checkpoint without a sidecar when no explicit value is given (the bundle's defaults)
FALLBACK = {"image_size": 224, "resize_size": 256, "class_names": ["non-COVID", "COVID"]}
#: the intensity normalisation after scaling a slice to [0, 1] (``NormalizeIntensity`` arguments): what the training
#: stages write to the settings file, and what readers use for a checkpoint whose settings do not record one
NORMALIZE = {"subtrahend": 0.449, "divisor": 0.226}


class _Invalid(Exception):
    """A field's value is wrong: the message says why (``is not ...``)."""


class SidecarField(NamedTuple):
    """One field of a checkpoint settings file.

    Args:
        check: returns the value to use (e.g. a normalised name) or raises ``_Invalid`` with the reason; never
            called with ``null``.
        required: the file must have the field.
        nullable: ``null`` is a valid value (for an optional field, ``null`` means its default).
        default: the value of an optional field that is absent (or ``null``).
        doc: what the field means, for the documentation.
    """

    check: Callable[[Any], Any]
    required: bool = False
    nullable: bool = True
    default: Any = None
    doc: str = ""


def _integer(minimum: int) -> Callable[[Any], int]:
    what = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")

    def check(v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise _Invalid(f"is not {what}")
        return v

    return check


def _threshold(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < 1.0:  # NaN fails the comparison
        raise _Invalid("is not a number in (0, 1) (a prediction is positive when its probability exceeds it)")
    return float(v)


def _dropout(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
        raise _Invalid("is not a number in [0, 1)")
    return float(v)


def _boolean(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Invalid("is not true or false (a JSON boolean, not a string or number)")
    return v


def _string(v: Any) -> str:
    if not isinstance(v, str):
        raise _Invalid("is not a string")
    return v


def _backbone_name(name: Any) -> str:
    """A backbone name as the factory takes it (``ResNet-18``, ``attentive_resnet18`` -> ``resnet18``)."""
    return str(name).lower().replace("attentive_", "").replace("-", "")


def _backbone(v: Any) -> str:
    name = _backbone_name(v) if isinstance(v, str) else None
    if name not in BACKBONES:
        raise _Invalid(f"is not one of {', '.join(BACKBONES)}")
    return name


def _class_names(v: Any) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(c, str) and c.strip() for c in v):
        raise _Invalid('is not a list of names (e.g. ["non-COVID", "COVID"])')
    repeated = sorted({c for c in v if v.count(c) > 1})
    if repeated:
        raise _Invalid(f"repeats {repeated[0]!r}")
    return list(v)


def _normalize(v: Any) -> dict[str, float]:
    ok = isinstance(v, dict) and set(v) == {"subtrahend", "divisor"}
    ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v.values())
    if not ok:
        raise _Invalid('is not {"subtrahend": <number>, "divisor": <number>}')
    if v["divisor"] == 0:
        raise _Invalid("has divisor 0")
    return {k: float(x) for k, x in v.items()}


def _temperature(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 < v < math.inf:
        raise _Invalid("is not a finite number > 0 (readers divide the logits by it)")
    return float(v)


def _object(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _Invalid("is not an object ({...})")
    return v


def _operating_points(v: Any) -> dict[str, float | None]:
    _object(v)
    for name, t in v.items():
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t <= 1.0):
            raise _Invalid(f"has {name}={_show(t)}, which is not a number in [0, 1] (or null)")
    return {k: None if t is None else float(t) for k, t in v.items()}


#: the fields of a checkpoint settings file (``model.pt.json``): required ones, and optional ones with their default
SIDECAR_FIELDS: dict[str, SidecarField] = {
    "format": SidecarField(_string, required=True, nullable=False, doc=f"the format tag, {INFO_FORMAT!r}"),
    "backbone": SidecarField(_backbone, required=True, nullable=False, doc=f"one of {', '.join(BACKBONES)}"),
    "n_attn": SidecarField(_integer(0), required=True, nullable=False, doc="non-local (ATTN) blocks"),
    "in_channels": SidecarField(_integer(1), required=True, nullable=False, doc="input channels"),
    "num_classes": SidecarField(_integer(1), required=True, doc="classifier outputs (null: a backbone without head)"),
    "image_size": SidecarField(_integer(1), required=True, nullable=False, doc="the network's input (crop) size, px"),
    "resize_size": SidecarField(_integer(1), required=True, nullable=False, doc="longest-side resize before the crop"),
    "stage": SidecarField(_string, doc="the stage that wrote it"),
    "class_names": SidecarField(_class_names, doc="one name per output (default: non-COVID, COVID / class_<i>)"),
    "decision_threshold": SidecarField(_threshold, doc="threshold on the positive class's probability (default: 0.5)"),
    "dropout": SidecarField(_dropout, doc="dropout before the head"),
    "state_dict_key": SidecarField(_string, doc="entry of a training checkpoint that holds the weights"),
    "normalize": SidecarField(_normalize, doc="intensity normalisation after scaling to [0, 1]"),
    "tta": SidecarField(_boolean, default=False, doc="flip test-time augmentation (default: false)"),
    "attention_maps": SidecarField(_integer(0), default=0, doc="MAG-SD attention maps (default: 0, none)"),
    "temperature": SidecarField(_temperature, default=1.0, doc="softmax temperature fitted on val (default: 1.0, none)"),
    "operating_points": SidecarField(
        _operating_points, default={}, doc="named thresholds in [0, 1] chosen on val, e.g. youden, sensitivity_90"
    ),
    "calibration": SidecarField(_object, doc="how the temperature was fitted (method, n_val, val ECE before/after)"),
    "provenance": SidecarField(_object, doc="where a shipped model comes from (scripts/ship_model.py)"),
}


def _show(value: Any) -> str:
    """A value as it reads in the JSON file, shortened."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def check_setting_values(**values: Any) -> None:
    """Check the values a run uses for checkpoint settings (``--temperature``, ``--normalize``, ``--image_size`` ...
    given on the command line, or read from the settings file) with the rules of the settings file's fields.

    A bundle config calls it in ``initialize``, so a value no reader can use stops the run before anything is read,
    with one line naming the setting and the value (e.g. ``--temperature -1`` would invert the probabilities,
    ``--temperature 0`` make them NaN, ``--normalize none`` fail deep inside a transform). ``None`` is accepted where
    the field is nullable (it means the field's default).

    Raises:
        ValueError: ``setting temperature=-1 is not a finite number > 0 (readers divide the logits by it)``.
        KeyError: a name that is no field of :data:`SIDECAR_FIELDS`.
    """
    for key, value in values.items():
        if key not in SIDECAR_FIELDS:
            raise KeyError(f"{key!r} is not a checkpoint setting (one of {sorted(SIDECAR_FIELDS)}).")
        field = SIDECAR_FIELDS[key]
        if value is None:
            if field.nullable:
                continue
            raise ValueError(f"setting {key}=None is not allowed: {field.doc}.")
        try:
            field.check(value)
        except _Invalid as e:
            raise ValueError(f"setting {key}={_show_any(value)} {e}.") from None


def _show_any(value: Any) -> str:
    try:
        return _show(value)
    except (TypeError, ValueError):
        return repr(value)


def validate_checkpoint_info(info: Any, source: str) -> dict[str, Any]:
    """Check a checkpoint's settings (the parsed ``<checkpoint>.json``) against :data:`SIDECAR_FIELDS`.

    Args:
        info: the parsed JSON.
        source: the settings file, for the message.

    Returns:
        every field of :data:`SIDECAR_FIELDS`, optional ones absent or ``null`` given their default.

    Raises:
        ValueError: not a settings file of this format, a required field missing, an unknown field, a value of the
            wrong type or range, or ``class_names`` that do not name ``num_classes`` classes: one line naming
            ``source``, every such field and its value.
    """
    if not isinstance(info, dict) or info.get("format") != INFO_FORMAT:
        raise ValueError(f"{source} is not a '{INFO_FORMAT}' file (its \"format\" must be {INFO_FORMAT!r}).")
    problems, out = [], {}
    missing = [k for k, f in SIDECAR_FIELDS.items() if f.required and k not in info]
    if missing:
        problems.append(f"required field(s) missing: {', '.join(missing)}")
    unknown = [k for k in info if k not in SIDECAR_FIELDS]
    for key in unknown:
        close = difflib.get_close_matches(str(key), list(SIDECAR_FIELDS), n=1)
        problems.append(f"unknown field {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if unknown:
        problems.append(f"the fields of a '{INFO_FORMAT}' file are {', '.join(SIDECAR_FIELDS)}")
    for key, field in SIDECAR_FIELDS.items():
        value = info.get(key)
        if value is None:
            if key in info and not field.nullable:
                problems.append(f"{key}=null is not allowed")
            out[key] = copy.deepcopy(field.default)
            continue
        try:
            out[key] = field.check(value)
        except _Invalid as e:
            problems.append(f"{key}={_show(value)} {e}")
            out[key] = None
    names, n = out.get("class_names"), out.get("num_classes")
    if names is not None and n is not None and len(names) != n:
        problems.append(f"class_names={_show(names)} names {len(names)} classes but num_classes is {n}")
    if problems:
        raise ValueError(f"{source}: {'; '.join(problems)}.")
    return out


def info_path(path: str | os.PathLike) -> Path:
    """The sidecar of checkpoint ``path``: ``<path>.json``."""
    return Path(f"{os.fspath(path)}.json")


def read_checkpoint_info(path: str | os.PathLike) -> dict[str, Any] | None:
    """The settings written beside checkpoint ``path``, checked (:func:`validate_checkpoint_info`), or None when it
    has no sidecar.

    Raises:
        ValueError: the sidecar exists but is not readable JSON or not a valid settings file of this format; one
            line naming the file, the fields and their values.
    """
    side = info_path(path)
    if not side.is_file():
        return None
    try:
        info = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{side} (the settings of checkpoint {path}) is not readable JSON: {e}.") from None
    return validate_checkpoint_info(info, str(side))


def _describe(cfg: Mapping[str, Any]) -> str:
    attn = f" +{cfg['n_attn']} ATTN" if cfg.get("n_attn") else ""
    attn += f" with {cfg['attention_maps']} MAG-SD attention maps" if cfg.get("attention_maps") else ""
    return f"{cfg['backbone']}{attn} ({cfg['in_channels']} input channel(s), {cfg['num_classes']} classes)"


def _architecture(state: Mapping[str, torch.Tensor], source: str) -> dict[str, Any]:
    from mstl_monai.networks.factory import network_config_from_state_dict

    return network_config_from_state_dict(state, source)


def _check_against_weights(info: Mapping[str, Any], arch: Mapping[str, Any], path: str) -> None:
    """A (validated) sidecar ``info`` says what the weights ``arch`` (``network_config_from_state_dict``) are."""
    said, found = [], []
    for k in ARCH_KEYS + ("attention_maps",):
        have = arch.get(k, 0 if k == "attention_maps" else None)
        if info[k] != have:
            said.append(f"{k}={_show(info[k])}")
            found.append(f"{k}={_show(have)}")
    if "patch_size" in arch and info["image_size"] != arch["image_size"]:  # a ViT's input size is in its weights
        grid = arch["image_size"] // arch["patch_size"]
        said.append(f"image_size={info['image_size']}")
        found.append(
            f"position embeddings for image_size={arch['image_size']} (a {grid} x {grid} grid of "
            f"{arch['patch_size']}-px patches)"
        )
    if said:
        raise ValueError(
            f"{info_path(path)} does not describe checkpoint {path}: it says {', '.join(said)} but the weights have "
            f"{', '.join(found)}."
        )


def _default_names(n: int) -> list[str]:
    return FALLBACK["class_names"] if n == 2 else [f"class_{i}" for i in range(n)]


def checkpoint_info(
    backbone: str,
    n_attn: int,
    in_channels: int,
    num_classes: int | None,
    image_size: int,
    resize_size: int,
    class_names: Sequence[str] | None = None,
    stage: str | None = None,
    dropout: float | None = None,
    decision_threshold: float | None = None,
    state_dict_key: str | None = None,
    normalize: Mapping[str, float] | None = None,
    tta: bool | None = None,
    attention_maps: int = 0,
) -> dict[str, Any]:
    """What a checkpoint is, as plain JSON types (e.g. built in a bundle config and given to the savers).

    Args:
        backbone: ``resnet18`` ... ``resnet152``.
        n_attn: number of non-local blocks.
        in_channels: input channels.
        num_classes: classifier outputs (None for a backbone without head, e.g. SSTL-M's ``model.pt``).
        image_size: the network's input size (the crop).
        resize_size: the longest-side resize before padding and cropping.
        class_names: names of the outputs, in order.
        stage: the stage that wrote it (``finetune``, ``stl_m``, ...).
        dropout: dropout before the head.
        decision_threshold: the chosen threshold on the positive class's probability (None: not chosen, argmax).
        state_dict_key: the entry that holds the network's weights (None: the file is the state dict).
        normalize: intensity normalisation (``subtrahend``, ``divisor``) after scaling to [0, 1].
        tta: whether the model was selected (and its threshold chosen) with flip test-time augmentation; readers
            then average the image and its mirror too (the bundle's ``tta`` setting).
        attention_maps: MAG-SD attention maps of the network (0: a plain classifier; recorded only when > 0).
    """
    names = None if class_names is None else [str(c) for c in class_names]
    if names is not None and num_classes is not None and len(names) != int(num_classes):
        logger.warning(f"class_names {names[:5]}... do not name the {num_classes} classes: not recorded.")
        names = None
    extra = {"attention_maps": int(attention_maps)} if attention_maps else {}
    return {
        "format": INFO_FORMAT,
        "stage": None if stage is None else str(stage),
        "backbone": _backbone_name(backbone),
        "n_attn": int(n_attn),
        "in_channels": int(in_channels),
        "num_classes": None if num_classes is None else int(num_classes),
        "image_size": int(image_size),
        "resize_size": int(resize_size),
        "class_names": names,
        "decision_threshold": None if decision_threshold is None else float(decision_threshold),
        "dropout": None if dropout is None else float(dropout),
        "state_dict_key": state_dict_key,
        "normalize": None if normalize is None else {k: float(v) for k, v in normalize.items()},
        "tta": None if tta is None else bool(tta),
        **extra,
    }


def write_checkpoint_info(path: str | os.PathLike, info: Mapping[str, Any], **changes: Any) -> Path:
    """Write ``info`` (updated with ``changes``) beside checkpoint ``path`` as ``<path>.json``, atomically."""
    from mstl_monai.utils.io import atomic_write, to_jsonable

    target = info_path(path)
    with atomic_write(target, "w") as f:
        json.dump(to_jsonable({**dict(info), **changes}), f, indent=2, allow_nan=False)
        f.write("\n")
    return target
