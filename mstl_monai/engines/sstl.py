# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The self-supervised stage SSTL-M (Liu & Ji 2021, Sec. 3.3): multi-scale contrastive + lung-lobe region learning.

Two branches share one backbone (SPEC.md section 3):

- image scale: MoCo v2 (queue, momentum key encoder, temperature), InfoNCE loss ``Lcons`` (Eq. 2);
- region scale: the five lobe crops ``ru, rm, rl, lu, ll`` of every image of the batch (from
  :class:`~mstl_monai.transforms.RandLungLobeGeneratord`) go through the backbone in one forward and a 5-way
  head says which lobe each crop is (``Lra``, Eq. 5).

The stage loss is Eq. 6, ``L = alpha1 * Lcons + alpha2 * (Lra + sum_i Lra^i)``: the region loss of the query image and
of the images that serve as its negatives, i.e. of every image of the batch. ``method="moco"`` and
``method="simclr"`` are the paper's Table 3 baselines in the same engine (no region branch).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.engines import Trainer
from monai.engines.utils import IterationEvents
from monai.utils import LossReduction, StrEnum, optional_import
from torch.nn.modules.loss import _Loss

if TYPE_CHECKING:
    import ignite.distributed as idist
    from ignite.engine import Engine, Events
    from ignite.metrics import Average
else:
    idist, _ = optional_import("ignite.distributed")
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")
    Average, _ = optional_import("ignite.metrics", name="Average")

__all__ = [
    "SSTL_METHODS",
    "SSTLKeys",
    "SSTLLoss",
    "SSTLNetwork",
    "SSTLTrainer",
    "BackboneSaver",
    "moco_v2_augmentations",
    "sstl_datalist",
    "sstl_scalar_terms",
    "simclr_logits",
]

logger = logging.getLogger(__name__)

#: the self-supervised methods of the paper's Table 3 comparison
SSTL_METHODS = ("ours", "moco", "simclr")


class SSTLKeys(StrEnum):
    """Batch and ``engine.state.output`` keys of the SSTL-M stage."""

    VIEW1 = "view1"
    VIEW2 = "view2"
    REGIONS = "regions"
    REGION_LABELS = "regions_labels"
    REGION_FALLBACK = "regions_fallback"
    LOSS = "loss"
    LOSS_CONS = "loss_cons"
    LOSS_REGION = "loss_region"
    INSTANCE_ACC = "instance_acc"
    REGION_ACC = "region_acc"
    FALLBACK_RATE = "region_fallback_rate"
    CONS_LOGITS = "cons_logits"
    CONS_LABELS = "cons_labels"
    REGION_LOGITS = "region_logits"


#: the scalar terms an SSTL-M iteration writes into ``engine.state.output`` (logged every iteration)
_SCALAR_TERMS = (
    SSTLKeys.LOSS,
    SSTLKeys.LOSS_CONS,
    SSTLKeys.LOSS_REGION,
    SSTLKeys.INSTANCE_ACC,
    SSTLKeys.REGION_ACC,
    SSTLKeys.FALLBACK_RATE,
)


def _check_method(method: str) -> str:
    method = str(method).lower()
    if method not in SSTL_METHODS:
        raise ValueError(f"unknown SSTL-M method {method!r}: use one of {SSTL_METHODS}.")
    return method


def sstl_scalar_terms(output: Any) -> dict[str, float] | None:
    """The scalar terms of an SSTL-M iteration output (for ``StatsHandler``/``TensorBoardStatsHandler``'s
    ``output_transform``): ``loss``, ``loss_cons``, and where the method has them ``loss_region``,
    ``instance_acc``, ``region_acc``, ``region_fallback_rate``."""
    if not isinstance(output, dict):
        return None
    return {str(k): float(output[k]) for k in _SCALAR_TERMS if output.get(k) is not None}


# ---------------------------------------------------------------------------------------------------- data


