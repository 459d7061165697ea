# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""ResNets with non-local attention blocks ("ATTN"), on MONAI's ResNet with torchvision-compatible names."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets.resnet import ResNet, ResNetBlock, ResNetBottleneck, get_inplanes

from mstl_monai.networks.blocks.nonlocal_block import NonLocalBlock

__all__ = [
    "ATTN_STAGE_COUNTS",
    "AttentiveResNet",
    "attention_positions",
    "attentive_resnet18",
    "attentive_resnet34",
    "attentive_resnet50",
    "attentive_resnet101",
    "attentive_resnet152",
    "ATTENTIVE_RESNETS",
]

#: number of non-local blocks per stage (res2, res3, res4, res5 = ``layer1..layer4``) for each supported ``n_attn``
#: (Liu & Ji 2021, Sec. 4.1: +1 ATTN at the end of res3; +5 ATTNs: 2 in res3, 2 in res4, 1 in res5).
ATTN_STAGE_COUNTS: dict[int, tuple[int, int, int, int]] = {0: (0, 0, 0, 0), 1: (0, 1, 0, 0), 5: (0, 2, 2, 1)}


def attention_positions(layers: Sequence[int], n_attn: int) -> list[tuple[int, int]]:
    """
    Where the non-local blocks go: after which residual blocks, in forward order.

    ``k`` blocks in a stage go after every other residual block counting back from the stage's last block
    (Wang et al.'s rule); a stage too short for that (e.g. ResNet-18's two blocks) takes them after consecutive
    blocks, counting back from the last one. For ResNet-50 with ``n_attn=5`` this gives ``layer2`` blocks 1, 3,
    ``layer3`` blocks 3, 5 and ``layer4`` block 2 (0-based).

    Args:
        layers: number of residual blocks in each of the four stages.
        n_attn: number of non-local blocks, one of ``ATTN_STAGE_COUNTS`` (0, 1, 5).

    Returns:
        list of ``(stage, block_index)`` with ``stage`` in 1..4 (``layer{stage}``) and a 0-based block index.

    Raises:
        ValueError: for an unsupported ``n_attn``, or a stage with fewer residual blocks than attention blocks.
    """
    if n_attn not in ATTN_STAGE_COUNTS:
        raise ValueError(f"n_attn must be one of {sorted(ATTN_STAGE_COUNTS)}, got {n_attn}.")
    if len(layers) != 4:
        raise ValueError(f"layers must give the number of blocks of 4 stages, got {list(layers)}.")
    positions: list[tuple[int, int]] = []
    for stage, (count, n_blocks) in enumerate(zip(ATTN_STAGE_COUNTS[n_attn], layers), start=1):
        if count == 0:
            continue
        if count > n_blocks:
            raise ValueError(
                f"n_attn={n_attn} puts {count} non-local blocks in layer{stage}, which has only {n_blocks} "
                f"residual block(s) (layers={list(layers)})."
            )
        step = 2 if 2 * (count - 1) < n_blocks else 1
        positions.extend((stage, n_blocks - 1 - step * j) for j in reversed(range(count)))
    return positions


