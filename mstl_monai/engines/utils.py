# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Helpers the bundle configs call: network by name, pretrained weights, datalist checks."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["BACKBONES", "RESNET_BACKBONES", "VIT_BACKBONES", "build_network", "load_pretrained", "check_datalist", "split_datalist", "require_file", "readable_datalist", "collect_files"]

from mstl_monai.data.datalists import split_datalist  # noqa: E402  (re-exported for bundle configs)

logger = logging.getLogger(__name__)

#: backbone names accepted by :func:`build_network`
RESNET_BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
VIT_BACKBONES = ("vit_tiny", "vit_small", "vit_base")
BACKBONES = RESNET_BACKBONES + VIT_BACKBONES
#: settings only the ViTs take (dropped for the ResNets, so one bundle config serves both)
_VIT_ONLY = ("img_size", "patch_size", "hidden_size", "mlp_dim", "num_layers", "num_heads", "dropout_rate")


def build_network(name: str = "resnet50", n_attn: int = 0, attention_maps: int = 0, **kwargs: Any) -> torch.nn.Module:
    """Build a backbone by name, e.g. from a bundle config: an attentive ResNet (``resnet18`` ... ``resnet152``) or
    a Vision Transformer (``vit_tiny``, ``vit_small``, ``vit_base``, :class:`~mstl_monai.networks.nets.VisionTransformer`).

    Args:
        name: backbone name, one of :data:`BACKBONES` (``attentive_`` prefix accepted for the ResNets).
        n_attn: number of non-local blocks of a ResNet (0, 1 or 5; SPEC.md section 2); must be 0 for a ViT.
        attention_maps: 0 (default): the backbone itself; ``M > 0``: the backbone inside MAG-SD's
            :class:`~mstl_monai.networks.nets.MultiscaleAttentionNet` with ``M`` attention maps (ResNets only).
        kwargs: passed on to the factory (``n_input_channels``, ``num_classes``, ``dropout``, ...). The ViT settings
            ``img_size`` (input size of the position embeddings), ``patch_size``, ``hidden_size``, ``mlp_dim``,
            ``num_layers``, ``num_heads``, ``dropout_rate`` are ignored for a ResNet (``None`` values are dropped).
    """
    from mstl_monai.networks import nets

    key = str(name).lower().replace("attentive_", "").replace("-", "_")
    key = key if key.startswith("vit") else key.replace("_", "")
    if key not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}: use one of {BACKBONES}.")
    if isinstance(n_attn, bool) or not str(n_attn).strip().isdigit():
        raise ValueError(f"n_attn must be a whole number of non-local blocks (0, 1 or 5), got {n_attn!r}.")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    attention_maps = 0 if attention_maps is None else attention_maps
    if key in VIT_BACKBONES and str(attention_maps).strip() not in ("0", ""):
        raise ValueError(
            f"attention_maps={attention_maps}: MAG-SD's multiscale attention head needs a ResNet's feature maps "
            f"of several scales; a ViT ({name!r}) has one patch grid: use attention_maps 0 (mag_sd false)."
        )
    if key in VIT_BACKBONES:
        if int(n_attn) != 0:
            raise ValueError(
                f"n_attn={n_attn}: non-local (ATTN) blocks belong to the ResNets; a ViT ({name!r}) needs n_attn 0."
            )
        return nets.VITS[key](**kwargs)
    if isinstance(attention_maps, bool) or not str(attention_maps).strip().isdigit():
        raise ValueError(
            f"attention_maps must be a whole number of MAG-SD attention maps (0: none), got {attention_maps!r}."
        )
    for k in _VIT_ONLY:
        kwargs.pop(k, None)
    net = getattr(nets, f"attentive_{key}")(n_attn=int(n_attn), **kwargs)
    if int(attention_maps):
        net = nets.MultiscaleAttentionNet(net, num_maps=int(attention_maps))
    return net


