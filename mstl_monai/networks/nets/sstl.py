# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The networks of the self-supervised stage SSTL-M (Liu & Ji 2021, Sec. 3.3) around one shared backbone.

Two branches share the backbone: the image scale is MoCo v2 (queue, momentum key encoder,
temperature); the region scale puts the five lobe crops ``ru, rm, rl, lu, ll`` of every image of the batch (from
:class:`~mstl_monai.transforms.RandLungLobeGeneratord`) through the backbone in one forward, and a 5-way head says
which lobe each crop is. ``method="moco"`` and ``method="simclr"`` are the paper's Table 3 baselines (no region branch).
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn

from mstl_monai.networks.weights import load_pretrained
from mstl_monai.networks.nets.moco import MoCo
from mstl_monai.networks.nets.region_head import RegionHead
from mstl_monai.networks.nets.simclr import SimCLR, simclr_logits
from mstl_monai.utils.enums import SSTLKeys
from mstl_monai.utils.names import SSTL_METHODS

__all__ = ["SSTL_METHODS", "SSTLNetwork"]


def _check_method(method: str) -> str:
    method = str(method).lower()
    if method not in SSTL_METHODS:
        raise ValueError(f"unknown SSTL-M method {method!r}: use one of {SSTL_METHODS}.")
    return method



