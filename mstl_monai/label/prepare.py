# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Prepare a MONAI Label app folder that serves this plugin's bundle (no MONAI Label import needed here).

A MONAI Label app is a folder with a ``main.py``; ours holds a two-line ``main.py`` that imports
:class:`mstl_monai.label.app.MSTLLabelApp`, and a copy of the bundle under ``model/<name>/`` whose
``configs/inference.yaml`` and ``configs/train.yaml`` carry the network settings of the checkpoint it serves
(read from the checkpoint itself) and whose ``models/model.pt`` is that checkpoint as a plain state dict. The
bundle in the repository is never written to; ``/train`` replaces the app's ``models/model.pt`` atomically.

An app folder that already holds this model (or another ``main.py``) is replaced only when asked (``force``): the
new bundle is written into a hidden folder beside it and swapped in in one step, so a run killed at any moment
leaves the old app or the new one, never a mix.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from mstl_monai.networks.factory import network_config_from_state_dict  # noqa: F401  (re-exported, in __all__)
from mstl_monai.networks.sidecar import ARCH_KEYS
from mstl_monai.utils.bundle import find_bundle
from mstl_monai.utils.io import atomic_write

__all__ = [
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
#: images on a 1x1 res5 map make the finetune diverge (:mod:`mstl_monai.handlers.batch_norm`)
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


def save_state_dict_atomic(state: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Write a plain state dict so that readers only ever see the old or the new complete file."""
    with atomic_write(path, "wb") as f:
        torch.save(dict(state), f)


def _exchange(a: Path, b: Path) -> bool:
    """Swap the two existing paths ``a`` and ``b`` in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Returns:
        False where the system or the file system has no such call (nothing was changed).
    """
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without renameat2 (glibc < 2.28, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, f"cannot swap {a} and {b}: {os.strerror(err)}")


def _aside(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def _swap_in(new: Path, target: Path) -> None:
    """Put the finished folder ``new`` at ``target`` in one step; ``new`` then holds the old ``target`` (if any).

    Without an atomic exchange the old folder is renamed aside first (:func:`_aside`), where the next ``init``
    finds it again if the process dies before the new one is renamed in.
    """
    if not target.exists():
        os.rename(new, target)
    elif not _exchange(new, target):
        os.rename(target, _aside(target))
        os.rename(new, target)
        os.rename(_aside(target), new)


def _check_free(app_dir: Path, model_dir: Path, force: bool) -> None:
    """Refuse (``FileExistsError``) to write over an existing bundle ``model_dir`` or another ``main.py`` unless
    ``force``; put back a bundle an earlier killed ``init`` left aside, and remove its unfinished folders."""
    if not model_dir.exists() and _aside(model_dir).is_dir():
        os.rename(_aside(model_dir), model_dir)
        logger.warning(f"{model_dir}: put back the bundle an interrupted init had moved aside.")
    for stale in model_dir.parent.glob(f".{model_dir.name}.init-*") if model_dir.parent.is_dir() else ():
        shutil.rmtree(stale, ignore_errors=True)
    main_py = app_dir / "main.py"
    taken = [str(model_dir.relative_to(app_dir))] if model_dir.exists() else []
    if main_py.is_file() and main_py.read_bytes() != MAIN_PY.encode():
        taken.append("a main.py of its own")
    if taken and not force:
        raise FileExistsError(
            f"app folder {app_dir} already holds {' and '.join(taken)}: pass --force to replace its model.pt, "
            "settings, configs and main.py (weights trained there through /train are lost), or choose another --app-dir."
        )


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
            :func:`~mstl_monai.networks.checkpoint.load_network` reads). Its settings (backbone, ATTN count,
            channels, classes, input size) are read from its settings file ``<checkpoint>.json``
            (:func:`~mstl_monai.networks.checkpoint.checkpoint_settings`), or for an older checkpoint without one, the
            architecture from its keys. ``None``: start from a randomly initialised ``backbone``/``n_attn``
            network (default ``resnet18`` +5; train with ``/train`` before trusting its answers).
        bundle_dir: the bundle to copy (None: ``$MSTL_BUNDLE_DIR``, else ``bundle/`` in the current folder;
            :func:`~mstl_monai.utils.bundle.find_bundle`).
        name: model name served by MONAI Label.
        image_size: crop size (None: the checkpoint's; 224 for a checkpoint that does not say). A value that
            contradicts the checkpoint is an error, as for ``resize_size``, ``backbone`` and ``n_attn``.
        resize_size: longest-side resize before the crop (None: the checkpoint's; 256 if it does not say).
        backbone: backbone (None: the checkpoint's, or ``resnet18`` without a checkpoint).
        n_attn: non-local blocks (None: the checkpoint's, or without a checkpoint 5 for a ResNet and 0 for a ViT).
        overrides: further top-level settings for both configs (e.g. ``{"batch_size": 8, "epochs": 20}``).
        force: replace the app's bundle ``model/<name>/`` (its ``models/model.pt``, which may hold training done
            through ``/train``, its settings file and configs) and ``main.py`` when they exist; otherwise that is
            refused.

    Returns:
        The app's bundle folder ``<app_dir>/model/<name>``.

    Raises:
        FileExistsError: the app already holds ``model/<name>/`` or a ``main.py`` of its own, and not ``force``.
        FileNotFoundError: ``checkpoint`` or the bundle's configs do not exist (naming the folder, ``--bundle`` and
            ``MSTL_BUNDLE_DIR``).
        ValueError: the checkpoint is unreadable or does not fit the network it describes.
    """
    from mstl_monai.networks.checkpoint import load_network
    from mstl_monai.networks.factory import build_network

    app_dir = Path(app_dir)
    _check_free(app_dir, app_dir / "model" / name, force)
    needed = [f"configs/{f}" for f in ("inference.yaml", "train.yaml", "metadata.json", "logging.conf")]
    bundle_dir = find_bundle(bundle_dir, needed, option="--bundle")
    configs = bundle_dir / "configs"
    if checkpoint is not None:  # read once: settings checked against the given ones, weights loaded strictly
        net, ckpt_settings = load_network(
            checkpoint, backbone=backbone, n_attn=n_attn, image_size=image_size, resize_size=resize_size
        )
        net_cfg = {k: ckpt_settings[k] for k in ARCH_KEYS}
        image_size, resize_size = ckpt_settings["image_size"], ckpt_settings["resize_size"]
        vit = {k: ckpt_settings[k] for k in ("patch_size",) if ckpt_settings.get(k) is not None}
    else:
        ckpt_settings = {}
        net_cfg = {
            "backbone": backbone or "resnet18",
            # default without a checkpoint: 5 ATTNs for a ResNet, none for a ViT (ATTN blocks are ResNet-only)
            "n_attn": (0 if str(backbone or "").lower().startswith("vit") else 5) if n_attn is None else int(n_attn),
            "in_channels": 1,
            "num_classes": 2,
        }
        image_size, resize_size, vit = image_size or 224, resize_size or 256, {}
        net = build_network(
            net_cfg["backbone"],
            n_attn=net_cfg["n_attn"],
            n_input_channels=net_cfg["in_channels"],
            num_classes=net_cfg["num_classes"],
            img_size=int(image_size),
        )
    with open(configs / "metadata.json") as f:
        metadata = json.load(f)
    class_names = [v for _, v in sorted(metadata["network_data_format"]["outputs"]["pred"]["channel_def"].items(), key=lambda kv: int(kv[0]))]
    if len(class_names) != net_cfg["num_classes"]:
        raise ValueError(
            f"checkpoint {checkpoint} has {net_cfg['num_classes']} classes but the bundle's metadata names {len(class_names)}: {class_names}."
        )

    model_dir = app_dir / "model" / name
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.init-", dir=model_dir.parent))  # the new bundle, swapped in below
    try:
        _write_bundle(stage, bundle_dir, configs, net, net_cfg, vit, class_names, image_size, resize_size,
                      ckpt_settings, overrides, checkpoint)
        _swap_in(stage, model_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)  # after the swap: the old bundle
    with atomic_write(app_dir / "main.py") as f:
        f.write(MAIN_PY)
    return model_dir


def _write_bundle(
    bundle: Path,
    bundle_dir: Path,
    configs: Path,
    net: torch.nn.Module,
    net_cfg: Mapping[str, Any],
    vit: Mapping[str, Any],
    class_names: list[str],
    image_size: int,
    resize_size: int,
    ckpt_settings: Mapping[str, Any],
    overrides: Mapping[str, Any] | None,
    checkpoint: str | os.PathLike | None,
) -> None:
    """Write the app's bundle folder ``bundle`` (configs with the network's settings, ``models/model.pt`` and its
    settings file, ``app_settings.json``) for :func:`prepare_app`."""
    from mstl_monai.networks.sidecar import NORMALIZE, checkpoint_info, write_checkpoint_info

    bundle.chmod(0o755)  # mkdtemp makes it private
    (bundle / "configs").mkdir()
    for f in ("inference.yaml", "train.yaml", "metadata.json", "logging.conf", "multi_gpu_train.yaml", "inference_scan.yaml"):
        if (configs / f).is_file():
            shutil.copy(configs / f, bundle / "configs" / f)
    for extra in ("docs", "LICENSE"):
        src = bundle_dir / extra
        if src.is_dir():
            shutil.copytree(src, bundle / extra, dirs_exist_ok=True)
        elif src.is_file():
            shutil.copy(src, bundle / extra)
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
        if not (bundle / "configs" / f).is_file():  # inference_scan.yaml: the scan task is optional
            continue
        extra = TRAIN_DEFAULTS if f == "train.yaml" else {}
        _set_top_level(bundle / "configs" / f, dict(extra, **settings))
    model_pt = bundle / "models" / "model.pt"
    info = checkpoint_info(
        **{k: net_cfg[k] for k in ("backbone", "n_attn", "in_channels", "num_classes")},
        image_size=int(image_size),
        resize_size=int(resize_size),
        class_names=class_names,
        stage=ckpt_settings.get("stage"),
        dropout=ckpt_settings.get("dropout"),
        decision_threshold=ckpt_settings.get("decision_threshold"),
        normalize=ckpt_settings.get("normalize") or NORMALIZE,
    )
    write_checkpoint_info(model_pt, info)  # the settings file first, as the training stages write them
    save_state_dict_atomic(net.state_dict(), model_pt)
    (bundle / "app_settings.json").write_text(
        json.dumps(dict(settings, source_checkpoint=str(checkpoint) if checkpoint else None), indent=2)
    )
