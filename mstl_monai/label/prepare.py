# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Prepare a MONAI Label app folder that serves this plugin's bundle (no MONAI Label import needed here).

A MONAI Label app is a folder with a ``main.py``; ours holds a two-line ``main.py`` that imports
:class:`mstl_monai.label.app.MSTLLabelApp`, and a copy of the bundle under ``model/<name>/`` whose
``configs/inference.yaml`` and ``configs/train.yaml`` carry the network settings of the checkpoint it serves
(read from the checkpoint itself) and whose ``models/model.pt`` is that checkpoint as a plain state dict. The
bundle in the repository is never written to; ``/train`` replaces the app's ``models/model.pt`` atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from mstl_monai.networks.factory import network_config_from_state_dict  # noqa: F401  (re-exported, in __all__)

__all__ = [
    "thresholded_class",
    "DEFAULT_MODEL_NAME",
    "network_config_from_state_dict",
    "parse_class_label",
    "prepare_app",
    "save_state_dict_atomic",
]

logger = logging.getLogger(__name__)

#: the model name the app registers (MONAI Label infers the task type from "classification" in the name)
DEFAULT_MODEL_NAME = "mstl_covid_classification"

#: training settings for ``/train`` (a few labelled images, finetuning an already trained classifier), unless
#: ``overrides`` says otherwise: the bundle's own defaults are the paper's large-batch from-scratch recipe. BatchNorm
#: keeps the served model's statistics (``freeze_bn``): a batch of a few images gives none worth having, and two
#: images on a 1x1 res5 map make the finetune diverge (:mod:`mstl_monai.engines.batch_norm`)
TRAIN_DEFAULTS = {
    "learning_rate": 0.01,
    "batch_size": 16,
    "lr_milestones": [10000],
    "num_workers": 0,
    "progress": False,
    "freeze_bn": True,
}

MAIN_PY = '''"""MONAI Label app for mstl-monai (written by `python -m mstl_monai.label init`)."""

from mstl_monai.label.app import MSTLLabelApp  # noqa: F401  (MONAI Label finds the MONAILabelApp subclass here)
'''


def parse_class_label(text: str | bytes, class_names: list[str], source: str = "<label>") -> int:
    """Parse an image-level class label: JSON ``{"label": "COVID"}`` / ``{"label": 1}`` or the bare name or index.

    Class names match case-insensitively (MONAI Label lower-cases the names it reports in ``/info``).

    Raises:
        ValueError: empty text, or a label that is not one of ``class_names`` (nor an index into it); the
            message names ``source`` and lists the classes.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"{source}: a class label must be UTF-8 text or JSON, got binary data.") from None
    text = text.strip()
    if not text:
        raise ValueError(f"{source}: the label is empty; use one of {class_names}.")
    value: Any = text
    if text[:1] in "{[\"" or text.lstrip("-").isdigit():
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: the label is not valid JSON ({e.msg}); send e.g. {{\"label\": \"{class_names[-1]}\"}}.") from None
    if isinstance(value, dict):
        if "label" not in value:
            raise ValueError(f"{source}: the label JSON has no 'label' key (keys: {sorted(value)}).")
        value = value["label"]
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{source}: label {value!r} is not one of {class_names}.")
    if isinstance(value, int):
        if 0 <= value < len(class_names):
            return value
        raise ValueError(f"{source}: label index {value} is outside 0..{len(class_names) - 1} ({class_names}).")
    lower = [c.lower() for c in class_names]
    if value.strip().lower() in lower:
        return lower.index(value.strip().lower())
    raise ValueError(f"{source}: label {value!r} is not one of {class_names}.")


def thresholded_class(scores: Mapping[str, float], threshold: float = 0.5, positive_class: int = 1) -> str:
    """The predicted class of a binary classifier's ``{class name: probability}`` (in output order): the positive
    class when its probability is above ``threshold``; more classes: the most probable one."""
    from mstl_monai.engines.predictions import thresholded_index

    names = list(scores)
    return names[thresholded_index([scores[n] for n in names], threshold, positive_class)]


def save_state_dict_atomic(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a plain state dict so that readers only ever see the old or the new complete file."""
    from mstl_monai.metrics.io import atomic_write

    with atomic_write(path, "wb") as f:
        torch.save(dict(state), f)


