# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Networks by name: the backbone factory of the bundle configs, and the way back from a state dict to the
settings that built it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from mstl_monai.networks import nets
from mstl_monai.utils.names import BACKBONES, RESNET_BACKBONES, VIT_BACKBONES

__all__ = [
    "BACKBONES",
    "RESNET_BACKBONES",
    "VIT_BACKBONES",
    "build_network",
    "network_config_from_state_dict",
]

#: settings only the ViTs take (dropped for the ResNets, so one bundle config serves both)
_VIT_ONLY = ("img_size", "patch_size", "hidden_size", "mlp_dim", "num_layers", "num_heads", "dropout_rate")
# blocks per stage -> backbone, for basic (two 3x3 convs) and bottleneck (conv3) blocks
_BASIC = {(2, 2, 2, 2): "resnet18", (3, 4, 6, 3): "resnet34"}
_BOTTLENECK = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101", (3, 8, 36, 3): "resnet152"}


def build_network(name: str = "resnet50", n_attn: int = 0, attention_maps: int = 0, **kwargs: Any) -> torch.nn.Module:
    """Build a backbone by name, e.g. from a bundle config: an attentive ResNet (``resnet18`` ... ``resnet152``) or
    a Vision Transformer (``vit_tiny``, ``vit_small``, ``vit_base``, :class:`~mstl_monai.networks.nets.VisionTransformer`).

    Args:
        name: backbone name, one of :data:`BACKBONES` (``attentive_`` prefix accepted for the ResNets).
        n_attn: number of non-local blocks of a ResNet (0, 1 or 5, as in the paper); must be 0 for a ViT.
        attention_maps: 0 (default): the backbone itself; ``M > 0``: the backbone inside MAG-SD's
            :class:`~mstl_monai.networks.nets.MultiscaleAttentionNet` with ``M`` attention maps (ResNets only).
        kwargs: passed on to the factory (``n_input_channels``, ``num_classes``, ``dropout``, ...). The ViT settings
            ``img_size`` (input size of the position embeddings), ``patch_size``, ``hidden_size``, ``mlp_dim``,
            ``num_layers``, ``num_heads``, ``dropout_rate`` are ignored for a ResNet (``None`` values are dropped).
    """
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


def network_config_from_state_dict(state: Mapping[str, torch.Tensor], source: str = "<checkpoint>") -> dict:
    """Read ``backbone``, ``n_attn``, ``in_channels`` and ``num_classes`` off an attentive ResNet state dict.

    Args:
        state: a flat state dict of :func:`build_network`'s network (torchvision key names,
            non-local blocks under ``attn.<stage>_<block>``).
        source: the checkpoint's name, for error messages.

    Raises:
        ValueError: when the keys are not those of an (attentive) ResNet classifier; the message names ``source``.
    """
    if "backbone.conv1.weight" in state and any(k.startswith("attention.") for k in state):
        # MAG-SD (MultiscaleAttentionNet): the backbone under ``backbone.``, M attention maps under ``attention.``
        inner = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        maps = {
            int(v.shape[0]) for k, v in state.items() if k.startswith("attention.scales.") and k.endswith(".0.weight")
        }
        if len(maps) != 1:
            raise ValueError(f"{source}: MAG-SD attention head with inconsistent map counts {sorted(maps)}.")
        return {**network_config_from_state_dict(inner, source), "attention_maps": maps.pop()}
    if "patch_embedding.patch_embeddings.weight" in state and "fc.weight" in state:
        return _vit_config_from_state_dict(state, source)
    for key in ("conv1.weight", "fc.weight"):
        if key not in state:
            raise ValueError(f"{source} is not a ResNet classifier checkpoint: it has no {key!r}.")
    blocks = []
    for stage in range(1, 5):
        ids = {int(m.group(1)) for k in state for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        blocks.append(len(ids))
    bottleneck = any(re.match(r"layer1\.0\.conv3\.weight$", k) for k in state)
    table = _BOTTLENECK if bottleneck else _BASIC
    backbone = table.get(tuple(blocks))
    if backbone is None:
        raise ValueError(f"{source}: {'bottleneck' if bottleneck else 'basic'} blocks per stage {blocks} match no supported ResNet.")
    attn = {k.split(".")[1] for k in state if k.startswith("attn.")}
    return {
        "backbone": backbone,
        "n_attn": len(attn),
        "in_channels": int(state["conv1.weight"].shape[1]),
        "num_classes": int(state["fc.weight"].shape[0]),
    }


def _vit_config_from_state_dict(state: Mapping[str, torch.Tensor], source: str) -> dict:
    """``backbone`` (by width), ``num_layers`` (blocks), ``patch_size``, ``image_size`` (patch grid x patch) of a ViT
    classifier."""
    patch = state["patch_embedding.patch_embeddings.weight"]
    width, depth = int(patch.shape[0]), len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    names = {192: "vit_tiny", 384: "vit_small", 768: "vit_base"}
    if names.get(width) not in VIT_BACKBONES or depth < 1 or patch.shape[2] != patch.shape[3]:
        raise ValueError(f"{source}: a ViT of width {width} and {depth} blocks is none of {VIT_BACKBONES}.")
    grid = math.isqrt(int(state["patch_embedding.position_embeddings"].shape[1]))
    return {
        "backbone": names[width],
        "n_attn": 0,
        "in_channels": int(patch.shape[1]),
        "num_classes": int(state["fc.weight"].shape[0]),
        "patch_size": int(patch.shape[2]),
        "image_size": grid * int(patch.shape[2]),
        "num_layers": depth,
    }
