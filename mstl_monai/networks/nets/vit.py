# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Vision Transformer backbones (ViT-Tiny/Small/Base) on MONAI's ViT, with the ResNets' backbone interface."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import trunc_normal_
from monai.networks.nets import ViT
from monai.utils import ensure_tuple_rep

__all__ = ["VisionTransformer", "resample_position_embeddings", "vit_tiny", "vit_small", "vit_base", "VITS"]


def resample_position_embeddings(
    pos: torch.Tensor,
    new_grid: Sequence[int],
    old_grid: Sequence[int] | None = None,
    num_prefix_tokens: int = 0,
    mode: str = "bicubic",
    antialias: bool = True,
) -> torch.Tensor:
    """
    Resize learned position embeddings ``(1, prefix + gh * gw, D)`` to another patch grid, as timm's
    ``resample_abs_pos_embed``: the ``num_prefix_tokens`` leading embeddings (the CLS token's) are kept, the grid is
    interpolated (bicubic, anti-aliased when shrinking, ``align_corners=False``) in float32 and cast back.

    Args:
        pos: position embeddings ``(1, num_prefix_tokens + prod(old_grid), D)``.
        new_grid: target patch grid ``(gh, gw)``.
        old_grid: current grid; default the square grid the number of embeddings gives.
        num_prefix_tokens: leading embeddings that are not on the grid (1 for a CLS position, 0 for MONAI's layout).
        mode: interpolation mode of ``torch.nn.functional.interpolate``.
        antialias: anti-aliasing when downsampling (timm's default).

    Raises:
        ValueError: when the embeddings do not hold ``prod(old_grid)`` grid positions.
    """
    n_grid = pos.shape[1] - num_prefix_tokens
    if old_grid is None:
        side = math.isqrt(n_grid)
        if side * side != n_grid:
            raise ValueError(f"{n_grid} position embeddings form no square grid: give old_grid.")
        old_grid = (side, side)
    old_grid, new_grid = tuple(int(g) for g in old_grid), tuple(int(g) for g in new_grid)
    if math.prod(old_grid) != n_grid:
        raise ValueError(f"position embeddings of {n_grid} grid positions do not fit the grid {old_grid}.")
    if old_grid == new_grid:
        return pos
    prefix, grid = pos[:, :num_prefix_tokens], pos[:, num_prefix_tokens:]
    dim, dtype = grid.shape[-1], grid.dtype
    grid = grid.float().reshape(1, *old_grid, dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_grid, mode=mode, antialias=antialias, align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim).to(dtype)
    return torch.cat([prefix, grid], dim=1)


