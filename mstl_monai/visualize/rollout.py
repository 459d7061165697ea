# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Attention rollout (Abnar & Zuidema 2020): the Vision Transformer heat map, beside Grad-CAM and ATTN maps."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from mstl_monai.visualize.cam import minmax_normalize

__all__ = ["rollout_attentions", "attention_rollout"]

_FUSIONS = ("mean", "max", "min")


def rollout_attentions(
    attentions: Sequence[torch.Tensor], head_fusion: str = "mean", residual: bool = True
) -> torch.Tensor:
    """
    Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020): fuse each layer's
    heads, add the residual connection as an identity (``0.5 A + 0.5 I``, rows renormalised) and multiply the layers
    in order, ``R = Â_L ... Â_1``. Row ``i`` of ``R`` says how much each input token contributes to token ``i``
    after the last layer; every row sums to 1.

    Args:
        attentions: each layer's attention probabilities ``(B, heads, N, N)`` (or ``(B, N, N)``), first layer first.
        head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"`` over the heads.
        residual: account for the residual connections (the paper's ``0.5 (A + I)``).

    Returns:
        float32 ``(B, N, N)``.

    Raises:
        ValueError: no layers, an unknown ``head_fusion``, or attentions that are not square ``(B, [h,] N, N)``.
    """
    if head_fusion not in _FUSIONS:
        raise ValueError(f"head_fusion must be one of {_FUSIONS}, got {head_fusion!r}.")
    if len(attentions) == 0:
        raise ValueError("attention rollout needs the attention of at least one layer.")
    rollout = None
    for i, a in enumerate(attentions):
        a = a.float()
        if a.ndim == 4:
            a = {"mean": a.mean(1), "max": a.amax(1), "min": a.amin(1)}[head_fusion]
        if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"layer {i}: attention must be (B, [heads,] N, N), got {tuple(attentions[i].shape)}.")
        if residual:
            a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        rollout = a if rollout is None else a @ rollout
    return rollout  # type: ignore[return-value]


def attention_rollout(
    net: nn.Module, x: torch.Tensor, head_fusion: str = "mean", start_layer: int = 0
) -> torch.Tensor:
    """Attention-rollout heat map of a ViT (:class:`~mstl_monai.networks.nets.VisionTransformer`) for ``x``.

    Runs the network once keeping every block's attention, rolls the attention out (:func:`rollout_attentions`),
    takes the CLS token's row over the patch tokens, reshapes it to the input's patch grid, upsamples it bilinearly to
    ``x``'s size and scales each map to [0, 1] (as :func:`~mstl_monai.visualize.grad_cam`). The keep-attention flag
    and train/eval mode are restored afterwards.

    .. code-block:: python

        heat = attention_rollout(vit, images)  # (B, 1, H, W)

    Args:
        net: a ViT exposing ``set_keep_attention(bool)``, ``attention_layers`` (modules holding ``att_mat``
            ``(B, heads, 1 + N, 1 + N)`` after a forward) and ``patch_grid(spatial_shape)``.
        x: input batch ``(B, C, H, W)``.
        head_fusion: how the heads are fused, see :func:`rollout_attentions`.
        start_layer: roll out from this block on (0: all blocks).

    Returns:
        float32 ``(B, 1, H, W)`` in [0, 1] on ``x``'s device.

    Raises:
        ValueError: for a network without ViT attention layers, or an ``x`` that is not ``(B, C, H, W)``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"x must be a tensor (B, C, H, W), got {getattr(x, 'shape', type(x))}.")
    layers = list(getattr(net, "attention_layers", []) or [])
    if not layers or not hasattr(net, "set_keep_attention") or not hasattr(net, "patch_grid"):
        raise ValueError(
            f"{type(net).__name__} is not a Vision Transformer (no attention_layers / set_keep_attention / patch_grid): "
            "attention rollout explains ViT backbones; use grad_cam (or attention_heatmap for non-local blocks)."
        )
    if not 0 <= start_layer < len(layers):
        raise ValueError(f"start_layer must be in [0, {len(layers)}), got {start_layer}.")
    grid = net.patch_grid(x.shape[2:])
    previous = [bool(getattr(a, "save_attn", False)) for a in layers]
    training = net.training
    try:
        net.eval()
        net.set_keep_attention(True)
        with torch.no_grad():
            net(x)
        attns = [a.att_mat for a in layers[start_layer:]]
        rollout = rollout_attentions(attns, head_fusion=head_fusion)
    finally:
        for a, flag in zip(layers, previous):
            a.save_attn = flag
            if not flag:
                a.att_mat = torch.Tensor()
        net.train(training)
    cls_row = rollout[:, 0, 1:]
    if cls_row.shape[1] != grid[0] * grid[1]:
        raise ValueError(f"the attention covers {cls_row.shape[1]} patches, the input's patch grid {grid} does not.")
    heat = cls_row.reshape(x.shape[0], 1, *grid)
    heat = F.interpolate(heat, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
    return minmax_normalize(heat).to(x.device)
