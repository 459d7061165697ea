# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Weights into and between the stages: torchvision ImageNet checkpoints and stage-to-stage transfer."""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from mstl_monai.networks.state_dicts import (  # noqa: F401  (WRAPPER_KEYS: re-exported)
    WRAPPER_KEYS,
    _adapt_conv1,
    _is_excluded,
    _source,
    extract_state_dict,
    read_checkpoint,
)

__all__ = ["load_pretrained", "load_torchvision_weights", "load_stage_checkpoint", "read_checkpoint", "extract_state_dict"]

logger = logging.getLogger(__name__)

_BACKBONE_RE = re.compile(r"^(conv1|bn1|layer[1-4])\.")
_LAYER_RE = re.compile(r"^layer([1-4])\.(\d+)\.")
_ATTN_RE = re.compile(r"^attn\.([^.]+)\.")


def _backbone_prefix(state: Mapping[str, torch.Tensor], source: str) -> str:
    """Prefix under which a ResNet backbone (``conv1.weight`` and ``layer1.0.conv1.weight``) lives in ``state``."""
    candidates = [
        k[: -len("conv1.weight")]
        for k in state
        if k.endswith("conv1.weight") and f"{k[: -len('conv1.weight')]}layer1.0.conv1.weight" in state
    ]
    candidates = [p for p in candidates if "encoder_k" not in p] or candidates
    if not candidates:
        raise ValueError(
            f"checkpoint {source} holds no ResNet backbone (no 'conv1.weight' beside 'layer1.0.conv1.weight'); "
            f"its first keys are {list(state)[:8]}."
        )
    if "" in candidates:
        return ""
    preferred = [p for p in candidates if "encoder_q" in p] or candidates
    return min(preferred, key=len)


def _describe(keys: Sequence[str]) -> str:
    """Short architecture description from state-dict keys: stage depths, block type, attention blocks."""
    depth = [0, 0, 0, 0]
    for k in keys:
        m = _LAYER_RE.match(k)
        if m:
            depth[int(m.group(1)) - 1] = max(depth[int(m.group(1)) - 1], int(m.group(2)) + 1)
    block = "bottleneck" if any(k.endswith(".conv3.weight") for k in keys) else "basic"
    attn = sorted({m.group(1) for k in keys if (m := _ATTN_RE.match(k))})
    return f"{block} blocks, layers {depth}, {len(attn)} attention block(s){' ' + str(attn) if attn else ''}"


def _transfer(
    net: nn.Module,
    src: dict[str, torch.Tensor],
    source: str,
    exclude_prefixes: Sequence[str],
    adapt_input: bool,
) -> dict[str, list[str]]:
    prefix = _backbone_prefix(src, source)
    if prefix:
        logger.info(f"checkpoint {source}: backbone found under prefix '{prefix}'.")
    ours = {k[len(prefix) :]: v for k, v in src.items() if k.startswith(prefix)}
    others = [k for k in src if not k.startswith(prefix)]
    dst = net.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "new": [], "dropped": [], "adapted": []}
    new_state: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    missing_backbone: list[str] = []

    src_attn = {m.group(1) for k in ours if (m := _ATTN_RE.match(k))}
    dst_attn = {m.group(1) for k in dst if (m := _ATTN_RE.match(k))}
    if src_attn and src_attn != dst_attn:
        raise ValueError(
            f"checkpoint {source} does not fit the network: its non-local blocks {sorted(src_attn)} differ from the "
            f"network's {sorted(dst_attn)} (another n_attn or another depth). Checkpoint: {_describe(list(ours))}; "
            f"network: {_describe(list(dst))}."
        )

    for key, target in dst.items():
        if _is_excluded(key, exclude_prefixes):
            report["new"].append(key)
            continue
        if key not in ours:
            report["new"].append(key)
            # old checkpoints (e.g. torchvision's 2017 ImageNet weights) have no BatchNorm step counters
            if _BACKBONE_RE.match(key) and not key.endswith("num_batches_tracked"):
                missing_backbone.append(key)
            continue
        value = ours[key]
        if value.shape == target.shape:
            new_state[key] = value.to(dtype=target.dtype) if value.is_floating_point() else value
            report["loaded"].append(key)
        elif (
            adapt_input
            and key == "conv1.weight"
            and value.ndim == target.ndim
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            new_state[key] = _adapt_conv1(value.to(dtype=torch.float64), target.shape[1]).to(dtype=target.dtype)
            report["adapted"].append(key)
        elif _BACKBONE_RE.match(key) or _ATTN_RE.match(key):
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs network {tuple(target.shape)}")
        else:  # a task head of another shape
            report["new"].append(key)
    used = set(new_state)
    report["dropped"] = [prefix + k for k in ours if k not in used] + others
    unexpected_backbone = [k for k in ours if _BACKBONE_RE.match(k) and k not in dst]

    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} tensor(s) of another shape ({'; '.join(mismatched[:4])})")
    if missing_backbone:
        problems.append(
            f"{len(missing_backbone)} backbone tensor(s) missing from the checkpoint ({missing_backbone[:4]})"
        )
    if unexpected_backbone:
        problems.append(f"{len(unexpected_backbone)} backbone tensor(s) the network lacks ({unexpected_backbone[:4]})")
    if problems:
        hint = ""
        if any(k.endswith("downsample.0.bias") for k in missing_backbone):
            hint = " The network has downsample biases: build it with bias_downsample=False (torchvision layout)."
        raise ValueError(
            f"checkpoint {source} does not fit the network: {'; '.join(problems)}. "
            f"Checkpoint: {_describe(list(ours))}; network: {_describe(list(dst))}.{hint}"
        )
    if dst_attn and not src_attn:
        logger.info(f"checkpoint {source} has no non-local blocks: the network's {sorted(dst_attn)} stay at identity.")
    net.load_state_dict({**dst, **new_state}, strict=True)
    return report