def sstl_datalist(
    dataset_dir: str | os.PathLike,
    use_luna16: bool = False,
    luna16_dir: str | os.PathLike | None = None,
    image_key: str = "image",
) -> list[dict]:
    """The label-free training datalist of SSTL-M: the COVID19-CT **training** images (official split; never the
    val/test images) with their labels removed, optionally plus the unlabelled LUNA16 slices.

    Args:
        dataset_dir: the COVID19-CT folder (``CT_COVID/``, ``CT_NonCOVID/``, ``Data-split/``).
        use_luna16: add the slices found under ``luna16_dir``.
        luna16_dir: the LUNA16 slice folder (default ``<dataset_dir>/../luna16``).
        image_key: the key of the image path in the returned dicts.

    Returns:
        a list of ``{image_key: path, "source": "covid-ct" | "luna16"}``, without any label.

    Raises:
        FileNotFoundError: a missing folder (named in the message).
        ValueError: an empty data set.
    """
    from mstl_monai.data import covid_ct_datalist, unlabelled_datalist

    dataset_dir = str(dataset_dir)
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"SSTL-M dataset_dir {dataset_dir!r} does not exist.")
    items = [{image_key: str(d["image"]), "source": "covid-ct"} for d in covid_ct_datalist(dataset_dir, "train")]
    if use_luna16:
        luna = str(luna16_dir) if luna16_dir else os.path.join(os.path.dirname(os.path.abspath(dataset_dir)), "luna16")
        if not os.path.isdir(luna):
            raise FileNotFoundError(f"use_luna16 is set but the LUNA16 folder {luna!r} does not exist.")
        items += [{image_key: str(d["image"]), "source": "luna16"} for d in unlabelled_datalist(luna)]
    if not items:
        raise ValueError(f"the SSTL-M training datalist is empty (dataset_dir={dataset_dir}, use_luna16={use_luna16}).")
    for i, item in enumerate(items):
        if not os.path.isfile(item[image_key]):
            raise FileNotFoundError(f"SSTL-M datalist item {i}: image file {item[image_key]!r} does not exist.")
    return items


