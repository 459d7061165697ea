# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Self-describing checkpoints: what a checkpoint is, in a JSON file beside it, and the readers that use it.

Every checkpoint the stages write (``model.pt``, ``model_final.pt``, ``checkpoint_epoch=N.pt``) gets a sidecar
``<file>.json`` (``models/model.pt`` -> ``models/model.pt.json``), written atomically before the checkpoint itself:

.. code-block:: json

    {"format": "mstl_monai.checkpoint/1", "stage": "finetune", "backbone": "resnet18", "n_attn": 5,
     "in_channels": 1, "num_classes": 2, "image_size": 128, "resize_size": 146,
     "class_names": ["non-COVID", "COVID"], "decision_threshold": null, "dropout": 0.2,
     "state_dict_key": null, "normalize": {"subtrahend": 0.449, "divisor": 0.226}}

The checkpoint files stay what they were (``model.pt`` a plain state dict that ``torch.load`` +
``load_state_dict`` read), so users' own code keeps working. Inference, evaluation, ``ckpt_export`` and
``python -m mstl_monai.label init`` read the settings from the sidecar (:func:`checkpoint_settings`); a setting
given explicitly that contradicts it is an error naming both values (:func:`check_checkpoint_settings`). Every read
checks the file first (:data:`~mstl_monai.networks.sidecar.SIDECAR_FIELDS`: each field's type and range, the
required ones present, no unknown one, and against the weights): a wrong file is one line naming it, the field and
the value. A
checkpoint without a sidecar (older runs, files from elsewhere) still loads: its architecture is read from its
weights and the input size comes from the explicit settings, or from the defaults with a warning that says so.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from ignite.engine import Engine

from monai.handlers import CheckpointLoader

__all__ = [
    "INFO_FORMAT",
    "CheckpointNetworkLoader",
    "check_checkpoint_settings",
    "checkpoint_info",
    "checkpoint_network",
    "checkpoint_settings",
    "decision_threshold",
    "export_ckpt_file",
    "info_path",
    "read_checkpoint_info",
    "read_network_state",
    "write_checkpoint_info",
]

logger = logging.getLogger(__name__)

from mstl_monai.networks.sidecar import (  # noqa: E402  (re-exported: the bundle configs and users read them here)
    ARCH_KEYS,
    CHECKED_KEYS,
    FALLBACK,
    INFO_FORMAT,
    _architecture,
    _backbone_name,
    _default_names,
    _describe,
    checkpoint_settings,
    info_path,
    read_checkpoint_info,
    read_network_state,
)

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
    from mstl_monai.metrics.io import write_metrics_json

    return write_metrics_json(info_path(path), {**dict(info), **changes})


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
    """:func:`~mstl_monai.engines.build_network` for the weights in ``checkpoint``, after checking that the given
    settings (architecture, input size, class names) are those of the checkpoint (:func:`check_checkpoint_settings`).

    Used as ``network_def`` by the bundle's inference and evaluation, so ``ckpt_export`` and MONAI Label check too.
    ``kwargs`` go to :func:`~mstl_monai.engines.build_network` (``n_input_channels``, ``num_classes``, ``dropout``).
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


class CheckpointNetworkLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` for one network, whose every failure is one line naming the file.

    Empty, truncated, corrupt or non-PyTorch files, a training checkpoint (its ``network`` entry is loaded), and
    a checkpoint of another architecture (the message says which settings to use) are all handled; the weights
    are loaded strictly. With several objects in ``load_dict`` (resuming a trainer) it is MONAI's loader.

    Args:
        load_path: the checkpoint.
        load_dict: ``{"network": net}`` (any key; that key is looked up in the file first).
        kwargs: as MONAI's ``CheckpointLoader``.
    """

    def __call__(self, engine: Engine) -> None:
        if len(self.load_dict) != 1:
            return super().__call__(engine)
        from mstl_monai.networks.weights import _describe as describe_keys

        ((key, net),) = self.load_dict.items()
        net = getattr(net, "module", net)
        path = os.fspath(self.load_path)
        state, entry = read_network_state(path, key)
        if isinstance(net, torch.nn.Module):
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
                net.load_state_dict(state, strict=self.strict)
            except RuntimeError as e:
                missing = [k for k in own if k not in state]
                extra = [k for k in state if k not in own]
                raise ValueError(
                    f"checkpoint {path} does not fit the network ({len(missing)} missing, {len(extra)} unexpected "
                    f"tensors, e.g. {(missing + extra)[:3]}; checkpoint: {describe_keys(list(state))}): "
                    f"{str(e).splitlines()[0]}"
                ) from None
        else:
            net.load_state_dict(state)
        where = f" (the '{entry}' entry of a training checkpoint)" if entry else ""
        self.logger.info(f"{engine.state.epoch}: loaded network weights from {path}{where}")
