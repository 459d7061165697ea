# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Attention heatmaps from a network's non-local (ATTN) blocks, the paper's Fig. 4 explanation."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from mstl_monai.visualize.cam import minmax_normalize

__all__ = ["attention_heatmap", "mag_sd_heatmap"]


def _keep_attention_state(net: nn.Module, blocks) -> bool:
    flag = getattr(net, "keep_attention", None)
    if isinstance(flag, bool):
        return flag
    return any(bool(getattr(b, "keep_attention", getattr(b, "keep_attn", False))) for b in blocks.values())


def _key_grid(block: nn.Module, n_keys: int, query_shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    key_shape = getattr(block, "attn_key_spatial_shape", None)
    if key_shape is not None:
        key_shape = tuple(int(s) for s in key_shape)
    elif n_keys == int(torch.tensor(query_shape).prod()):
        key_shape = query_shape
    else:
        halved = tuple(s // 2 for s in query_shape)  # 2x2 max-pool sub-sampling of keys/values
        if n_keys == int(torch.tensor(halved).prod()):
            key_shape = halved
        else:
            raise ValueError(
                f"attention block {name!r} has {n_keys} key positions, which fit neither its query grid "
                f"{query_shape} nor a 2x sub-sampled grid; set its attn_key_spatial_shape."
            )
    if int(torch.tensor(key_shape).prod()) != n_keys:
        raise ValueError(f"attention block {name!r}: key grid {key_shape} does not hold its {n_keys} key positions.")
    return key_shape


def attention_heatmap(net: nn.Module, x: torch.Tensor, block_name: str | None = None) -> torch.Tensor:
    """Attention heatmap of one non-local block: its attention averaged over all query positions.

    Each row of a non-local block's attention ``softmax(K^T Q)`` is a distribution over key positions for one
    query position; the mean over queries shows where the block looks overall (Liu & Ji 2021, Fig. 4, for
    the ATTN in res5). The key-position map is reshaped to the key grid, upsampled bilinearly to ``x``'s
    size and scaled to [0, 1] per image.

    The network must expose ``attention_blocks`` (ordered mapping name -> block) and
    ``set_keep_attention(bool)``; after a forward with keep-attention on, each block holds ``attn_map``
    ``(B, HWq, HWk)``, ``attn_spatial_shape`` (query grid) and optionally ``attn_key_spatial_shape``.
    The keep-attention flag and train/eval mode are restored afterwards.

    .. code-block:: python

        heat = attention_heatmap(net, images)  # (B, 1, H, W), the last ATTN block (res5 for +5 ATTNs)

    Args:
        net: the attentive network (e.g. ``mstl_monai.networks.nets.attentive_resnet50(n_attn=5)``).
        x: input batch ``(B, C, H, W)``.
        block_name: key in ``net.attention_blocks``; default the last block.

    Returns:
        float32 tensor ``(B, 1, H, W)`` in [0, 1] on ``x``'s device.

    Raises:
        ValueError: when the network has no attention blocks or a block stored no usable attention map.
        KeyError: when ``block_name`` is not one of the network's attention blocks.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a tensor (B, C, H, W), got {getattr(x, 'shape', type(x))}.")
    blocks = getattr(net, "attention_blocks", None)
    if not blocks:
        raise ValueError(
            f"{type(net).__name__} has no attention blocks (attention_blocks is empty or missing): build the network "
            "with non-local blocks (e.g. n_attn=1 or n_attn=5) to get attention maps, or use grad_cam."
        )
    if not hasattr(net, "set_keep_attention"):
        raise ValueError(f"{type(net).__name__} has attention blocks but no set_keep_attention(bool) method.")
    names = list(blocks.keys())
    name = names[-1] if block_name is None else block_name
    if name not in blocks:
        raise KeyError(f"attention block {name!r} not found; the network has {names}.")
    block = blocks[name]

    previous = _keep_attention_state(net, blocks)
    training = net.training
    try:
        net.eval()
        net.set_keep_attention(True)
        with torch.no_grad():
            net(x)
        attn = getattr(block, "attn_map", None)
        query_shape = getattr(block, "attn_spatial_shape", None)
        if not isinstance(attn, torch.Tensor) or query_shape is None:
            raise ValueError(f"attention block {name!r} stored no attn_map/attn_spatial_shape after the forward pass.")
        if attn.ndim != 3 or attn.shape[0] != x.shape[0]:
            raise ValueError(
                f"attention block {name!r}: attn_map must be (B={x.shape[0]}, HWq, HWk), got {tuple(attn.shape)}."
            )
        query_shape = tuple(int(s) for s in query_shape)
        if int(torch.tensor(query_shape).prod()) != attn.shape[1]:
            raise ValueError(
                f"attention block {name!r}: query grid {query_shape} does not match {attn.shape[1]} query positions."
            )
        key_shape = _key_grid(block, attn.shape[2], query_shape, name)
        key_map = attn.float().mean(dim=1).reshape(x.shape[0], 1, *key_shape)
        heat = F.interpolate(key_map, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
        return minmax_normalize(heat).to(x.device)
    finally:
        net.set_keep_attention(previous)
        net.train(training)


def mag_sd_heatmap(net: nn.Module, x: torch.Tensor, map_index: int | None = None) -> torch.Tensor:
    """Heat map of MAG-SD's multiscale attention (:class:`~mstl_monai.networks.nets.MultiscaleAttentionNet`): the
    mean of its attention maps (or map ``map_index``: 0 mixup, 1 dimming, 2 patching), upsampled bilinearly to
    ``x``'s size and scaled to [0, 1] per image. Runs in eval mode (restored afterwards), without gradients.

    Args:
        net: a ``MultiscaleAttentionNet`` (or a DDP wrapping one).
        x: input batch ``(B, C, H, W)``.
        map_index: one map instead of the mean.

    Returns:
        float32 tensor ``(B, 1, H, W)`` in [0, 1] on ``x``'s device.

    Raises:
        ValueError: the network has no MAG-SD attention head, or ``map_index`` is not one of its maps.
    """
    net = getattr(net, "module", net)
    if not callable(getattr(net, "forward_with_maps", None)):
        raise ValueError(
            f"{type(net).__name__} has no MAG-SD attention maps: train with mag_sd true (attention_maps > 0), or use "
            "attention_heatmap / grad_cam."
        )
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a tensor (B, C, H, W), got {getattr(x, 'shape', type(x))}.")
    training = net.training
    try:
        net.eval()
        with torch.no_grad():
            _, maps = net.forward_with_maps(x)
    finally:
        net.train(training)
    maps = maps.float()
    if map_index is None:
        maps = maps.mean(dim=1, keepdim=True)
    elif not 0 <= int(map_index) < maps.shape[1]:
        raise ValueError(f"map_index {map_index} is not one of the network's {maps.shape[1]} attention maps.")
    else:
        maps = maps[:, int(map_index) : int(map_index) + 1]
    heat = F.interpolate(maps, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
    return minmax_normalize(heat).to(x.device)