def moco_v2_augmentations(
    keys: str | Sequence[str],
    image_size: int | Sequence[int],
    min_scale: float = 0.2,
    flip_prob: float = 0.5,
    jitter_prob: float = 0.8,
    brightness: float = 0.4,
    contrast: float = 0.4,
    gamma: tuple[float, float] = (0.7, 1.5),
    blur_prob: float = 0.5,
    blur_sigma: tuple[float, float] | None = None,
) -> list:
    """MoCo v2's augmentations (Chen et al. 2020) adapted to 1-channel CT slices in ``[0, 1]``, with **separate
    random transform instances for each key**, so the two views of an image are independent draws.

    Per view: random resized crop (area fraction in ``[min_scale, 1]``, random aspect ratio, resized to
    ``image_size``), horizontal flip, brightness and contrast jitter (the grayscale counterpart of colour jitter),
    a gamma jitter, and Gaussian blur (sigma scaled from MoCo's ``[0.1, 2.0]`` at 224 px to ``image_size``).
    MoCo's random grayscale is the identity on gray images and is left out.

    Args:
        keys: the view keys (e.g. ``["view1", "view2"]``), each a copy of the slice made before these transforms.
        image_size: output size of the crop.
        min_scale: smallest crop area as a fraction of the image (MoCo: 0.2).
        flip_prob: probability of the horizontal flip.
        jitter_prob: probability of each intensity jitter (MoCo: 0.8).
        brightness: brightness jitter, intensities multiplied by a factor in ``[1 - b, 1 + b]``.
        contrast: contrast jitter around the mean, by a factor in ``[1 - c, 1 + c]``.
        gamma: range of the gamma jitter.
        blur_prob: probability of the Gaussian blur (MoCo: 0.5).
        blur_sigma: sigma range in pixels (default ``[0.1, 2.0] * image_size / 224``).

    Returns:
        a flat list of MONAI dictionary transforms (put it in a ``Compose``).
    """
    from monai.transforms import (
        RandAdjustContrastd,
        RandFlipd,
        RandGaussianSmoothd,
        RandScaleCropd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
        Resized,
    )

    keys = [keys] if isinstance(keys, str) else list(keys)
    if not keys:
        raise ValueError("moco_v2_augmentations needs at least one view key.")
    size = [int(image_size), int(image_size)] if isinstance(image_size, (int, float)) else [int(s) for s in image_size]
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be a positive int or a pair, got {image_size!r}.")
    if not 0.0 < min_scale <= 1.0:
        raise ValueError(f"min_scale is an area fraction in (0, 1], got {min_scale}.")
    for name, p in (("flip_prob", flip_prob), ("jitter_prob", jitter_prob), ("blur_prob", blur_prob)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {p}.")
    if blur_sigma is None:
        s = min(size) / 224.0
        blur_sigma = (0.1 * s, 2.0 * s)
    side = math.sqrt(min_scale)
    out: list = []
    for key in keys:
        out += [
            RandScaleCropd(key, roi_scale=side, max_roi_scale=1.0, random_center=True, random_size=True),
            Resized(key, spatial_size=size, mode="bilinear"),
            RandFlipd(key, prob=flip_prob, spatial_axis=1),
            RandScaleIntensityd(key, factors=brightness, prob=jitter_prob),
            RandScaleIntensityFixedMeand(key, factors=contrast, prob=jitter_prob),
            RandAdjustContrastd(key, gamma=tuple(gamma), prob=jitter_prob),
            RandGaussianSmoothd(key, sigma_x=tuple(blur_sigma), sigma_y=tuple(blur_sigma), prob=blur_prob),
        ]
    return out


# ---------------------------------------------------------------------------------------------------- loss


class SSTLLoss(_Loss):
    """
    The SSTL-M loss of Liu & Ji (2021), Eq. 6:

    .. math::

        L = \\alpha_1 L_{cons} + \\alpha_2 \\Big(L_{ra} + \\sum_i L_{ra}^i\\Big)

    ``Lcons`` is the InfoNCE loss of the image-scale branch (Eq. 2; a cross-entropy over the contrastive logits,
    averaged over the queries). ``Lra`` is the region loss of Eq. 5 of one image, the sum of the cross-entropies of
    its five lobe crops; the bracket takes it over the query image and every image serving as its negative: in a
    batch every image is a negative of the others (the queue's negatives were batch images of earlier
    iterations, where their own region loss was taken), so it is the region loss over all images of the batch,
    reduced with ``image_reduction`` (``"mean"`` keeps its scale independent of the batch size; ``"sum"`` is the
    literal sum). With no region logits (the MoCo / SimCLR baselines) ``L = alpha1 * Lcons``.

    Args:
        alpha1: weight of the contrastive term (paper: 0.8).
        alpha2: weight of the region term (paper: 0.8).
        region_reduction: ``"sum"`` (Eq. 5) or ``"mean"`` over the five crops of an image.
        image_reduction: ``"mean"`` or ``"sum"`` over the images of the batch.
    """

    def __init__(
        self,
        alpha1: float = 0.8,
        alpha2: float = 0.8,
        region_reduction: LossReduction | str = LossReduction.SUM,
        image_reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__(reduction=LossReduction.MEAN.value)
        from mstl_monai.losses import InfoNCELoss, RegionLoss

        if alpha1 < 0 or alpha2 < 0:
            raise ValueError(f"alpha1 and alpha2 must be >= 0, got alpha1={alpha1}, alpha2={alpha2}.")
        image_reduction = LossReduction(image_reduction).value
        if image_reduction == LossReduction.NONE.value:
            raise ValueError(f"image_reduction must be 'mean' or 'sum', got {image_reduction!r}.")
        self.alpha1 = float(alpha1)
        self.alpha2 = float(alpha2)
        self.cons_loss = InfoNCELoss()
        self.region_loss = RegionLoss(region_reduction=region_reduction, reduction=image_reduction)

    def terms(
        self,
        cons_logits: torch.Tensor,
        cons_labels: torch.Tensor | None = None,
        region_logits: torch.Tensor | None = None,
        region_labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every term of Eq. 6: ``loss`` (the total), ``loss_cons`` and, with region logits, ``loss_region``
        (the bracket, before ``alpha2``).

        Args:
            cons_logits: contrastive logits ``(N, M)`` divided by the temperature.
            cons_labels: index of each query's positive ``(N,)`` (zeros for MoCo's layout when ``None``).
            region_logits: lobe logits ``(B, 5, 5)`` (crop-major per image) or ``(B * 5, 5)``; ``None`` for baselines.
            region_labels: lobe labels ``(B, 5)`` or ``(B * 5,)``; ``None``: crop ``r`` is lobe ``r``.
        """
        loss_cons = self.cons_loss(cons_logits, cons_labels)
        out = {SSTLKeys.LOSS_CONS.value: loss_cons}
        total = self.alpha1 * loss_cons
        if region_logits is not None:
            if region_labels is not None and region_logits.ndim == 2:
                region_labels = region_labels.reshape(-1)
            loss_region = self.region_loss(region_logits, region_labels)
            out[SSTLKeys.LOSS_REGION.value] = loss_region
            total = total + self.alpha2 * loss_region
        out[SSTLKeys.LOSS.value] = total
        return out

    def forward(
        self,
        cons_logits: torch.Tensor,
        cons_labels: torch.Tensor | None = None,
        region_logits: torch.Tensor | None = None,
        region_labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The total loss ``L`` of Eq. 6 (see :meth:`terms`)."""
        return self.terms(cons_logits, cons_labels, region_logits, region_labels)[SSTLKeys.LOSS.value]


# ---------------------------------------------------------------------------------------------------- network


def simclr_logits(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent written as a cross-entropy: logits ``(2N, 2N)`` of the cosine similarities of the ``2N``
    projections divided by ``temperature`` (each one's similarity with itself masked out) and the index of each
    projection's other view. ``cross_entropy(logits, labels)`` equals ``monai.losses.ContrastiveLoss`` and
    ``argmax(logits) == labels`` is the instance-discrimination top-1 accuracy."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"projections must both have shape (N, dim), got {tuple(z1.shape)} and {tuple(z2.shape)}.")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0).float(), dim=1)
    logits = z @ z.t() / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    labels = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return logits, labels


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
        from mstl_monai.networks.nets import MoCo, RegionHead, SimCLR

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
        :func:`mstl_monai.engines.load_pretrained`, then make MoCo's key encoder a copy of the query encoder, so
        the momentum encoder starts from the loaded weights too. Returns the loaded/new/dropped report."""
        from mstl_monai.engines.utils import load_pretrained

        report = load_pretrained(self.backbone, path)
        self.sync_key_encoder()
        return report

    def check_queue_size(self, n_train: int, global_batch_size: int | None = None) -> None:
        """MoCo's queue must be shorter than the training set (SPEC.md section 3) and hold at least one global batch
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


# ---------------------------------------------------------------------------------------------------- trainer


def _world_size() -> int:
    try:
        return int(idist.get_world_size())
    except Exception:
        return 1


def _unwrap(net: nn.Module) -> nn.Module:
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


class SSTLTrainer(Trainer):
    """
    MONAI trainer of the self-supervised stage SSTL-M (an ignite ``Engine``; only ``_iteration`` differs from a
    MONAI ``Trainer``). Each iteration: the two augmented views (and, for ``"ours"``, the five lobe crops of every
    image) go through :class:`SSTLNetwork` under the inferer (e.g. :class:`~mstl_monai.engines.AutocastInferer`
    for bf16 autocast on any device), :class:`SSTLLoss` gives Eq. 6, then backward and the optimiser step.

    ``engine.state.output`` holds the scalar terms ``loss``, ``loss_cons``, and for ``"ours"`` ``loss_region``,
    the lobe-task accuracy ``region_acc`` and the Generator's ``region_fallback_rate``, plus the contrastive
    top-1 instance accuracy ``instance_acc`` (:func:`sstl_scalar_terms` gives them to the stats handlers). Their
    epoch means are ignite ``Average`` metrics ``epoch_<term>`` in ``engine.state.metrics`` (reduced across
    processes).

    With several processes (``ignite.distributed`` / ``torchrun``) the network is wrapped in
    ``DistributedDataParallel``; MoCo gathers the keys of every process and shuffles BN across processes.

    Args:
        device: the device of the network and the batches.
        max_epochs: number of epochs.
        train_data_loader: yields dicts with ``view1``, ``view2`` and (``"ours"``) ``regions``, ``regions_labels``.
        network: an :class:`SSTLNetwork` (or a DDP wrapping one).
        optimizer: the optimiser of the network's trainable parameters.
        loss_function: an :class:`SSTLLoss` (default ``SSTLLoss()``, alpha1 = alpha2 = 0.8).
        inferer: called as ``inferer(view1, network, view2, regions)``; default: a plain call.
        epoch_length: iterations per epoch (default ``len(train_data_loader)``).
        non_blocking: asynchronous host-to-device copies.
        train_handlers: MONAI/ignite handlers to attach.
        view_keys: batch keys of the two views.
        regions_key: batch key of the lobe crops ``(B, 5, C, h, w)``.
        region_labels_key: batch key of the lobe labels ``(B, 5)``.
        epoch_metrics: attach the ``epoch_<term>`` averages.
        region_generator: makes the lobe crops on the trainer's device (``"ours"`` only): called with the batch's
            tensors moved to the device (a dict), it returns the keys to add to the batch, at least ``regions_key``
            and ``region_labels_key``, e.g. a ``Compose`` of :class:`~mstl_monai.transforms.BatchLungLobeGeneratord`
            on the full slices and the regions' intensity normalisation. ``None``: the loader yields the crops.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Any,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: SSTLLoss | None = None,
        inferer: Callable | None = None,
        epoch_length: int | None = None,
        non_blocking: bool = False,
        train_handlers: Sequence | None = None,
        view_keys: Sequence[str] = (SSTLKeys.VIEW1.value, SSTLKeys.VIEW2.value),
        regions_key: str = SSTLKeys.REGIONS.value,
        region_labels_key: str = SSTLKeys.REGION_LABELS.value,
        epoch_metrics: bool = True,
        region_generator: Callable[[dict], dict] | None = None,
    ) -> None:
        model = _unwrap(network)
        if not isinstance(model, SSTLNetwork):
            raise TypeError(f"SSTLTrainer needs an SSTLNetwork, got {type(model).__name__}.")
        if len(view_keys) != 2:
            raise ValueError(f"view_keys must name the two views, got {view_keys!r}.")
        device = torch.device(device) if not isinstance(device, torch.device) else device
        if _world_size() > 1 and not isinstance(network, nn.parallel.DistributedDataParallel):
            network = nn.parallel.DistributedDataParallel(
                network, device_ids=[device] if device.type == "cuda" else None
            )
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            decollate=False,
            handlers=None,
        )
        if self.state.epoch_length == 0:
            n = len(getattr(train_data_loader, "dataset", []))
            bs = getattr(train_data_loader, "batch_size", None)
            raise ValueError(
                f"the SSTL-M data loader yields no full batch (training images: {n}, batch_size: {bs}, drop_last): "
                "lower batch_size or add training images."
            )
        self.network = network
        self.sstl_network = model
        self.optimizer = optimizer
        self.loss_function = loss_function if loss_function is not None else SSTLLoss()
        self.inferer = inferer
        self.view_keys = tuple(str(k) for k in view_keys)
        self.regions_key = str(regions_key)
        self.region_labels_key = str(region_labels_key)
        self.region_generator = region_generator
        self._small_regions_warned = False
        if epoch_metrics:
            for term in self.scalar_terms:
                Average(output_transform=_term_getter(term), device=device).attach(self, f"epoch_{term}")
        if train_handlers is not None:
            self._register_handlers(train_handlers)

    @property
    def scalar_terms(self) -> list[str]:
        """The scalar terms this trainer's method writes every iteration."""
        terms = [SSTLKeys.LOSS.value, SSTLKeys.LOSS_CONS.value, SSTLKeys.INSTANCE_ACC.value]
        if self.sstl_network.uses_regions:
            terms += [SSTLKeys.LOSS_REGION.value, SSTLKeys.REGION_ACC.value]
        return terms

    def _get(self, batchdata: dict, key: str) -> torch.Tensor:
        if key not in batchdata:
            raise KeyError(
                f"SSTL-M batch has no {key!r} key (keys: {sorted(batchdata)}); check the training transforms."
            )
        value = batchdata[key]
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value)
        if hasattr(value, "as_tensor"):  # MetaTensor -> plain tensor (no meta tracking in the step)
            value = value.as_tensor()
        return value.to(device=self.state.device, non_blocking=self.non_blocking)

    def prepare_sstl_batch(
        self, batchdata: dict
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Move the views (and, when the method uses them, the lobe crops and labels) to the device; with a
        ``region_generator``, make the crops there first (its keys are added to ``batchdata``)."""
        if not isinstance(batchdata, dict):
            raise TypeError(f"SSTL-M batches must be dicts, got {type(batchdata).__name__}.")
        if self.region_generator is not None and self.sstl_network.uses_regions:
            tensors = {k: self._get(batchdata, k) for k, v in batchdata.items() if isinstance(v, torch.Tensor)}
            batchdata.update(self.region_generator(tensors))
        view1, view2 = (self._get(batchdata, k) for k in self.view_keys)
        regions = labels = None
        if self.sstl_network.uses_regions:
            regions = self._get(batchdata, self.regions_key)
            labels = self._get(batchdata, self.region_labels_key).long()
            resnet = hasattr(self.sstl_network.backbone, "layer4")  # a ViT takes crops down to one patch
            if resnet and not self._small_regions_warned and min(regions.shape[-2:]) < 32:
                self._small_regions_warned = True
                self.logger.warning(
                    f"lobe crops of {tuple(regions.shape[-2:])} px reach layer4 as 1x1 maps; on CPU with bf16 autocast "
                    "oneDNN's stride-2 conv then returns NaN weight gradients (seen with torch 2.13): "
                    "use region_size >= 32."
                )
        return view1, view2, regions, labels

    def _iteration(self, engine: SSTLTrainer, batchdata: dict[str, Any]) -> dict:  # type: ignore[override]
        """One SSTL-M step: forward of both branches, Eq. 6, backward, optimiser step; returns the scalar terms."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        view1, view2, regions, region_labels = engine.prepare_sstl_batch(batchdata)
        engine.state.output = {}
        engine.network.train()
        engine.optimizer.zero_grad(set_to_none=True)
        if engine.inferer is None:
            out = engine.network(view1, view2, regions)
        else:
            out = engine.inferer(view1, engine.network, view2, regions)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        cons_logits, cons_labels = out[SSTLKeys.CONS_LOGITS], out[SSTLKeys.CONS_LABELS]
        region_logits = out.get(SSTLKeys.REGION_LOGITS.value)
        terms = engine.loss_function.terms(cons_logits, cons_labels, region_logits, region_labels)
        loss = terms[SSTLKeys.LOSS.value]
        if not torch.isfinite(loss.detach()):
            raise FloatingPointError(
                f"non-finite SSTL-M loss at epoch {engine.state.epoch}, iteration {engine.state.iteration}: "
                + ", ".join(f"{k}={float(v):.4g}" for k, v in terms.items())
            )
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        loss.backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)

        with torch.no_grad():
            output: dict[str, Any] = {k: float(v.detach()) for k, v in terms.items()}
            output[SSTLKeys.INSTANCE_ACC.value] = float((cons_logits.argmax(dim=1) == cons_labels).float().mean())
            if region_logits is not None:
                pred = region_logits.argmax(dim=-1).reshape(-1)
                target = region_labels.reshape(-1) if region_labels is not None else None
                if target is None:
                    target = torch.arange(region_logits.shape[1], device=pred.device).repeat(region_logits.shape[0])
                output[SSTLKeys.REGION_ACC.value] = float((pred == target).float().mean())
                fallback = batchdata.get(SSTLKeys.REGION_FALLBACK.value)
                if fallback is not None:
                    output[SSTLKeys.FALLBACK_RATE.value] = float(torch.as_tensor(fallback).float().mean())
        engine.state.output = output
        return output


def _term_getter(term: str) -> Callable[[dict], torch.Tensor]:
    def get(output: dict) -> torch.Tensor:
        return torch.tensor(output[term], dtype=torch.float64)

    return get


# ---------------------------------------------------------------------------------------------------- handlers


class BackboneSaver:
    """Write the trained backbone of an :class:`SSTLNetwork` (the query encoder, without projection or region head)
    as a plain state dict (``conv1.weight``, ``layer1.0...``, ``attn....``) when training completes, atomically
    (temporary file in the same folder, then rename), on the first process only. This is the ``pretrained`` of
    the next stage (``load_pretrained`` / ``load_stage_checkpoint``).

    Args:
        network: the :class:`SSTLNetwork` (or a module with a ``backbone`` attribute, or the backbone itself).
        filepath: output file, e.g. ``<run_dir>/models/model.pt``.
        info: what the backbone is (:func:`~mstl_monai.engines.checkpoint_info`), written beside it as
            ``<filepath>.json`` (None: no sidecar).
    """

    def __init__(self, network: nn.Module, filepath: str | os.PathLike, info: dict | None = None) -> None:
        self.network = network
        self.filepath = str(filepath)
        self.info = dict(info) if info else None
        self.logger = logger

    def attach(self, engine: Engine) -> None:
        self.logger = engine.logger
        engine.add_event_handler(Events.COMPLETED, self)

    def backbone_state_dict(self) -> dict[str, torch.Tensor]:
        net = _unwrap(self.network)
        bb = getattr(net, "backbone", net)
        return {k: v.detach().cpu().clone() for k, v in bb.state_dict().items()}

    def save(self) -> str:
        """Write the backbone state dict now (rank 0 only) and return the path."""
        if _world_size() > 1 and int(idist.get_rank()) != 0:
            return self.filepath
        from mstl_monai.engines.checkpoint import write_checkpoint_info
        from mstl_monai.metrics.io import atomic_write

        if self.info is not None:
            write_checkpoint_info(self.filepath, self.info)
        with atomic_write(self.filepath, "wb") as f:
            torch.save(self.backbone_state_dict(), f)
        return self.filepath

    def __call__(self, engine: Engine) -> None:
        path = self.save()
        self.logger.info(f"SSTL-M backbone written to {path}")
