# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""MoCo v2 (He et al. 2020; Chen et al. 2020) for the image-scale branch of the self-supervised stage SSTL-M."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import optional_import

if TYPE_CHECKING:
    import ignite.distributed as idist

    has_ignite = True
else:
    idist, has_ignite = optional_import("ignite.distributed")

__all__ = ["MoCo", "ProjectedEncoder", "projection_head", "check_backbone"]


def check_backbone(encoder: nn.Module) -> None:
    """Raise ``TypeError`` unless ``encoder`` offers ``forward_features``, ``forward_head`` and ``feature_dim``
    (as :class:`~mstl_monai.networks.nets.AttentiveResNet`)."""
    missing = [a for a in ("forward_features", "forward_head", "feature_dim") if not hasattr(encoder, a)]
    if missing:
        raise TypeError(
            f"the base encoder must be an AttentiveResNet-like backbone; {type(encoder).__name__} lacks {missing}."
        )


def projection_head(in_features: int, dim: int, mlp: bool = True) -> nn.Module:
    """MoCo v2 / SimCLR projection: ``Linear(C, C) -> ReLU -> Linear(C, dim)`` with ``mlp``, else ``Linear(C, dim)``."""
    if mlp:
        return nn.Sequential(nn.Linear(in_features, in_features), nn.ReLU(inplace=True), nn.Linear(in_features, dim))
    return nn.Linear(in_features, dim)