class AttentiveResNet(ResNet):
    """
    MONAI :class:`~monai.networks.nets.ResNet` with ``n_attn`` non-local blocks (:class:`NonLocalBlock`) placed
    as in Liu & Ji (2021) (see :func:`attention_positions`), a dropout before the classifier, and the
    ``forward_features`` / ``forward_head`` split of timm for Grad-CAM, LEEP and head swaps.

    The defaults (``conv1_t_stride=2``, ``shortcut_type="B"``, ``bias_downsample=False``, 2D) give exactly
    torchvision's ResNet, with its parameter names ``conv1, bn1, layer1..layer4, fc``, so ImageNet checkpoints
    load unchanged (:func:`mstl_monai.networks.load_torchvision_weights`). The attention blocks live in the
    ``attn`` :class:`~torch.nn.ModuleDict` under names ``layer{stage}_{block}`` (the block after which they run),
    so they never shift the ``layerN.i`` keys; they are the identity at initialisation.

    Args:
        block: ``"basic"`` / ``"bottleneck"`` or MONAI's ``ResNetBlock`` / ``ResNetBottleneck``.
        layers: number of residual blocks in each of the four stages.
        block_inplanes: widths of the four stages, default ``[64, 128, 256, 512]``.
        n_attn: number of non-local blocks: 0 (baseline), 1 (end of res3) or 5 (2 in res3, 2 in res4, 1 in res5).
        spatial_dims: number of spatial dimensions.
        n_input_channels: number of input channels.
        num_classes: outputs of the ``fc`` head; 0 replaces it by an identity (the network returns pooled features).
        dropout: drop probability of the dropout before ``fc`` (the paper's "dropout 0.8" keep-rate is ``0.2``).
        attn_sub_sample: max-pool keys/values of the non-local blocks by 2.
        keep_attn: the non-local blocks keep their last attention map (for heat maps).
        conv1_t_size: kernel size of the stem convolution.
        conv1_t_stride: stride of the stem convolution (2 as torchvision).
        no_max_pool: skip the stem max-pool.
        shortcut_type: MONAI's downsample type; ``"B"`` (1x1 conv + norm) as torchvision.
        widen_factor: width multiplier of the stages.
        bias_downsample: bias in the downsample convolutions (``False`` as torchvision).
        act: activation type and arguments.
        attn_norm: norm layer of the non-local blocks' output (its scale starts at zero).

    Example:

    .. code-block:: python

        net = attentive_resnet50(n_attn=5, num_classes=2, dropout=0.5)
        feats = net.forward_features(torch.randn(2, 3, 224, 224))   # (2, 2048, 7, 7)
        logits = net.forward_head(feats)                             # (2, 2)
        list(net.attention_blocks)   # ['layer2_1', 'layer2_3', 'layer3_3', 'layer3_5', 'layer4_2']
    """

    def __init__(
        self,
        block: type[ResNetBlock | ResNetBottleneck] | str,
        layers: Sequence[int],
        block_inplanes: Sequence[int] | None = None,
        n_attn: int = 0,
        spatial_dims: int = 2,
        n_input_channels: int = 3,
        num_classes: int = 1000,
        dropout: float = 0.0,
        attn_sub_sample: bool = False,
        keep_attn: bool = False,
        conv1_t_size: int | tuple[int, ...] = 7,
        conv1_t_stride: int | tuple[int, ...] = 2,
        no_max_pool: bool = False,
        shortcut_type: str = "B",
        widen_factor: float = 1.0,
        bias_downsample: bool = False,
        act: str | tuple = ("relu", {"inplace": True}),
        attn_norm: str | tuple | None = "batch",
    ) -> None:
        if isinstance(block, str):
            blocks = {"basic": ResNetBlock, "bottleneck": ResNetBottleneck}
            if block not in blocks:
                raise ValueError(f"Unknown block {block!r}, use 'basic' or 'bottleneck'.")
            block = blocks[block]
        layers = [int(n) for n in layers]
        if len(layers) != 4 or min(layers) < 1:
            raise ValueError(f"layers must give 4 positive numbers of residual blocks, got {layers}.")
        block_inplanes = list(get_inplanes() if block_inplanes is None else block_inplanes)
        if len(block_inplanes) != 4:
            raise ValueError(f"block_inplanes must give 4 stage widths, got {block_inplanes}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout is a drop probability in [0, 1), got {dropout}.")
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
        positions = attention_positions(layers, n_attn)
        super().__init__(
            block=block,
            layers=layers,
            block_inplanes=block_inplanes,
            spatial_dims=spatial_dims,
            n_input_channels=n_input_channels,
            conv1_t_size=conv1_t_size,
            conv1_t_stride=conv1_t_stride,
            no_max_pool=no_max_pool,
            shortcut_type=shortcut_type,
            widen_factor=widen_factor,
            num_classes=max(num_classes, 1),
            feed_forward=True,
            bias_downsample=bias_downsample,
            act=act,
        )
        self.block_type = block
        self.layers = layers
        self.n_attn = n_attn
        self.spatial_dims = spatial_dims
        self.n_input_channels = n_input_channels
        self.attn_positions = positions
        widths = [int(w * widen_factor) * block.expansion for w in block_inplanes]
        self._feature_dim = widths[3]
        self.num_classes = num_classes
        if num_classes == 0:
            self.fc = nn.Identity()  # type: ignore[assignment]
        self.dropout = nn.Dropout(p=dropout)
        # created after MONAI's init loop, which would otherwise reset the zero scale of the output norms
        self.attn = nn.ModuleDict(
            {
                f"layer{stage}_{idx}": NonLocalBlock(
                    spatial_dims=spatial_dims,
                    in_channels=widths[stage - 1],
                    sub_sample=attn_sub_sample,
                    norm=attn_norm,
                    keep_attn=keep_attn,
                )
                for stage, idx in positions
            }
        )

    @property
    def feature_dim(self) -> int:
        """Number of channels of ``forward_features`` (and of the pooled features)."""
        return self._feature_dim

    @property
    def attention_blocks(self) -> dict[str, NonLocalBlock]:
        """The non-local blocks by name (``layer{stage}_{block}``), in forward order."""
        return dict(self.attn.items())  # type: ignore[arg-type]

    @property
    def last_attention_block(self) -> NonLocalBlock | None:
        """The last non-local block (res5's for ``n_attn=5``), the one used for attention heat maps."""
        blocks = list(self.attn.values())
        return blocks[-1] if blocks else None  # type: ignore[return-value]

    def set_keep_attention(self, flag: bool) -> None:
        """Switch on/off keeping the attention maps in every non-local block (off also frees the stored maps)."""
        for blk in self.attn.values():
            blk.keep_attn = bool(flag)
            if not flag:
                blk.attn_map = None
                blk.attn_spatial_shape = None

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem, the four stages and their non-local blocks: features ``(B, feature_dim, *spatial)`` before pooling."""
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.act(x)
        if not self.no_max_pool:
            x = self.maxpool(x)
        for stage, layer in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            for idx, blk in enumerate(layer):
                x = blk(x)
                name = f"layer{stage}_{idx}"
                if name in self.attn:
                    x = self.attn[name](x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """
        Global average pooling, flatten, then (unless ``pre_logits``) dropout and ``fc``.

        Args:
            x: output of :meth:`forward_features`.
            pre_logits: return the pooled features ``(B, feature_dim)``.
        """
        x = torch.flatten(self.avgpool(x), 1)
        if pre_logits:
            return x
        return self.fc(self.dropout(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int, dropout: float | None = None) -> None:
        """
        Replace the ``fc`` head (a new one, on the device and dtype of the network); 0 gives an identity.

        Args:
            num_classes: number of outputs of the new head.
            dropout: new drop probability before the head; unchanged when ``None``.
        """
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}.")
        ref = self.conv1.weight
        self.fc = (  # type: ignore[assignment]
            nn.Linear(self.feature_dim, num_classes, device=ref.device, dtype=ref.dtype)
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


def _attentive_resnet(block: str, layers: list[int], n_attn: int, **kwargs) -> AttentiveResNet:
    return AttentiveResNet(block=block, layers=layers, n_attn=n_attn, **kwargs)


def attentive_resnet18(n_attn: int = 0, **kwargs) -> AttentiveResNet:
    """ResNet-18 (basic blocks, ``[2, 2, 2, 2]``) with ``n_attn`` non-local blocks; ``kwargs`` go to
    :class:`AttentiveResNet`."""
    return _attentive_resnet("basic", [2, 2, 2, 2], n_attn, **kwargs)


def attentive_resnet34(n_attn: int = 0, **kwargs) -> AttentiveResNet:
    """ResNet-34 (basic blocks, ``[3, 4, 6, 3]``) with ``n_attn`` non-local blocks."""
    return _attentive_resnet("basic", [3, 4, 6, 3], n_attn, **kwargs)


def attentive_resnet50(n_attn: int = 0, **kwargs) -> AttentiveResNet:
    """ResNet-50 (bottleneck blocks, ``[3, 4, 6, 3]``) with ``n_attn`` non-local blocks."""
    return _attentive_resnet("bottleneck", [3, 4, 6, 3], n_attn, **kwargs)


def attentive_resnet101(n_attn: int = 0, **kwargs) -> AttentiveResNet:
    """ResNet-101 (bottleneck blocks, ``[3, 4, 23, 3]``) with ``n_attn`` non-local blocks."""
    return _attentive_resnet("bottleneck", [3, 4, 23, 3], n_attn, **kwargs)


def attentive_resnet152(n_attn: int = 0, **kwargs) -> AttentiveResNet:
    """ResNet-152 (bottleneck blocks, ``[3, 8, 36, 3]``) with ``n_attn`` non-local blocks."""
    return _attentive_resnet("bottleneck", [3, 8, 36, 3], n_attn, **kwargs)


#: factories by name, e.g. for configuration files and the benchmark
ATTENTIVE_RESNETS = {
    "resnet18": attentive_resnet18,
    "resnet34": attentive_resnet34,
    "resnet50": attentive_resnet50,
    "resnet101": attentive_resnet101,
    "resnet152": attentive_resnet152,
}
