# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""ViT weights into :class:`~mstl_monai.networks.nets.VisionTransformer`: torchvision / timm ImageNet checkpoints
and the stages' own checkpoints, with the RGB patch kernel adapted and the position embeddings resized."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn as nn

from mstl_monai.networks.state_dicts import _adapt_conv1, _is_excluded, _source

__all__ = ["VIT_FORMATS", "detect_vit_format", "convert_vit_state_dict", "load_vit_weights"]

logger = logging.getLogger(__name__)

#: checkpoint layouts :func:`load_vit_weights` reads
VIT_FORMATS = ("torchvision", "timm", "mstl")

_PATCH = "patch_embedding.patch_embeddings.weight"
_POS = "patch_embedding.position_embeddings"
_BLOCK_RE = re.compile(r"^blocks\.(\d+)\.")

_TV_BLOCK = {
    "ln_1": "norm1",
    "ln_2": "norm2",
    "self_attention.in_proj_weight": "attn.qkv.weight",
    "self_attention.in_proj_bias": "attn.qkv.bias",
    "self_attention.out_proj": "attn.out_proj",
    "mlp.0": "mlp.linear1",
    "mlp.3": "mlp.linear2",
    "mlp.linear_1": "mlp.linear1",  # torchvision < 0.13 names
    "mlp.linear_2": "mlp.linear2",
}
_TIMM_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attn.qkv": "attn.qkv", "attn.proj": "attn.out_proj"}
_TIMM_BLOCK.update({"mlp.fc1": "mlp.linear1", "mlp.fc2": "mlp.linear2"})
#: timm ViT variants whose computation this network does not have (refused rather than silently wrong)
_TIMM_UNSUPPORTED = ("reg_token", ".ls1.", ".ls2.", "fc_norm.", ".q_norm.", ".k_norm.", "norm_pre.", "attn_pool.")
_TIMM_UNSUPPORTED += ("patch_embed.norm.",)


