# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Non-local block (embedded Gaussian) of Wang et al., "Non-local neural networks", CVPR 2018."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_norm_layer

__all__ = ["NonLocalBlock"]


class NonLocalBlock(nn.Module):
    """
    Non-local block in its embedded-Gaussian form (Wang et al. 2018, Eq. 1 with
    :math:`f(x_i, x_j) = e^{\\theta(x_i)^T \\phi(x_j)}`), the "ATTN" block of Liu & Ji (2021):

    .. math::

        y = \\mathrm{softmax}(\\theta(x)^T \\phi(x))\\, g(x), \\qquad z = \\mathrm{norm}(W_z\\, y) + x

    :math:`\\theta, \\phi, g` are 1x1 convolutions to ``inner_channels`` (``C // 2`` by default), :math:`W_z` is a
    1x1 convolution back to ``C`` followed by a norm layer whose scale starts at zero, so that the block is exactly
    the identity at initialisation and does not disturb pretrained weights (paper, Sec. 3.2). With ``sub_sample``
    the keys and values (:math:`\\phi, g`) are max-pooled by 2 in every spatial dimension, which divides the
    attention matrix by ``2 ** spatial_dims``.

    With ``keep_attn=True`` the last attention map is kept (detached) in ``attn_map`` with shape
    ``(B, N_query, N_key)`` where ``N_query`` is the number of positions of the input and ``attn_spatial_shape``
    holds the spatial shape of the query grid, for heat maps. Without it the attention runs through
    :func:`torch.nn.functional.scaled_dot_product_attention` (unscaled, so the same function) and never stores
    the ``N x N`` matrix.

    Args:
        spatial_dims: number of spatial dimensions of the input (1, 2 or 3).
        in_channels: number of input (and output) channels ``C``.
        inner_channels: width of the embeddings; defaults to ``max(C // 2, 1)``.
        sub_sample: max-pool the keys and values by 2 (the paper's optional sub-sampling for memory).
        norm: norm layer after :math:`W_z` (MONAI ``get_norm_layer`` name or ``(name, args)``); its scale is set to
            zero. ``None`` (or a norm without affine scale) zero-initialises the convolution :math:`W_z` instead.
        keep_attn: keep the attention map of the last forward pass in ``attn_map``.

    Example:

    .. code-block:: python

        block = NonLocalBlock(spatial_dims=2, in_channels=512, keep_attn=True)
        y = block(torch.randn(2, 512, 28, 28))   # == input at initialisation
        block.attn_map.shape                     # (2, 784, 784)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        inner_channels: int | None = None,
        sub_sample: bool = False,
        norm: str | tuple | None = "batch",
        keep_attn: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if in_channels < 1:
            raise ValueError(f"in_channels must be a positive integer, got {in_channels}.")
        if inner_channels is None:
            inner_channels = max(in_channels // 2, 1)
        if inner_channels < 1:
            raise ValueError(f"inner_channels must be a positive integer, got {inner_channels}.")
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.inner_channels = inner_channels
        self.sub_sample = sub_sample
        self.keep_attn = keep_attn
        self.attn_map: torch.Tensor | None = None
        self.attn_spatial_shape: tuple[int, ...] | None = None

        conv_type = Conv[Conv.CONV, spatial_dims]
        self.theta = conv_type(in_channels, inner_channels, kernel_size=1)
        self.phi = conv_type(in_channels, inner_channels, kernel_size=1)
        self.g = conv_type(in_channels, inner_channels, kernel_size=1)
        self.pool: nn.Module = Pool[Pool.MAX, spatial_dims](kernel_size=2) if sub_sample else nn.Identity()
        self.out_conv = conv_type(inner_channels, in_channels, kernel_size=1)
        self.out_norm: nn.Module = nn.Identity()
        if norm is not None:
            self.out_norm = get_norm_layer(name=norm, spatial_dims=spatial_dims, channels=in_channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise as Wang et al.: normal(0, 0.01) embeddings, zero output scale (identity block)."""
        for conv in (self.theta, self.phi, self.g, self.out_conv):
            nn.init.normal_(conv.weight, std=0.01)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)
        scale = getattr(self.out_norm, "weight", None)
        if isinstance(scale, torch.Tensor):
            nn.init.zeros_(scale)
            bias = getattr(self.out_norm, "bias", None)
            if isinstance(bias, torch.Tensor):
                nn.init.zeros_(bias)
        else:  # no learnable scale to zero: zero the projection itself
            nn.init.zeros_(self.out_conv.weight)
            if self.out_conv.bias is not None:
                nn.init.zeros_(self.out_conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: input of shape ``(B, C, *spatial)``.

        Returns:
            tensor of the same shape as ``x``.
        """
        # the check is skipped under torch.jit.trace (TorchScript and ONNX export): there the shape is a traced
        # tensor, its comparison would be frozen as a constant (TracerWarning), and the traced input passed it anyway
        if not torch.jit.is_tracing() and (x.ndim != self.spatial_dims + 2 or x.shape[1] != self.in_channels):
            raise ValueError(
                f"NonLocalBlock expects input (B, {self.in_channels}, {', '.join(['*'] * self.spatial_dims)}), "
                f"got shape {tuple(x.shape)}."
            )
        b = x.shape[0]
        spatial = x.shape[2:]
        q = self.theta(x).flatten(2).transpose(1, 2)  # B x Nq x Ci
        kv_in = self.pool(x)
        k = self.phi(kv_in).flatten(2)  # B x Ci x Nk
        v = self.g(kv_in).flatten(2).transpose(1, 2)  # B x Nk x Ci
        if self.keep_attn:
            attn = torch.softmax(torch.bmm(q, k), dim=-1)  # B x Nq x Nk
            y = torch.bmm(attn, v)
            self.attn_map = attn.detach()
            self.attn_spatial_shape = tuple(int(s) for s in spatial)
        else:
            # same computation without materialising the N x N matrix when a fused kernel is available
            y = F.scaled_dot_product_attention(q, k.transpose(1, 2), v, scale=1.0)
        y = y.transpose(1, 2).reshape(b, self.inner_channels, *spatial)
        return x + self.out_norm(self.out_conv(y))

    def extra_repr(self) -> str:
        return f"inner_channels={self.inner_channels}, sub_sample={self.sub_sample}, keep_attn={self.keep_attn}"