def load_pretrained(net: torch.nn.Module, path: str | os.PathLike | None, exclude_prefixes: Sequence[str] = ("fc",)):
    """Initialise ``net``'s backbone from ``path`` ('' or None: leave it as it is, i.e. train from scratch).

    ``path`` is either a torchvision ImageNet checkpoint (e.g. ``resnet50-11ad3fa6.pth``, the STL-N stage
    skipped by importing ImageNet weights), for a ViT backbone a torchvision or timm ``VisionTransformer`` file
    (the format is detected from the keys, :func:`mstl_monai.networks.load_vit_weights`), or a checkpoint written
    by an earlier stage of this bundle (STL-N, STL-M, SSTL-M). The head is dropped when its shape differs; a checkpoint that does not fit
    raises ``ValueError`` naming the file. Returns the loaded / new / dropped key report.
    """
    if path is None or str(path) == "":
        logger.info("no pretrained checkpoint given: training from scratch")
        return None
    path = str(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained checkpoint {path!r} does not exist.")
    from mstl_monai.networks import load_stage_checkpoint, load_torchvision_weights

    from mstl_monai.networks.nets import MultiscaleAttentionNet, VisionTransformer

    if isinstance(net, MultiscaleAttentionNet):  # MAG-SD: the weights go to its backbone; the attention head is new
        net = net.backbone

    if isinstance(net, VisionTransformer):
        report, kind = _load_vit(net, path, exclude_prefixes)
    elif _looks_like_torchvision(path):
        report = load_torchvision_weights(net, path)
        kind = "torchvision ImageNet"
    else:
        report = load_stage_checkpoint(net, path, exclude_prefixes=tuple(exclude_prefixes))
        kind = "stage"
    logger.info(
        f"loaded {kind} checkpoint {path}: {len(report['loaded'])} tensors loaded, {len(report['new'])} new,"
        f" {len(report['dropped'])} dropped, {len(report.get('adapted', []))} adapted"
    )
    return report


def _load_vit(net: torch.nn.Module, path: str, exclude_prefixes: Sequence[str]) -> tuple[dict, str]:
    """A torchvision or timm ViT file (ImageNet weights, the head kept when it fits) or a stage checkpoint (the
    ``exclude_prefixes`` head left new), detected from the keys."""
    from mstl_monai.networks import detect_vit_format, extract_state_dict, load_vit_weights, read_checkpoint

    state = extract_state_dict(read_checkpoint(path), path)
    fmt = detect_vit_format(state)
    if fmt in ("torchvision", "timm"):
        return load_vit_weights(net, state, exclude_prefixes=(), source=path), f"{fmt} ViT"
    report = load_vit_weights(net, state, exclude_prefixes=tuple(exclude_prefixes), source=path)
    return report, "stage (ViT)"


def _looks_like_torchvision(path: str) -> bool:
    """A torchvision ResNet checkpoint is a flat state dict with ``conv1.weight`` of 3 input channels and no
    wrapper keys of our stages (``network``, ``encoder_q.``, ``attn.``)."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path!r}: {e}") from e
    if not isinstance(sd, dict) or "conv1.weight" not in sd:
        return False
    if any(k.startswith(("attn.", "encoder_q.", "backbone.")) for k in sd):
        return False
    w = sd["conv1.weight"]
    return isinstance(w, torch.Tensor) and w.ndim == 4 and w.shape[1] == 3 and sd.get("fc.weight") is not None


def check_datalist(datalist: Sequence[dict], num_classes: int, name: str = "data", root: str | None = None):
    """Fail before training starts when a datalist is empty, lacks keys, names missing files or bad labels.

    Args:
        datalist: list of ``{"image": path, "label": int}`` dicts.
        num_classes: labels must lie in ``[0, num_classes)``.
        name: the datalist's name for messages (``train``, ``val``, ...).
        root: the data folder, quoted in messages.
    """
    where = f" (dataset_dir={root})" if root else ""
    if len(datalist) == 0:
        raise ValueError(f"the {name} datalist is empty{where}.")
    for i, item in enumerate(datalist):
        for key in ("image", "label"):
            if key not in item:
                raise KeyError(f"{name} datalist item {i} has no {key!r} key: {item}")
        if not os.path.isfile(str(item["image"])):
            raise FileNotFoundError(f"{name} datalist item {i}: image file {item['image']!r} does not exist{where}.")
        label = item["label"]
        try:
            ok = int(label) == label and 0 <= int(label) < num_classes
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(
                f"{name} datalist item {i} ({item['image']}): label {label!r} is outside the classes 0..{num_classes - 1}."
            )
    return list(datalist)


def require_file(path: str | os.PathLike, what: str = "file") -> str:
    """Return ``path`` when it is an existing file, else raise ``FileNotFoundError`` naming it and ``what``."""
    if not os.path.isfile(str(path)):
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist.")
    return str(path)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".nii.gz", ".tif", ".tiff", ".bmp")


def collect_files(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expand files and folders into a list of files: folders are searched recursively (sorted) for image files,
    including extension-less files (DICOM); files named directly are kept as given, checked later by the loader."""
    files: list[str] = []
    for entry in inputs:
        entry = str(entry)
        if os.path.isdir(entry):
            for root, _, names in sorted(os.walk(entry)):
                files.extend(
                    os.path.join(root, n) for n in sorted(names) if n.lower().endswith(IMAGE_SUFFIXES) or "." not in n
                )
        else:
            files.append(entry)
    return files


def readable_datalist(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    loader: Any,
    skipped_csv: str | None = None,
    key: str = "image",
) -> list[dict]:
    """Turn files and/or folders into an inference datalist, leaving out (and reporting) unreadable files.

    Every candidate is loaded once with ``loader`` (e.g. ``LoadCTSlice()``); a file that raises is logged with
    its reason, written to ``skipped_csv`` if given, and skipped, so one bad file never ends an inference run.

    Args:
        inputs: a file, a folder (searched recursively for image files) or a list of them.
        loader: callable that loads one path (raises on unreadable input).
        skipped_csv: optional CSV ``file,reason`` of the skipped inputs.
        key: the datalist key of the path.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = collect_files(inputs)
    good, skipped = [], []
    for f in files:
        try:
            if not os.path.isfile(f):
                raise FileNotFoundError("no such file")
            loader(f)
        except Exception as e:  # report and go on: one unreadable file must not end the run
            reason = f"{type(e).__name__}: {e}".replace("\n", " ")
            logger.warning(f"skipping {f}: {reason}")
            skipped.append((f, reason))
            continue
        good.append({key: f, f"{key}_path": f})
    if skipped_csv is not None:
        os.makedirs(os.path.dirname(os.path.abspath(skipped_csv)), exist_ok=True)
        with open(skipped_csv, "w") as fh:
            fh.write("file,reason\n")
            for f, r in skipped:
                fh.write(f'"{f}","{r.replace(chr(34), chr(39))}"\n')
    if not good:
        raise ValueError(f"none of the {len(files)} inputs could be read (inputs: {list(inputs)}).")
    return good