def load_torchvision_weights(net: nn.Module, path_or_state_dict: str | Path | Mapping) -> dict[str, list[str]]:
    """
    Load a torchvision ResNet checkpoint (e.g. the ImageNet weights of ``torchvision.models.resnet50``) into an
    :class:`~mstl_monai.networks.nets.AttentiveResNet` built with the torchvision layout (the defaults).

    The backbone must match exactly (same block type and depths), otherwise a ``ValueError`` says what differs.
    The non-local blocks are not in the checkpoint and stay at their identity initialisation (reported as
    ``new``), so the network computes exactly what the torchvision network computes. The ``fc`` head is loaded
    when its shape matches, otherwise it is dropped and stays new. For a network with another number of input
    channels, ``conv1.weight`` is adapted (summed over RGB for one channel) and reported under ``adapted``.
    Half-precision checkpoints are cast to the network's dtype. Files are read with ``weights_only=True``.

    Args:
        net: the network to fill (in place).
        path_or_state_dict: checkpoint file, or an already loaded (possibly wrapped) state dict.

    Returns:
        ``{"loaded": [...], "new": [...], "dropped": [...], "adapted": [...]}`` lists of state-dict keys
        (network keys for ``loaded``/``new``/``adapted``, checkpoint keys for ``dropped``).

    Raises:
        FileNotFoundError: missing file.
        ValueError: corrupt or unsafe file, or a checkpoint of another architecture.
    """
    if _is_vit(net):  # torchvision/timm ViT checkpoints: mstl_monai.networks.vit_weights
        from mstl_monai.networks.vit_weights import load_vit_weights

        return load_vit_weights(net, path_or_state_dict, exclude_prefixes=())
    stride = getattr(getattr(net, "conv1", None), "stride", None)
    if stride is not None and any(s != 2 for s in stride):
        warnings.warn(
            f"the network's stem stride is {stride}: torchvision weights expect conv1_t_stride=2, outputs will differ.",
            stacklevel=2,
        )
    src, source = _source(path_or_state_dict)
    return _transfer(net, src, source, exclude_prefixes=(), adapt_input=True)


def load_stage_checkpoint(
    net: nn.Module, path: str | Path | Mapping, exclude_prefixes: Sequence[str] = ("fc",)
) -> dict[str, list[str]]:
    """
    Load the previous stage's checkpoint into the next stage's network, keeping the backbone (and the non-local
    blocks) and leaving the task head new.

    Accepted checkpoints: a state dict; a MONAI/ignite ``CheckpointSaver`` dict (network under
    ``"network"``/``"net"``/``"model"``/``"state_dict"``, other entries ignored); a MoCo/SSTL checkpoint whose
    backbone lives under a prefix (``encoder_q.backbone.``, ``backbone.``...): the prefix is found from the keys
    (the query encoder is preferred over the key encoder) and the projection heads, queue and region head are
    reported as dropped. Keys under ``exclude_prefixes`` are never loaded; another head that is not excluded is
    loaded when its shape matches and dropped otherwise.

    An RGB checkpoint (STL-N on natural images) loaded into a network with another number of input channels has its
    stem kernel adapted as for torchvision weights: summed over the three channels for a 1-channel CT network, which
    gives exactly the RGB network's output for a grey image copied to the three channels (reported under
    ``adapted``).

    A baseline checkpoint may be loaded into an attentive network (the new non-local blocks stay the identity);
    a checkpoint whose non-local blocks differ from the network's (another ``n_attn``), another depth or block
    type, or a corrupt file raises a ``ValueError`` naming the file and what differs.

    Args:
        net: the network to fill (in place).
        path: checkpoint file (or an already loaded dict).
        exclude_prefixes: network keys never loaded from the checkpoint (the task head, default ``("fc",)``).

    Returns:
        ``{"loaded": [...], "new": [...], "dropped": [...], "adapted": [...]}`` as :func:`load_torchvision_weights`.
    """
    if _is_vit(net):
        from mstl_monai.networks.vit_weights import load_vit_weights

        return load_vit_weights(net, path, exclude_prefixes=tuple(exclude_prefixes))
    src, source = _source(path)
    return _transfer(net, src, source, exclude_prefixes=tuple(exclude_prefixes), adapt_input=True)


def _is_vit(net: nn.Module) -> bool:
    from mstl_monai.networks.nets.vit import VisionTransformer

    return isinstance(net, VisionTransformer)


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
    from mstl_monai.networks.nets.mag_sd import MultiscaleAttentionNet

    if isinstance(net, MultiscaleAttentionNet):  # MAG-SD: the weights go to its backbone; the attention head is new
        net = net.backbone
    if _is_vit(net):
        report, kind = _load_vit(net, path, exclude_prefixes)
    elif _looks_like_torchvision(path):
        report = load_torchvision_weights(net, path)
        kind = "torchvision-layout ResNet"  # ImageNet's, or an STL-N backbone saved as torchvision names it
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
    from mstl_monai.networks.vit_weights import detect_vit_format, load_vit_weights

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