class SSTLNetwork(nn.Module):
    """
    The networks of SSTL-M around one shared backbone, for ``method`` in :data:`SSTL_METHODS`:

    - ``"ours"``: :class:`~mstl_monai.networks.nets.MoCo` (query encoder = backbone + MLP projection, momentum key
      encoder, queue) and a :class:`~mstl_monai.networks.nets.RegionHead` on the query backbone;
    - ``"moco"``: MoCo alone;
    - ``"simclr"``: :class:`~mstl_monai.networks.nets.SimCLR` (NT-Xent over the batch).

    ``forward(view1, view2, regions)`` returns a dict with the contrastive logits and labels (``cons_logits``,
    ``cons_labels``; for SimCLR the NT-Xent written as a cross-entropy, see :func:`simclr_logits`) and, for
    ``"ours"``, the lobe logits ``region_logits`` ``(B, R, num_regions)``: the ``B * R`` crops of the batch go
    through the backbone as **one** batch. Wrap the whole module in DDP for multi-process training (one forward
    per iteration).

    Args:
        backbone: an :class:`~mstl_monai.networks.nets.AttentiveResNet` or a
            :class:`~mstl_monai.networks.nets.VisionTransformer` (its classifier is removed; a ViT's representation is
            its CLS token, and the lobe crops go through the same ViT, its position embeddings resized to the crops'
            patch grid).
        method: ``"ours"``, ``"moco"`` or ``"simclr"``.
        dim: projection dimension (128).
        queue_size: MoCo's queue length ``K`` (must stay below the number of training images).
        momentum: MoCo's key-encoder momentum (0.999).
        temperature: MoCo's temperature (0.07).
        simclr_temperature: SimCLR's NT-Xent temperature.
        mlp: MLP projection head (MoCo v2 / SimCLR).
        num_regions: number of lobe regions (5).
        region_hidden: hidden width of the region head (``None``: one linear layer).
        shuffle_bn_splits: MoCo's one-process shuffled-BN sub-batches.
    """

    def __init__(
        self,
        backbone: nn.Module,
        method: str = "ours",
        dim: int = 128,
        queue_size: int = 4096,
        momentum: float = 0.999,
        temperature: float = 0.07,
        simclr_temperature: float = 0.1,
        mlp: bool = True,
        num_regions: int = 5,
        region_hidden: int | None = None,
        shuffle_bn_splits: int = 2,
    ) -> None:
        super().__init__()
        self.method = _check_method(method)
        self.num_regions = int(num_regions)
        self.moco: nn.Module | None = None
        self.simclr: nn.Module | None = None
        self.region_head: nn.Module | None = None
        if self.method == "simclr":
            self.simclr = SimCLR(backbone, dim=dim, temperature=simclr_temperature, mlp=mlp)
        else:
            self.moco = MoCo(
                backbone, dim=dim, K=queue_size, m=momentum, T=temperature, mlp=mlp, shuffle_bn_splits=shuffle_bn_splits
            )
        if self.method == "ours":
            ref = next(backbone.parameters())
            self.region_head = RegionHead(int(backbone.feature_dim), num_regions=self.num_regions, hidden=region_hidden)
            self.region_head.to(device=ref.device, dtype=ref.dtype)

    @property
    def backbone(self) -> nn.Module:
        """The (query) backbone that SSTL-M trains and hands to the next stage."""
        if self.moco is not None:
            return self.moco.encoder_q_backbone
        return self.simclr.backbone  # type: ignore[union-attr]

    @property
    def uses_regions(self) -> bool:
        return self.region_head is not None

    @torch.no_grad()
    def sync_key_encoder(self) -> None:
        """Copy the query encoder (backbone + projection) into MoCo's key encoder (after loading weights)."""
        if self.moco is not None:
            self.moco.encoder_k.load_state_dict(self.moco.encoder_q.state_dict())

    def load_backbone(self, path: str | os.PathLike | None) -> dict | None:
        """Load a pretrained backbone (torchvision ImageNet file or an earlier stage's checkpoint, '' = none) with
        :func:`mstl_monai.networks.load_pretrained`, then make MoCo's key encoder a copy of the query encoder, so
        the momentum encoder starts from the loaded weights too. Returns the loaded/new/dropped report."""
        report = load_pretrained(self.backbone, path)
        self.sync_key_encoder()
        return report

    def check_queue_size(self, n_train: int, global_batch_size: int | None = None) -> None:
        """MoCo's queue must be shorter than the training set and hold at least one global batch
        of keys. No-op for SimCLR.

        Raises:
            ValueError: naming ``queue_size`` and the offending number.
        """
        if self.moco is None:
            return
        self.moco.check_queue_size(int(n_train))
        if global_batch_size is not None and global_batch_size > self.moco.K:
            raise ValueError(
                f"MoCo queue_size K={self.moco.K} is smaller than the global batch ({global_batch_size} keys per "
                "iteration): raise queue_size or lower batch_size."
            )

    def region_logits(self, regions: torch.Tensor) -> torch.Tensor:
        """Lobe logits ``(B, R, num_regions)`` of the crops ``(B, R, C, h, w)``, all in one backbone forward."""
        if regions.ndim < 4:
            raise ValueError(f"regions must have shape (B, R, C, *spatial), got {tuple(regions.shape)}.")
        b, r = regions.shape[:2]
        if r != self.num_regions:
            raise ValueError(
                f"expected {self.num_regions} regions per image, got regions of shape {tuple(regions.shape)}."
            )
        bb = self.backbone
        feats = bb.forward_head(bb.forward_features(regions.reshape(b * r, *regions.shape[2:])), pre_logits=True)
        return self.region_head(feats).reshape(b, r, -1)  # type: ignore[misc]

    def forward(
        self, view1: torch.Tensor, view2: torch.Tensor, regions: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """
        Args:
            view1: first augmented view ``(N, C, H, W)`` (MoCo's query).
            view2: second view of the same images (MoCo's key).
            regions: the lobe crops ``(N, 5, C, h, w)`` (needed by ``"ours"``, ignored otherwise).

        Returns:
            ``{"cons_logits", "cons_labels"[, "region_logits"]}``.
        """
        out: dict[str, torch.Tensor] = {}
        if self.moco is not None:
            logits, labels = self.moco(view1, view2)
        else:
            if view1.shape != view2.shape:
                raise ValueError(
                    f"the two views must have the same shape, got {tuple(view1.shape)} and {tuple(view2.shape)}."
                )
            if view1.shape[0] < 2:
                raise ValueError(f"SimCLR needs at least 2 images per batch for negatives, got {view1.shape[0]}.")
            z = self.simclr.project(torch.cat([view1, view2], dim=0))  # type: ignore[union-attr]
            z1, z2 = z.chunk(2, dim=0)
            logits, labels = simclr_logits(z1, z2, self.simclr.temperature)  # type: ignore[union-attr]
        out[SSTLKeys.CONS_LOGITS.value] = logits
        out[SSTLKeys.CONS_LABELS.value] = labels
        if self.region_head is not None:
            if regions is None:
                raise ValueError("method 'ours' needs the lobe regions (batch key 'regions') for its region branch.")
            out[SSTLKeys.REGION_LOGITS.value] = self.region_logits(regions)
        return out