class VisionTransformer(ViT):
    """
    A 2D Vision Transformer classifier (Dosovitskiy et al. 2021) built on MONAI's :class:`~monai.networks.nets.ViT`,
    that computes exactly what torchvision's and timm's ``VisionTransformer`` compute (so their ImageNet checkpoints
    import exactly, :func:`mstl_monai.networks.load_vit_weights`), with the backbone interface of
    :class:`~mstl_monai.networks.nets.AttentiveResNet` (``forward_features`` / ``forward_head(pre_logits)`` /
    ``feature_dim`` / ``reset_classifier`` / an ``fc`` head) so that every stage, MoCo/SimCLR and the heat maps
    accept it.

    What differs from MONAI's ``ViT`` defaults, and why:

    - no ``Tanh`` after the head (``post_activation=None``) and the head is ``fc`` (behind a ``dropout``), the
      name the stage-to-stage transfer leaves out; ``forward`` returns the logits only (no hidden-state list);
    - LayerNorm ``eps`` 1e-6 (torchvision/timm) instead of PyTorch's 1e-5, ``qkv_bias=True``;
    - MONAI's position embeddings cover the patches only: the CLS token gets none. torchvision/timm add one to the
      CLS token too; as the CLS token is a constant, the import folds that position into ``cls_token`` (exact);
    - the position embeddings are resized (bicubic, as timm) when the input's patch grid differs from ``img_size``'s,
      so lobe crops and other image sizes go through the same network;
    - the unused ``norm_cross_attn`` LayerNorms of MONAI's blocks are removed (no parameter without a gradient,
      which DistributedDataParallel would refuse).

    The exact GELU, the fused ``qkv`` projection (q, k, v stacked, heads split inside each) and the pre-norm blocks of
    MONAI's :class:`~monai.networks.blocks.TransformerBlock` are those of torchvision and timm. There is no
    BatchNorm, so MoCo's shuffled BN has nothing to do for a ViT (see :class:`~mstl_monai.networks.nets.MoCo`).

    Args:
        img_size: input size the position embeddings are made for (other sizes are resampled on the fly).
        patch_size: patch size (16).
        hidden_size: token width (192 tiny, 384 small, 768 base).
        mlp_dim: hidden width of the MLPs (4 x ``hidden_size``).
        num_layers: number of transformer blocks.
        num_heads: number of attention heads.
        spatial_dims: 2 (the plugin's slices).
        n_input_channels: 1 (CT) or 3 (RGB).
        num_classes: outputs of the ``fc`` head; 0 replaces it by an identity (returns the CLS features).
        dropout: drop probability before ``fc``.
        dropout_rate: MONAI's dropout inside the blocks (attention weights, projections, MLP) and after the embedding.
        qkv_bias: bias of the ``qkv`` projection.
        norm_eps: LayerNorm epsilon.
        keep_attn: keep every block's attention matrix after a forward (for :func:`~mstl_monai.visualize.rollout`).

    Example:

    .. code-block:: python

        net = vit_tiny(img_size=128, n_input_channels=1, num_classes=2)
        tokens = net.forward_features(torch.randn(2, 1, 128, 128))   # (2, 1 + 64, 192), CLS first
        logits = net.forward_head(tokens)                             # (2, 2)
    """

    def __init__(
        self,
        img_size: Sequence[int] | int = 224,
        patch_size: Sequence[int] | int = 16,
        hidden_size: int = 768,
        mlp_dim: int | None = None,
        num_layers: int = 12,
        num_heads: int = 12,
        spatial_dims: int = 2,
        n_input_channels: int = 3,
        num_classes: int = 1000,
        dropout: float = 0.0,
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
        norm_eps: float = 1e-6,
        keep_attn: bool = False,
    ) -> None:
        if spatial_dims != 2:
            raise ValueError(f"VisionTransformer supports spatial_dims=2 (CT slices), got {spatial_dims}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout is a drop probability in [0, 1), got {dropout}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
        if hidden_size % num_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}.")
        mlp_dim = 4 * hidden_size if mlp_dim is None else int(mlp_dim)
        super().__init__(
            in_channels=n_input_channels,
            img_size=img_size,
            patch_size=patch_size,
            hidden_size=hidden_size,
            mlp_dim=mlp_dim,
            num_layers=num_layers,
            num_heads=num_heads,
            proj_type="conv",
            pos_embed_type="learnable",
            classification=True,
            num_classes=max(num_classes, 1),
            dropout_rate=dropout_rate,
            spatial_dims=spatial_dims,
            post_activation=None,
            qkv_bias=qkv_bias,
            save_attn=False,
        )
        del self.classification_head
        for blk in self.blocks:
            blk.norm_cross_attn = nn.Identity()  # never used without cross-attention
        for mod in self.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.eps = float(norm_eps)
        self.img_size = ensure_tuple_rep(img_size, spatial_dims)
        self.patch_size = ensure_tuple_rep(patch_size, spatial_dims)
        self.grid_size = tuple(i // p for i, p in zip(self.img_size, self.patch_size))
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.spatial_dims = spatial_dims
        self.n_input_channels = n_input_channels
        self.num_classes = num_classes
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(hidden_size, num_classes) if num_classes > 0 else nn.Identity()
        # timm's initialisation for training from scratch (MONAI's blocks keep PyTorch's default Linear init)
        for name, mod in self.named_modules():
            if isinstance(mod, nn.Linear):
                trunc_normal_(mod.weight, mean=0.0, std=0.02, a=-2.0, b=2.0)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)
        trunc_normal_(self.cls_token, mean=0.0, std=1e-6, a=-2.0, b=2.0)
        self.set_keep_attention(keep_attn)

    @property
    def feature_dim(self) -> int:
        """Width of the CLS feature (``forward_head(..., pre_logits=True)``)."""
        return self.hidden_size

    @property
    def attention_layers(self) -> list[nn.Module]:
        """The self-attention blocks (MONAI ``SABlock``), in forward order; each holds ``att_mat`` when kept."""
        return [blk.attn for blk in self.blocks]

    def set_keep_attention(self, flag: bool) -> None:
        """Keep (or stop keeping and free) every block's attention matrix ``(B, heads, 1 + N, 1 + N)``."""
        for attn in self.attention_layers:
            attn.save_attn = bool(flag)
            if not flag:
                attn.att_mat = torch.Tensor()

    def patch_grid(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Patch grid of an input of ``spatial_shape`` (the remainder of a size not divisible by the patch is cut)."""
        if len(spatial_shape) != self.spatial_dims or any(s < p for s, p in zip(spatial_shape, self.patch_size)):
            raise ValueError(
                f"input of spatial size {tuple(spatial_shape)} is smaller than one {self.patch_size} patch "
                f"(or not {self.spatial_dims}D): use images (and lobe crops) of at least the patch size."
            )
        return tuple(int(s) // p for s, p in zip(spatial_shape, self.patch_size))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding (position embeddings resized to the input's grid), CLS token, blocks, final norm:
        the tokens ``(B, 1 + N, hidden_size)``, CLS first."""
        grid = self.patch_grid(x.shape[2:])
        emb = self.patch_embedding
        x = emb.patch_embeddings(x).flatten(2).transpose(1, 2)
        pos = emb.position_embeddings
        if grid != self.grid_size:
            pos = resample_position_embeddings(pos, grid, self.grid_size)
        x = x + pos
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1).to(x.dtype), x), dim=1)
        x = emb.dropout(x)
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The CLS token of :meth:`forward_features`' tokens; unless ``pre_logits``, then dropout and ``fc``."""
        x = x[:, 0]
        if pre_logits:
            return x
        return self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, dropout: float | None = None) -> None:
        """Replace the ``fc`` head (on the network's device and dtype); 0 gives an identity."""
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
        ref = self.cls_token
        self.fc = (  # type: ignore[assignment]
            nn.Linear(self.hidden_size, num_classes, device=ref.device, dtype=ref.dtype)
            if num_classes > 0
            else nn.Identity()
        )
        if isinstance(self.fc, nn.Linear):
            nn.init.zeros_(self.fc.bias)
        self.num_classes = num_classes
        if dropout is not None:
            if not 0.0 <= dropout < 1.0:
                raise ValueError(f"dropout is a drop probability in [0, 1), got {dropout}.")
            self.dropout = nn.Dropout(p=dropout)


def vit_tiny(**kwargs) -> VisionTransformer:
    """ViT-Tiny: width 192, 12 layers, 3 heads (patch 16 unless ``patch_size`` is given)."""
    return VisionTransformer(**{"hidden_size": 192, "num_layers": 12, "num_heads": 3, **kwargs})


def vit_small(**kwargs) -> VisionTransformer:
    """ViT-Small: width 384, 12 layers, 6 heads."""
    return VisionTransformer(**{"hidden_size": 384, "num_layers": 12, "num_heads": 6, **kwargs})


def vit_base(**kwargs) -> VisionTransformer:
    """ViT-Base: width 768, 12 layers, 12 heads (ViT-B/16 with the default patch)."""
    return VisionTransformer(**{"hidden_size": 768, "num_layers": 12, "num_heads": 12, **kwargs})


#: factories by name
VITS = {"vit_tiny": vit_tiny, "vit_small": vit_small, "vit_base": vit_base}
