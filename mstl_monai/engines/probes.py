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

import json
import logging
import os
import time
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.utils import optional_import

if TYPE_CHECKING:
    import ignite.distributed as idist
    from ignite.engine import Engine, Events
else:
    idist, _ = optional_import("ignite.distributed")
    Engine, _ = optional_import("ignite.engine", name="Engine")
    Events, _ = optional_import("ignite.engine", name="Events")

__all__ = ["extract_features", "knn_scores", "knn_probe", "lobe_probe", "SSTLProbe", "ProbeHandler"]

logger = logging.getLogger(__name__)


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
        from mstl_monai.engines.inferers import resolve_amp_dtype

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


def _flat(result: dict[str, Any], prefix: str = "probe") -> dict[str, float]:
    flat: dict[str, float] = {}
    for group, vals in result.items():
        if not isinstance(vals, dict):
            continue
        for k, v in vals.items():
            if isinstance(v, float) and k not in ("chance",):
                flat[f"{prefix}_{group}_{k}"] = v
    return flat


class ProbeHandler:
    """Run an :class:`SSTLProbe` on the network's backbone before training (the incoming weights), every
    ``interval`` epochs, and after training; log the numbers (console, and TensorBoard under ``probe/`` when
    ``log_dir`` is given; step = epoch), keep them in ``engine.state.probe`` (``{"before": ..., "during": {epoch:
    ...}, "after": ...}``) and write them to ``output_file`` (the same JSON plus ``delta`` = after - before; atomic
    writes). A resumed run keeps the ``before`` of its first start. With several processes the first one probes,
    the others wait.

    Args:
        probe: the probe to run (``probe(backbone, region_head) -> dict``).
        network: an :class:`~mstl_monai.engines.SSTLNetwork` (``backbone``, ``region_head``), or a backbone.
        output_file: the JSON file, e.g. ``<run_dir>/probe.json``.
        interval: probe every ``interval`` epochs during training (0: only before and after).
        enabled: switch the handler off.
        log_dir: TensorBoard folder for the probe scalars (``None``: no TensorBoard).
    """

    def __init__(
        self,
        probe: Any,
        network: nn.Module,
        output_file: str | os.PathLike,
        interval: int = 0,
        enabled: bool = True,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        if interval < 0:
            raise ValueError(f"probe interval must be >= 0 epochs, got {interval}.")
        self.probe = probe
        self.network = network
        self.output_file = str(output_file)
        self.interval = int(interval)
        self.enabled = bool(enabled)
        self.log_dir = None if log_dir is None else str(log_dir)
        self._writer: Any = None
        self.logger = logger

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        self.logger = engine.logger
        engine.add_event_handler(Events.STARTED, self.started)
        if self.interval > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self.epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    # ------------------------------------------------------------------ helpers
    def _parts(self) -> tuple[nn.Module, nn.Module | None]:
        net = self.network.module if isinstance(self.network, nn.parallel.DistributedDataParallel) else self.network
        return getattr(net, "backbone", net), getattr(net, "region_head", None)

    def _read(self) -> dict[str, Any]:
        if os.path.isfile(self.output_file):
            with open(self.output_file) as f:
                return json.load(f)
        return {}

    def _write(self, data: dict[str, Any]) -> None:
        from mstl_monai.metrics.io import write_metrics_json

        write_metrics_json(self.output_file, data)

    def _tensorboard(self, flat: dict[str, float], epoch: int) -> None:
        if self.log_dir is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=self.log_dir)
        for k, v in flat.items():
            self._writer.add_scalar(k.replace("probe_", "probe/", 1), v, epoch)
        self._writer.flush()

    def _run(self, engine: Engine, when: str) -> dict[str, Any] | None:
        rank = int(idist.get_rank()) if int(idist.get_world_size()) > 1 else 0
        result = None
        if rank == 0:
            backbone, head = self._parts()
            result = self.probe(backbone, head)
            result["epoch"] = int(engine.state.epoch)
            flat = _flat(result)
            probes = getattr(engine.state, "probe", None) or {"before": None, "during": {}, "after": None}
            if when == "during":
                probes["during"][int(engine.state.epoch)] = result
            else:
                probes[when] = result
            engine.state.probe = probes
            summary = ", ".join(f"{k}={v:.4f}" for k, v in flat.items())
            self.logger.info(f"SSTL-M probe ({when}, epoch {engine.state.epoch}): {summary}")
            self._tensorboard(flat, int(engine.state.epoch))
        if int(idist.get_world_size()) > 1:
            idist.barrier()
        return result

    # ------------------------------------------------------------------ events
    def started(self, engine: Engine) -> None:
        data = self._read() if (engine.state.iteration > 0) else {}
        if engine.state.iteration > 0 and "before" in data:
            return  # resumed: the incoming weights were probed at the first start
        if engine.state.iteration > 0:
            self.logger.warning("resumed run without a 'before' probe: the incoming weights are no longer available")
            return
        result = self._run(engine, "before")
        if result is not None:
            self._write({"before": result, "during": {}, "after": None})

    def epoch_completed(self, engine: Engine) -> None:
        if engine.state.epoch >= engine.state.max_epochs:
            return  # the final epoch is probed by `completed`
        result = self._run(engine, "during")
        if result is not None:
            data = self._read()
            data.setdefault("during", {})[str(engine.state.epoch)] = result
            self._write(data)

    def completed(self, engine: Engine) -> None:
        result = self._run(engine, "after")
        if result is not None:
            data = self._read()
            data["after"] = result
            before = data.get("before")
            if before:
                flat_before = _flat(before)
                data["delta"] = {k: v - flat_before[k] for k, v in _flat(result).items() if k in flat_before}
            self._write(data)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