def info_path_exists(model_pt: Path) -> bool:
    from mstl_monai.engines.checkpoint import info_path

    return info_path(model_pt).is_file()


def _set_top_level(config_file: Path, values: Mapping[str, Any]) -> None:
    with open(config_file) as f:
        cfg = yaml.safe_load(f)
    cfg.update(values)
    with open(config_file, "w") as f:
        yaml.safe_dump(cfg, f, sort_keys=False, width=120)


def prepare_app(
    app_dir: str | os.PathLike,
    checkpoint: str | os.PathLike | None,
    bundle_dir: str | os.PathLike | None = None,
    name: str = DEFAULT_MODEL_NAME,
    image_size: int | None = None,
    resize_size: int | None = None,
    backbone: str | None = None,
    n_attn: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    force: bool = False,
) -> Path:
    """Create (or refresh) a MONAI Label app folder serving the bundle with ``checkpoint``.

    Args:
        app_dir: the app folder to write (``main.py`` and ``model/<name>/``).
        checkpoint: a finetuned classifier checkpoint (the bundle's ``models/model.pt`` or any file
            :func:`~mstl_monai.networks.weights.extract_state_dict` reads). Its settings (backbone, ATTN count,
            channels, classes, input size) are read from its settings file ``<checkpoint>.json``
            (:func:`~mstl_monai.engines.checkpoint_settings`), or for an older checkpoint without one, the
            architecture from its keys. ``None``: start from a randomly initialised ``backbone``/``n_attn``
            network (default ``resnet18`` +5; train with ``/train`` before trusting its answers).
        bundle_dir: the bundle to copy (default: the repository's ``bundle/``).
        name: model name served by MONAI Label.
        image_size: crop size (None: the checkpoint's; 224 for a checkpoint that does not say). A value that
            contradicts the checkpoint is an error, as for ``resize_size``, ``backbone`` and ``n_attn``.
        resize_size: longest-side resize before the crop (None: the checkpoint's; 256 if it does not say).
        backbone: backbone (None: the checkpoint's, or ``resnet18`` without a checkpoint).
        n_attn: non-local blocks (None: the checkpoint's, or without a checkpoint 5 for a ResNet and 0 for a ViT).
        overrides: further top-level settings for both configs (e.g. ``{"batch_size": 8, "epochs": 20}``).
        force: replace an existing ``models/model.pt`` of the app (otherwise it is kept: it may hold training
            done through ``/train``).

    Returns:
        The app's bundle folder ``<app_dir>/model/<name>``.

    Raises:
        FileNotFoundError: ``checkpoint`` or the bundle's configs do not exist.
        ValueError: the checkpoint is unreadable or does not fit the network it describes.
    """
    from mstl_monai.networks.factory import build_network
    from mstl_monai.networks.weights import extract_state_dict, read_checkpoint

    app_dir = Path(app_dir)
    bundle_dir = Path(bundle_dir) if bundle_dir else Path(__file__).resolve().parents[2] / "bundle"
    configs = bundle_dir / "configs"
    for f in ("inference.yaml", "train.yaml", "metadata.json", "logging.conf"):
        if not (configs / f).is_file():
            raise FileNotFoundError(f"bundle {bundle_dir} has no configs/{f}; pass the bundle folder (--bundle).")
    from mstl_monai.engines.checkpoint import check_checkpoint_settings, checkpoint_info, write_checkpoint_info

    if checkpoint is not None:
        ckpt_settings = check_checkpoint_settings(
            checkpoint, backbone=backbone, n_attn=n_attn, image_size=image_size, resize_size=resize_size
        )
        state = extract_state_dict(read_checkpoint(checkpoint), str(checkpoint))
        net_cfg = network_config_from_state_dict(state, str(checkpoint))
        image_size, resize_size = ckpt_settings["image_size"], ckpt_settings["resize_size"]
    else:
        state, ckpt_settings = None, {}
        net_cfg = {
            "backbone": backbone or "resnet18",
            # default without a checkpoint: 5 ATTNs for a ResNet, none for a ViT (ATTN blocks are ResNet-only)
            "n_attn": (0 if str(backbone or "").lower().startswith("vit") else 5) if n_attn is None else int(n_attn),
            "in_channels": 1,
            "num_classes": 2,
        }
        image_size, resize_size = image_size or 224, resize_size or 256
    vit = {k: net_cfg[k] for k in ("patch_size", "image_size") if k in net_cfg}  # a ViT's grid is in its weights
    if vit.get("image_size", image_size) != image_size:
        logger.info(f"checkpoint {checkpoint} is a ViT for {vit['image_size']}-px crops: image_size {image_size} -> {vit['image_size']}.")
        image_size = vit["image_size"]
    net = build_network(
        net_cfg["backbone"],
        n_attn=net_cfg["n_attn"],
        n_input_channels=net_cfg["in_channels"],
        num_classes=net_cfg["num_classes"],
        img_size=int(image_size),
        patch_size=vit.get("patch_size"),
        num_layers=net_cfg.get("num_layers"),
        attention_maps=net_cfg.get("attention_maps", 0),
    )
    if state is not None:
        try:
            net.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise ValueError(f"checkpoint {checkpoint} does not fit a {net_cfg} network: {str(e).splitlines()[0]}") from e
    with open(configs / "metadata.json") as f:
        metadata = json.load(f)
    class_names = [v for _, v in sorted(metadata["network_data_format"]["outputs"]["pred"]["channel_def"].items(), key=lambda kv: int(kv[0]))]
    if len(class_names) != net_cfg["num_classes"]:
        raise ValueError(
            f"checkpoint {checkpoint} has {net_cfg['num_classes']} classes but the bundle's metadata names {len(class_names)}: {class_names}."
        )

    model_dir = app_dir / "model" / name
    (model_dir / "configs").mkdir(parents=True, exist_ok=True)
    for f in ("inference.yaml", "train.yaml", "metadata.json", "logging.conf", "multi_gpu_train.yaml", "inference_scan.yaml"):
        if (configs / f).is_file():
            shutil.copy(configs / f, model_dir / "configs" / f)
    for extra in ("docs", "LICENSE"):
        src = bundle_dir / extra
        if src.is_dir():
            shutil.copytree(src, model_dir / extra, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy(src, model_dir / extra)
    settings = {
        "backbone": net_cfg["backbone"],
        "n_attn": net_cfg["n_attn"],
        "in_channels": net_cfg["in_channels"],
        "num_classes": net_cfg["num_classes"],
        "class_names": class_names,
        "image_size": int(image_size),
        "resize_size": int(resize_size),
    }
    if "patch_size" in vit:
        settings["patch_size"] = int(vit["patch_size"])
    settings.update(overrides or {})
    for f in ("inference.yaml", "train.yaml", "inference_scan.yaml"):
        if not (model_dir / "configs" / f).is_file():  # inference_scan.yaml: the scan task is optional
            continue
        extra = TRAIN_DEFAULTS if f == "train.yaml" else {}
        _set_top_level(model_dir / "configs" / f, dict(extra, **settings))
    model_pt = model_dir / "models" / "model.pt"
    info = checkpoint_info(
        **{k: net_cfg[k] for k in ("backbone", "n_attn", "in_channels", "num_classes")},
        image_size=int(image_size),
        resize_size=int(resize_size),
        class_names=class_names,
        stage=ckpt_settings.get("stage"),
        dropout=ckpt_settings.get("dropout"),
        decision_threshold=ckpt_settings.get("decision_threshold"),
        normalize=ckpt_settings.get("normalize"),
    )
    if force or not model_pt.is_file():
        write_checkpoint_info(model_pt, info)
        save_state_dict_atomic(net.state_dict(), model_pt)
    elif not info_path_exists(model_pt):
        write_checkpoint_info(model_pt, info)
    (app_dir / "main.py").write_text(MAIN_PY)
    (model_dir / "app_settings.json").write_text(
        json.dumps(dict(settings, source_checkpoint=str(checkpoint) if checkpoint else None), indent=2)
    )
    return model_dir
