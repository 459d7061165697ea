# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The multiscale attention network of MAG-SD (Li et al. 2021) around the bundle's attentive ResNets."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv
from monai.networks.layers.utils import get_act_layer, get_norm_layer

__all__ = ["MAGSD_MAPS", "MultiscaleAttentionHead", "MultiscaleAttentionNet"]

#: number of attention maps of the MAG-SD head: one per attention-guided augmentation (mixup, dimming, patching)
MAGSD_MAPS = 3


class MultiscaleAttentionHead(nn.Module):
    """
    ``M`` non-negative attention maps from feature maps of several scales (MAG-SD's "multiscale attention"): each
    scale goes through a 1x1 convolution to ``M`` channels, a norm and a ReLU; the maps of the finer scales are
    average-pooled to the coarsest scale's size and all are summed.

    Args:
        in_channels: channels of each scale's features, finest first (e.g. ``[256, 512]`` for ResNet-18's
            ``layer3``, ``layer4``).
        num_maps: number of attention maps ``M``.
        spatial_dims: number of spatial dimensions.
        norm: norm of each scale's maps.
        act: activation of each scale's maps (non-negative maps need a ReLU-like one).

    Example:

    .. code-block:: python

        head = MultiscaleAttentionHead([256, 512], num_maps=3)
        maps = head([torch.randn(2, 256, 8, 8), torch.randn(2, 512, 4, 4)])   # (2, 3, 4, 4)
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_maps: int = MAGSD_MAPS,
        spatial_dims: int = 2,
        norm: str | tuple = ("batch", {"eps": 1e-3}),
        act: str | tuple = ("relu", {"inplace": True}),
    ) -> None:
        super().__init__()
        if len(in_channels) < 2:
            raise ValueError(
                f"a multiscale attention head needs features of at least 2 scales, got {list(in_channels)}."
            )
        if int(num_maps) < 1:
            raise ValueError(f"num_maps must be >= 1, got {num_maps}.")
        self.num_maps = int(num_maps)
        self.spatial_dims = spatial_dims
        conv = Conv[Conv.CONV, spatial_dims]
        self.scales = nn.ModuleList(
            nn.Sequential(
                conv(int(c), self.num_maps, kernel_size=1, bias=False),
                get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=self.num_maps),
                get_act_layer(name=act),
            )
            for c in in_channels
        )

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """``features`` finest first; returns the maps ``(B, M, *coarsest spatial size)``."""
        if len(features) != len(self.scales):
            raise ValueError(f"expected features of {len(self.scales)} scales, got {len(features)}.")
        size = features[-1].shape[2:]
        pool = F.adaptive_avg_pool2d if self.spatial_dims == 2 else F.adaptive_avg_pool3d
        out = None
        for feat, layer in zip(features, self.scales):
            m = layer(feat)
            if m.shape[2:] != size:
                m = pool(m, size)
            out = m if out is None else out + m
        return out  # type: ignore[return-value]


class MultiscaleAttentionNet(nn.Module):
    """
    A classifier with MAG-SD's multiscale attention maps, around an attentive ResNet of
    :func:`~mstl_monai.networks.build_network` (Li et al. 2021, "Multiscale Attention Guided deep network with Soft
    Distance regularization"; reference code JasonLeeGHub/MAG-SD).

    The attention head (:class:`MultiscaleAttentionHead`) reads the outputs of the backbone's last two stages
    (``layer3`` and ``layer4``, each after its non-local blocks) and gives ``M`` maps at ``layer4``'s resolution.
    The class logits are the backbone's own head (pooling, dropout, ``fc``) on the last features re-weighted by
    the mean map, ``F * (1 + mean_m A_m)``: the maps are trained by the classification loss (as MAG-SD's
    attention pooling does) and every parameter is used in every forward (as DDP needs). The reference pools the
    features with each map and classifies their concatenation with a new ``fc``; keeping the backbone's ``fc``
    lets the backbone's checkpoints, heads and explanations work unchanged.

    ``forward(x)`` returns the logits (a drop-in classifier for evaluation, inference and export);
    ``forward(x, augment=fn)`` is MAG-SD's training forward: it also builds the augmented views
    ``fn(x, maps)`` (no gradient through the maps) and classifies them in one batch, returning a dict with
    ``pred`` (B, C), ``views_pred`` (V, B, C) and ``maps`` (B, M, h, w). Doing it all in one call keeps one
    forward per backward under DDP.

    The state dict holds ``backbone.*`` (the backbone's own names) and ``attention.*``;
    :func:`mstl_monai.label.prepare.network_config_from_state_dict` reads ``attention_maps`` off these keys.

    Args:
        backbone: an :class:`~mstl_monai.networks.nets.AttentiveResNet` classifier.
        num_maps: number of attention maps ``M`` (3: one per augmentation).
        scales: names of the backbone stages whose outputs feed the head, finest first.

    Raises:
        TypeError: the backbone is not an attentive ResNet (a ViT has one patch grid, no feature pyramid).
    """

    def __init__(self, backbone: nn.Module, num_maps: int = MAGSD_MAPS, scales: Sequence[str] = ("layer3", "layer4")):
        super().__init__()
        from mstl_monai.networks.nets.attentive_resnet import AttentiveResNet

        if not isinstance(backbone, AttentiveResNet):
            raise TypeError(
                f"MAG-SD's multiscale attention head needs an attentive ResNet backbone (feature maps of several "
                f"scales), got {type(backbone).__name__}: a ViT has a single patch grid."
            )
        if getattr(backbone, "num_classes", 1) == 0:
            raise ValueError("MAG-SD needs a classifier backbone (num_classes > 0).")
        names = [str(s) for s in scales]
        bad = [s for s in names if s not in ("layer1", "layer2", "layer3", "layer4")]
        if bad or len(names) < 2 or names[-1] != "layer4":
            raise ValueError(f"scales must be >= 2 of layer1..layer4 ending with layer4, got {names}.")
        self.backbone = backbone
        self.scale_names = names
        widths = {f"layer{i}": getattr(backbone, f"layer{i}")[-1] for i in range(1, 5)}
        channels = [_out_channels(widths[s]) for s in names]
        self.attention = MultiscaleAttentionHead(channels, num_maps=num_maps, spatial_dims=backbone.spatial_dims)
        self._captured: dict[str, torch.Tensor] = {}
        # the last module each stage runs (its last non-local block, else its last residual block)
        for s in names:
            stage = int(s[-1])
            last = f"layer{s[-1]}_{backbone.layers[stage - 1] - 1}"
            module = backbone.attn[last] if last in backbone.attn else getattr(backbone, s)[-1]
            module.register_forward_hook(self._capture_hook(s))
            last_block = f"backbone.{s}.{len(getattr(backbone, s)) - 1}"
            self._cam_layer = f"backbone.attn.{last}" if last in backbone.attn else last_block

    @property
    def num_maps(self) -> int:
        return self.attention.num_maps

    @property
    def num_classes(self) -> int:
        return int(self.backbone.num_classes)

    @property
    def cam_layer(self) -> str:
        """Name (in ``named_modules``) of the module whose output is the last feature map (for Grad-CAM)."""
        return self._cam_layer

    @property
    def attention_blocks(self) -> dict:
        """The backbone's non-local blocks (for :func:`~mstl_monai.visualize.attention_heatmap`)."""
        return self.backbone.attention_blocks

    def set_keep_attention(self, flag: bool) -> None:
        """Keep (or free) the attention maps of the backbone's non-local blocks."""
        self.backbone.set_keep_attention(flag)

    def _capture_hook(self, name: str) -> Callable:
        def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            self._captured[name] = output

        return hook

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The backbone's last features ``(B, C, h, w)`` and the attention maps ``(B, M, h, w)``."""
        self._captured = {}
        feats = self.backbone.forward_features(x)
        try:
            maps = self.attention([self._captured[s] for s in self.scale_names])
        finally:
            self._captured = {}
        return feats, maps

    def forward_head(self, feats: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """Logits of the features re-weighted by the mean attention map."""
        weight = 1.0 + maps.mean(dim=1, keepdim=True)
        return self.backbone.forward_head(feats * weight.to(feats.dtype))

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits ``(B, C)`` and attention maps ``(B, M, h, w)``."""
        feats, maps = self.forward_features(x)
        return self.forward_head(feats, maps), maps

    def forward(
        self, x: torch.Tensor, augment: Callable[[torch.Tensor, torch.Tensor], Sequence[torch.Tensor]] | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor]:
        logits, maps = self.forward_with_maps(x)
        if augment is None:
            return logits
        with torch.no_grad():
            views = augment(x, maps.detach().float())
        n_views = len(views)
        views_logits = self.forward_with_maps(torch.cat(list(views), dim=0).to(x.dtype))[0]
        return {
            "pred": logits,
            "views_pred": views_logits.reshape(n_views, x.shape[0], *views_logits.shape[1:]),
            "maps": maps,
        }


def _out_channels(block: nn.Module) -> int:
    """Output channels of a residual block or non-local block (its last conv / norm)."""
    width = None
    for m in block.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Conv1d)):
            width = m.out_channels
    if width is None:
        raise ValueError(f"cannot tell the output channels of {type(block).__name__}.")
    return int(width)