class ProjectedEncoder(nn.Module):
    """
    A backbone (its pooled features, without its classifier) followed by a projection head.

    Args:
        backbone: an AttentiveResNet-like network (``forward_features``, ``forward_head(pre_logits=True)``).
        head: the projection head, applied to the pooled features.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        check_backbone(backbone)
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        return self.head(feats)


class MoCo(nn.Module):
    """
    Momentum Contrast v2 (He et al., "Momentum Contrast for Unsupervised Visual Representation Learning", CVPR 2020;
    Chen et al., "Improved Baselines with Momentum Contrastive Learning", 2020), as used by Liu & Ji (2021) Eq. 2.

    The query encoder is the backbone plus an MLP projection head; the key encoder is a momentum copy
    (:math:`\\theta_k \\leftarrow m\\,\\theta_k + (1 - m)\\,\\theta_q`) that receives no gradient. ``K`` negative keys
    are kept in a queue (buffers ``queue`` of shape ``(dim, K)`` and ``queue_ptr``, saved in the state dict and
    following the module's device). ``forward`` returns the logits ``[q·k+, q·queue] / T`` and the labels (zeros:
    the positive is column 0) for :class:`~mstl_monai.losses.InfoNCELoss` / cross-entropy.

    Batch statistics must not leak through BatchNorm between a query and its key (MoCo, Sec. 3.3). With several
    processes (``ignite.distributed`` world size > 1) the key batch is shuffled across processes before the key
    encoder and un-shuffled after it (MoCo's shuffled BN), and the keys of every process are gathered before they
    are queued. With one process, the equivalent: the key batch is shuffled and the key encoder runs on
    ``shuffle_bn_splits`` sub-batches, each with its own batch statistics, then the keys are put back in order.
    With the same permutation, one process with ``shuffle_bn_splits = world_size`` gives exactly the keys of the
    multi-process run. A backbone without BatchNorm (a :class:`~mstl_monai.networks.nets.VisionTransformer`, whose
    LayerNorm normalises each token of each image on its own) has no batch statistics to leak: nothing replaces the
    shuffle, the keys are computed on the whole batch in order (no shuffle, no cross-process image gathering). The key encoder update and the queue only move in training mode; in eval mode
    ``forward`` computes the logits against the current queue and changes nothing.

    Args:
        base_encoder: the backbone (an :class:`~mstl_monai.networks.nets.AttentiveResNet` or a
            :class:`~mstl_monai.networks.nets.VisionTransformer`, whose CLS feature is the representation); its classifier is
            removed (``reset_classifier(0)``) and it becomes ``encoder_q.backbone``.
        dim: dimension of the projected features (128).
        K: queue length; must stay below the number of training images (see :meth:`check_queue_size`).
        m: momentum of the key encoder (0.999).
        T: softmax temperature (0.07).
        mlp: MoCo v2's MLP projection head (else one linear layer, MoCo v1).
        shuffle_bn_splits: number of key sub-batches for the one-process shuffled BN (>= 2 to avoid the leak).

    Example:

    .. code-block:: python

        moco = MoCo(attentive_resnet50(n_attn=5), K=256)
        moco.check_queue_size(len(train_ds))
        logits, labels = moco(view1, view2)
        loss = InfoNCELoss()(logits, labels)
    """

    def __init__(
        self,
        base_encoder: nn.Module,
        dim: int = 128,
        K: int = 4096,
        m: float = 0.999,
        T: float = 0.07,
        mlp: bool = True,
        shuffle_bn_splits: int = 2,
    ) -> None:
        super().__init__()
        check_backbone(base_encoder)
        if dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}.")
        if K < 1:
            raise ValueError(f"queue length K must be a positive integer, got {K}.")
        if not 0.0 <= m < 1.0:
            raise ValueError(f"momentum m must be in [0, 1), got {m}.")
        if T <= 0:
            raise ValueError(f"temperature T must be > 0, got {T}.")
        if shuffle_bn_splits < 1:
            raise ValueError(f"shuffle_bn_splits must be >= 1, got {shuffle_bn_splits}.")
        self.dim = dim
        self.K = K
        self.m = m
        self.T = T
        self.shuffle_bn_splits = shuffle_bn_splits

        if hasattr(base_encoder, "reset_classifier"):
            base_encoder.reset_classifier(0)
        ref = next(base_encoder.parameters())
        head = projection_head(int(base_encoder.feature_dim), dim, mlp).to(device=ref.device, dtype=ref.dtype)
        self.encoder_q = ProjectedEncoder(base_encoder, head)
        self.encoder_k = copy.deepcopy(self.encoder_q)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)

        queue = F.normalize(torch.randn(dim, K, device=ref.device), dim=0)
        self.register_buffer("queue", queue)
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long, device=ref.device))

    @property
    def has_batchnorm(self) -> bool:
        """Whether the key encoder has BatchNorm layers, i.e. whether the shuffled BN is needed."""
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.encoder_k.modules())

    @property
    def encoder_q_backbone(self) -> nn.Module:
        """The query backbone without its projection head (shared with the region head)."""
        return self.encoder_q.backbone

    def check_queue_size(self, n_train: int) -> None:
        """
        Check that the queue is shorter than the training set (MoCo's default 65536 suits ImageNet, not
        425 CT images): otherwise the queue holds stale keys of the query image itself as negatives.

        Raises:
            ValueError: when ``K >= n_train``.
        """
        if self.K >= n_train:
            raise ValueError(
                f"MoCo queue length K={self.K} must be smaller than the number of training images ({n_train}); "
                f"choose K < {n_train}."
            )

    @torch.no_grad()
    def _momentum_update_key_encoder(self) -> None:
        """:math:`\\theta_k \\leftarrow m\\,\\theta_k + (1 - m)\\,\\theta_q` for every parameter."""
        for param_q, param_k in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            param_k.mul_(self.m).add_(param_q.detach(), alpha=1.0 - self.m)

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Write the (gathered) keys ``(N, dim)`` at ``queue_ptr`` (wrapping around), replacing the oldest keys."""
        keys = _gather(keys)
        n = keys.shape[0]
        if n > self.K:
            raise ValueError(f"cannot enqueue {n} keys (all processes) into a queue of length K={self.K}.")
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must have shape (N, {self.dim}), got {tuple(keys.shape)}.")
        ptr = int(self.queue_ptr[0])
        idx = (ptr + torch.arange(n, device=self.queue.device)) % self.K
        self.queue[:, idx] = keys.detach().t().to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % self.K

    @torch.no_grad()
    def _batch_shuffle_ddp(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Shuffle the batch across processes: returns this process's shard and the un-shuffling index."""
        world = idist.get_world_size()
        sizes = idist.all_gather(int(x.shape[0]))
        if any(int(s) != x.shape[0] for s in sizes):
            raise ValueError(
                f"MoCo's shuffled BN needs the same batch size on every process, got {[int(s) for s in sizes]}; "
                "use drop_last=True in the data loader."
            )
        x_all = idist.all_gather(x.contiguous())
        idx_shuffle = torch.randperm(x_all.shape[0]).to(x.device)
        idx_shuffle = idist.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        idx_this = idx_shuffle.view(world, -1)[idist.get_rank()]
        return x_all[idx_this], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_ddp(self, x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
        """Undo :meth:`_batch_shuffle_ddp` on the key encoder's outputs."""
        x_all = idist.all_gather(x.contiguous())
        idx_this = idx_unshuffle.view(idist.get_world_size(), -1)[idist.get_rank()]
        return x_all[idx_this]

    @torch.no_grad()
    def _compute_keys(self, im_k: torch.Tensor) -> torch.Tensor:
        """Normalised keys ``(N, dim)`` of this process's key images, with shuffled BN in training mode."""
        if not self.encoder_k.training:
            return F.normalize(self.encoder_k(im_k), dim=1)
        if _world_size() > 1 and self.has_batchnorm:
            x, idx_unshuffle = self._batch_shuffle_ddp(im_k)
            k = F.normalize(self.encoder_k(x), dim=1)
            return self._batch_unshuffle_ddp(k, idx_unshuffle)
        if not self.has_batchnorm:  # e.g. a ViT (LayerNorm only): every key depends on its own image alone
            return F.normalize(self.encoder_k(im_k), dim=1)
        n = im_k.shape[0]
        perm = torch.randperm(n).to(im_k.device)
        chunks = im_k[perm].chunk(min(self.shuffle_bn_splits, n))
        k = F.normalize(torch.cat([self.encoder_k(c) for c in chunks], dim=0), dim=1)
        return k[torch.argsort(perm)]

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            im_q: a batch of query images ``(N, C, *spatial)``.
            im_k: the other augmentation of the same images, same shape.

        Returns:
            ``logits`` ``(N, 1 + K)`` (already divided by ``T``) and ``labels`` ``(N,)`` (zeros), on ``im_q``'s device.
        """
        if im_q.shape != im_k.shape:
            raise ValueError(
                f"query and key batches must have the same shape, got {tuple(im_q.shape)} and {tuple(im_k.shape)}."
            )
        q = F.normalize(self.encoder_q(im_q), dim=1)  # N x dim
        with torch.no_grad():
            if self.training:
                self._momentum_update_key_encoder()
            k = self._compute_keys(im_k)  # N x dim
        l_pos = torch.einsum("nc,nc->n", q, k.to(q.dtype)).unsqueeze(-1)  # N x 1
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach().to(q.dtype))  # N x K
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        if self.training:
            self._dequeue_and_enqueue(k)
        return logits, labels


def _world_size() -> int:
    return int(idist.get_world_size()) if has_ignite else 1


def _gather(x: torch.Tensor) -> torch.Tensor:
    if _world_size() > 1:
        return idist.all_gather(x.contiguous())
    return x
