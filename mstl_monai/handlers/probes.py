# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Is self-supervised pretraining learning? Probes of a frozen backbone, run before, during and after SSTL-M.

- the lobe task on held-out slices (the deterministic lobe Generator on COVID19-CT val; chance = 20 %): the
  accuracy of the stage's own region head (method ``ours``), and a k-NN lobe probe of the frozen crop features
  that every method can be scored with (label-free: the lobe labels come from the Generator);
- a k-NN probe of the frozen pooled features for COVID / non-COVID: memory = COVID19-CT train (labels), queries =
  COVID19-CT val; accuracy and ROC AUC.
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .probe_handler import ProbeHandler

# ProbeHandler (running the probes before, during and after training) lives in .probe_handler; named here too
__all__ = ["extract_features", "knn_scores", "knn_probe", "lobe_probe", "SSTLProbe", "ProbeHandler"]


def _autocast(device: torch.device, enabled: bool, dtype: torch.dtype):
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=enabled)


def _as_tensor(x: Any, device: torch.device) -> torch.Tensor:
    if hasattr(x, "as_tensor"):
        x = x.as_tensor()
    return torch.as_tensor(x).to(device)


@torch.no_grad()
def extract_features(
    backbone: nn.Module,
    loader: Any,
    device: torch.device | str,
    image_key: str = "image",
    label_key: str | None = "label",
    amp: bool = False,
    amp_dtype: torch.dtype = torch.bfloat16,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled features ``forward_head(forward_features(x), pre_logits=True)`` of a frozen backbone (eval mode).

    Args:
        backbone: an AttentiveResNet-like network.
        loader: yields dicts with ``image_key`` ``(B, C, H, W)`` (``(B, R, C, H, W)`` crops are flattened to
            ``B * R`` images) and optionally ``label_key``.
        device: where to run.
        image_key: the images' key.
        label_key: the labels' key (``None``: no labels).
        amp: bf16/fp16 autocast.
        amp_dtype: autocast dtype.

    Returns:
        float32 features ``(N, feature_dim)`` on the CPU, and the labels ``(N,)`` (or ``None``).
    """
    device = torch.device(device)
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    try:
        for batch in loader:
            if image_key not in batch:
                raise KeyError(f"probe batch has no {image_key!r} key (keys: {sorted(batch)}).")
            x = _as_tensor(batch[image_key], device).float()
            if x.ndim == 5:
                x = x.reshape(-1, *x.shape[2:])
            with _autocast(device, amp, amp_dtype):
                f = backbone.forward_head(backbone.forward_features(x), pre_logits=True)
            feats.append(f.float().cpu())
            if label_key is not None:
                if label_key not in batch:
                    raise KeyError(f"probe batch has no {label_key!r} key (keys: {sorted(batch)}).")
                labels.append(torch.as_tensor(batch[label_key]).reshape(-1).long().cpu())
    finally:
        backbone.train(was_training)
    if not feats:
        raise ValueError("the probe data loader yielded no batch.")
    return torch.cat(feats), (torch.cat(labels) if label_key is not None else None)


def knn_scores(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    query_feats: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> torch.Tensor:
    """Weighted k-NN class scores (Wu et al. 2018, "instance discrimination"): cosine similarity to the memory
    features, the ``k`` nearest vote with weights ``exp(sim / temperature)``; scores sum to 1 per query.

    Returns:
        ``(N_query, num_classes)`` float32 scores.
    """
    if train_feats.ndim != 2 or query_feats.ndim != 2 or train_feats.shape[1] != query_feats.shape[1]:
        raise ValueError(
            f"features must be (N, D) with the same D, got {tuple(train_feats.shape)} and {tuple(query_feats.shape)}."
        )
    if train_labels.shape != train_feats.shape[:1]:
        raise ValueError(f"train_labels must have shape ({train_feats.shape[0]},), got {tuple(train_labels.shape)}.")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    num_classes = int(train_labels.max()) + 1 if num_classes is None else int(num_classes)
    k = min(int(k), train_feats.shape[0])
    sim = F.normalize(query_feats.float(), dim=1) @ F.normalize(train_feats.float(), dim=1).t()
    top_sim, top_idx = sim.topk(k, dim=1)
    weights = (top_sim / temperature).exp()
    votes = F.one_hot(train_labels.long()[top_idx], num_classes).float() * weights.unsqueeze(-1)
    scores = votes.sum(dim=1)
    return scores / scores.sum(dim=1, keepdim=True).clamp_min(1e-12)


def knn_probe(
    train_feats: torch.Tensor,
    train_labels: torch.Tensor,
    val_feats: torch.Tensor,
    val_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    num_classes: int | None = None,
) -> dict[str, Any]:
    """k-NN probe: accuracy and (for two classes) the ROC AUC of class 1's score on the validation features."""
    from monai.metrics import compute_roc_auc

    num_classes = int(max(train_labels.max(), val_labels.max())) + 1 if num_classes is None else int(num_classes)
    scores = knn_scores(train_feats, train_labels, val_feats, k=k, temperature=temperature, num_classes=num_classes)
    acc = float((scores.argmax(dim=1) == val_labels).float().mean())
    out: dict[str, Any] = {
        "accuracy": acc,
        "k": min(int(k), train_feats.shape[0]),
        "n_train": len(train_labels),
        "n_val": len(val_labels),
    }
    if num_classes == 2 and len(torch.unique(val_labels)) == 2:
        out["auc"] = float(compute_roc_auc(scores[:, 1], val_labels))
    return out


@torch.no_grad()
def lobe_probe(
    backbone: nn.Module,
    loader: Any,
    device: torch.device | str,
    region_head: nn.Module | None = None,
    memory_loader: Any | None = None,
    regions_key: str = "regions",
    labels_key: str = "regions_labels",
    k: int = 20,
    amp: bool = False,
    amp_dtype: torch.dtype = torch.bfloat16,
) -> dict[str, Any]:
    """The lobe task on held-out slices (chance = 1 / number of lobes).

    Args:
        backbone: the frozen backbone.
        loader: held-out slices with their lobe crops ``(B, 5, C, h, w)`` and labels ``(B, 5)``.
        device: where to run.
        region_head: the stage's region head: its accuracy is ``head_accuracy`` (with per-lobe accuracies).
        memory_loader: slices (e.g. the training images) whose crop features form the k-NN memory: the k-NN lobe
            accuracy of the frozen features is ``knn_accuracy`` (any method, with or without a region head).
        k: neighbours of the k-NN lobe probe.
        amp: autocast.
        amp_dtype: autocast dtype.
    """
    feats, labels = extract_features(backbone, loader, device, regions_key, labels_key, amp, amp_dtype)
    n_lobes = int(labels.max()) + 1
    out: dict[str, Any] = {"n_crops": int(labels.numel()), "chance": 1.0 / max(n_lobes, 1)}
    if region_head is not None:
        was_training = region_head.training
        region_head.eval()
        try:
            param = next(region_head.parameters())
            logits = region_head(feats.to(device=param.device, dtype=param.dtype)).float().cpu()
        finally:
            region_head.train(was_training)
        pred = logits.argmax(dim=1)
        out["head_accuracy"] = float((pred == labels).float().mean())
        out["head_per_lobe"] = [float((pred[labels == i] == i).float().mean()) for i in range(n_lobes)]
    if memory_loader is not None:
        mem_feats, mem_labels = extract_features(
            backbone, memory_loader, device, regions_key, labels_key, amp, amp_dtype
        )
        scores = knn_scores(mem_feats, mem_labels, feats, k=k, num_classes=max(n_lobes, int(mem_labels.max()) + 1))
        out["knn_accuracy"] = float((scores.argmax(dim=1) == labels).float().mean())
    return out


class SSTLProbe:
    """The probes of SSTL-M on fixed data: a k-NN COVID / non-COVID probe (memory: COVID19-CT train with labels;
    queries: COVID19-CT val) and the lobe task on the val slices (region-head accuracy and a k-NN lobe probe whose
    memory is the train slices' crops).

    Both data sets yield dicts with ``image`` (the centre crop used for classification, normalised as in
    training), ``label``, ``regions`` ``(5, C, h, w)`` from the deterministic
    :class:`~mstl_monai.transforms.LungLobeGeneratord` and ``regions_labels``.

    Args:
        train_dataset: labelled training slices (the k-NN memory).
        val_dataset: labelled held-out slices (the queries). Never used for training.
        device: where to run the frozen backbone.
        k: neighbours of the k-NN probes.
        temperature: k-NN vote temperature.
        batch_size: probe batch size.
        num_workers: data loader workers.
        amp: autocast.
        amp_dtype: autocast dtype (``"bf16"``...).
        lobes: run the lobe probes.
    """

    def __init__(
        self,
        train_dataset: Any,
        val_dataset: Any,
        device: torch.device | str = "cpu",
        k: int = 20,
        temperature: float = 0.07,
        batch_size: int = 32,
        num_workers: int = 0,
        amp: bool = False,
        amp_dtype: str | torch.dtype = "bf16",
        lobes: bool = True,
    ) -> None:
        from mstl_monai.inferers.inferer import resolve_amp_dtype

        if len(train_dataset) == 0 or len(val_dataset) == 0:
            raise ValueError(
                f"probe data sets must not be empty (train: {len(train_dataset)}, val: {len(val_dataset)})."
            )
        self.train_dataset = train_dataset
        self.val_dataset = val_dataset
        self.device = torch.device(device)
        self.k = int(k)
        self.temperature = float(temperature)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.amp = bool(amp)
        self.amp_dtype = resolve_amp_dtype(amp_dtype)
        self.lobes = bool(lobes)

    def _loader(self, ds: Any):
        from monai.data import DataLoader

        return DataLoader(ds, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers)

    def __call__(self, backbone: nn.Module, region_head: nn.Module | None = None) -> dict[str, Any]:
        """Run every probe on ``backbone`` (left unchanged, its train/eval mode restored)."""
        t0 = time.time()
        train_loader, val_loader = self._loader(self.train_dataset), self._loader(self.val_dataset)
        tr_f, tr_y = extract_features(backbone, train_loader, self.device, "image", "label", self.amp, self.amp_dtype)
        va_f, va_y = extract_features(backbone, val_loader, self.device, "image", "label", self.amp, self.amp_dtype)
        out: dict[str, Any] = {"knn": knn_probe(tr_f, tr_y, va_f, va_y, k=self.k, temperature=self.temperature)}
        if self.lobes:
            out["lobe"] = lobe_probe(
                backbone, val_loader, self.device, region_head=region_head, memory_loader=train_loader,
                k=self.k, amp=self.amp, amp_dtype=self.amp_dtype,
            )
        out["seconds"] = round(time.time() - t0, 2)
        return out