def detect_vit_format(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"torchvision"`` / ``"timm"`` / ``"mstl"`` (this plugin's and MONAI ``ViT``'s names, possibly under a prefix
    such as ``encoder_q.backbone.``) from the keys of a flat state dict, ``None`` for anything else."""
    if "class_token" in state and "conv_proj.weight" in state and "encoder.pos_embedding" in state:
        return "torchvision"
    if "cls_token" in state and "patch_embed.proj.weight" in state and "pos_embed" in state:
        return "timm"
    if any(k.endswith(_PATCH) for k in state):
        return "mstl"
    return None


def _rename_blocks(state: Mapping[str, torch.Tensor], block_prefix: str, table: dict[str, str]):
    out, dropped = {}, []
    pattern = re.compile(rf"^{re.escape(block_prefix)}(\d+)\.(.+)$")
    for key, value in state.items():
        m = pattern.match(key)
        if not m:
            continue
        idx, rest = m.groups()
        for old, new in table.items():
            if rest == old or rest.startswith(old + "."):
                out[f"blocks.{idx}.{new}{rest[len(old):]}"] = value
                break
        else:
            dropped.append(key)
    return out, dropped


def _fold_cls(cls: torch.Tensor, pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Split ``pos`` into the CLS position (added to ``cls``, in float32 as the libraries do) and the grid's."""
    n_grid = pos.shape[1]
    if math.isqrt(n_grid) ** 2 == n_grid:  # no CLS position (timm's no_embed_class)
        return cls, pos, False
    folded = cls.float() + pos[:, :1].float()
    return folded, pos[:, 1:], True


def convert_vit_state_dict(
    state: Mapping[str, torch.Tensor], source: str = "<state dict>"
) -> tuple[dict[str, torch.Tensor], str, list[str], list[str]]:
    """
    A torchvision or timm ``VisionTransformer`` state dict in this plugin's names (MONAI ``ViT`` names, head ``fc``).

    The CLS token's position embedding is added to the CLS token (MONAI's position embeddings cover the patches
    only; the CLS token is a constant, so this is exact). A checkpoint already in this plugin's layout is returned
    as it is (the backbone found under its prefix, e.g. ``encoder_q.backbone.`` of an SSTL-M checkpoint).

    Returns:
        ``(state, format, dropped, folded)``: the converted tensors, the detected format, the checkpoint keys left
        out, and the network keys made from several checkpoint tensors (``cls_token``).

    Raises:
        ValueError: for a state dict that is no ViT of these layouts, or a timm variant with parts this network lacks
            (register tokens, layer scale, ``fc_norm``/average pooling, q/k norms, pre-norm).
    """
    fmt = detect_vit_format(state)
    if fmt is None:
        raise ValueError(
            f"checkpoint {source} holds no ViT of a known layout (torchvision 'class_token'/'conv_proj', timm "
            f"'cls_token'/'patch_embed.proj', or this plugin's '{_PATCH}'); its first keys are {list(state)[:8]}."
        )
    if fmt == "mstl":
        prefixes = [k[: -len(_PATCH)] for k in state if k.endswith(_PATCH)]
        prefixes = [p for p in prefixes if "encoder_k" not in p] or prefixes
        prefix = "" if "" in prefixes else min([p for p in prefixes if "encoder_q" in p] or prefixes, key=len)
        if prefix:
            logger.info(f"checkpoint {source}: ViT backbone found under prefix '{prefix}'.")
        ours = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        dropped = [k for k in state if not k.startswith(prefix)]
        if "classification_head.weight" in ours:  # MONAI ViT without Tanh: the same linear head
            ours["fc.weight"], ours["fc.bias"] = ours.pop("classification_head.weight"), ours.pop("classification_head.bias")
        return ours, fmt, dropped, []
    out: dict[str, torch.Tensor] = {}
    if fmt == "torchvision":
        cls, pos, folded = _fold_cls(state["class_token"], state["encoder.pos_embedding"])
        blocks, dropped = _rename_blocks(state, "encoder.layers.encoder_layer_", _TV_BLOCK)
        top = {"conv_proj": "patch_embedding.patch_embeddings", "encoder.ln": "norm", "heads.head": "fc"}
        used = {"class_token", "encoder.pos_embedding"}
        block_prefix = "encoder.layers."
    else:
        bad = sorted({k for k in state for u in _TIMM_UNSUPPORTED if u in f".{k}" or k.startswith(u)})
        if bad:
            raise ValueError(
                f"checkpoint {source} is a timm ViT variant this network does not compute (register tokens, layer "
                f"scale, fc_norm / average pooling, q/k norms or a pre-norm): {bad[:4]}."
            )
        cls, pos, folded = _fold_cls(state["cls_token"], state["pos_embed"])
        blocks, dropped = _rename_blocks(state, "blocks.", _TIMM_BLOCK)
        top = {"patch_embed.proj": "patch_embedding.patch_embeddings", "norm": "norm", "head": "fc"}
        used = {"cls_token", "pos_embed"}
        block_prefix = "blocks."
    out["cls_token"], out[_POS] = cls, pos
    out.update(blocks)
    for key, value in state.items():
        if key in used or key.startswith(block_prefix):
            continue
        for old, new in top.items():
            if key.startswith(old + ".") and key.count(".") == old.count(".") + 1:
                out[new + key[len(old) :]] = value
                break
        else:
            dropped.append(key)
    return out, fmt, dropped, (["cls_token"] if folded else [])


def _describe(keys: Sequence[str], state: Mapping[str, torch.Tensor]) -> str:
    depth = 1 + max((int(m.group(1)) for k in keys if (m := _BLOCK_RE.match(k))), default=-1)
    width = state["cls_token"].shape[-1] if "cls_token" in state else "?"
    return f"depth {depth}, width {width}"


def load_vit_weights(
    net: nn.Module,
    path_or_state_dict: str | Path | Mapping,
    exclude_prefixes: Sequence[str] = (),
    source: str | None = None,
) -> dict[str, list[str]]:
    """
    Load a ViT checkpoint into a :class:`~mstl_monai.networks.nets.VisionTransformer`: torchvision's or timm's
    ``VisionTransformer`` state dict (ImageNet ViT-B/16 etc.; the layout is detected from the keys) or a checkpoint of
    an earlier stage (possibly an SSTL-M checkpoint with the backbone under ``encoder_q.backbone.``).

    The result computes what the library's network computes, to float32 rounding. Adapted on the way (and reported
    under ``adapted``):

    - ``cls_token``: the CLS token's position embedding is folded into it (torchvision/timm; exact);
    - ``patch_embedding.patch_embeddings.weight``: an RGB kernel for a 1-channel network is summed over the three
      channels (exactly the RGB network's output for a grey image copied to three channels), as the ResNet stem;
    - ``patch_embedding.position_embeddings``: resized bicubically to the network's patch grid when the checkpoint
      was made for another input size (timm's ``resample_abs_pos_embed``; the CLS position is kept).

    The ``fc`` head is loaded when its shape matches (and it is not under ``exclude_prefixes``), else it stays new.

    Args:
        net: the network to fill (in place).
        path_or_state_dict: checkpoint file, or an already loaded (possibly wrapped) state dict.
        exclude_prefixes: network keys never loaded (``("fc",)`` between stages).
        source: the checkpoint's name in messages (default: the file, or ``<state dict>``).

    Returns:
        ``{"loaded", "new", "dropped", "adapted"}`` lists of keys (network keys, except checkpoint keys for
        ``dropped``), as :func:`~mstl_monai.networks.load_torchvision_weights`.

    Raises:
        ValueError: a corrupt file, no ViT, or a ViT of another width / depth / patch size / number of heads.
    """
    from mstl_monai.networks.nets.vit import resample_position_embeddings

    src, name = _source(path_or_state_dict)
    source = source or name
    ours, fmt, dropped, folded = convert_vit_state_dict(src, source)
    logger.info(f"checkpoint {source}: {fmt} ViT layout.")
    dst = net.state_dict()
    report: dict[str, list[str]] = {"loaded": [], "new": [], "dropped": list(dropped), "adapted": []}
    new_state: dict[str, torch.Tensor] = {}
    problems: list[str] = []
    missing: list[str] = []
    for key, target in dst.items():
        is_head = key.startswith("fc.")
        if _is_excluded(key, exclude_prefixes) or key not in ours:
            report["new"].append(key)
            if not is_head and not _is_excluded(key, exclude_prefixes):
                missing.append(key)
            continue
        value = ours[key]
        adapted = key in folded
        if key == _PATCH and value.shape != target.shape and value.shape[0] == target.shape[0]:
            if value.shape[2:] != target.shape[2:]:
                problems.append(f"patch size {tuple(value.shape[2:])} vs the network's {tuple(target.shape[2:])}")
                continue
            value, adapted = _adapt_conv1(value.to(dtype=torch.float64), target.shape[1]), True
        elif key == _POS and value.shape != target.shape and value.shape[-1] == target.shape[-1]:
            value, adapted = resample_position_embeddings(value.float(), net.grid_size), True
            logger.info(f"checkpoint {source}: position embeddings resized to the patch grid {net.grid_size}.")
        if value.shape != target.shape:
            if is_head:  # a task head of another shape
                report["new"].append(key)
                report["dropped"].append(key)
                continue
            problems.append(f"{key}: checkpoint {tuple(value.shape)} vs network {tuple(target.shape)}")
            continue
        new_state[key] = value.to(dtype=target.dtype) if value.is_floating_point() else value
        report["adapted" if adapted else "loaded"].append(key)
    if missing:
        problems.append(f"{len(missing)} tensor(s) missing from the checkpoint ({missing[:3]})")
    extra = [k for k in ours if k not in dst and not k.startswith("fc.")]
    if extra:
        problems.append(f"{len(extra)} tensor(s) the network lacks ({extra[:4]})")
    report["dropped"] += [k for k in ours if k not in dst and k.startswith("fc.")]
    if problems:
        raise ValueError(
            f"checkpoint {source} does not fit the network: {'; '.join(problems[:4])}"
            f"{' ...' if len(problems) > 4 else ''}. Checkpoint: {_describe(list(ours), ours)}; "
            f"network: {_describe(list(dst), dst)}."
        )
    net.load_state_dict({**dst, **new_state}, strict=True)
    return report
