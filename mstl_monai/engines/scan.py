# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Scan-level diagnosis: the slice classifier over the lung slices of a whole CT scan, one answer per scan.

A scan (a DICOM series folder or a NIfTI volume, read by :class:`~mstl_monai.transforms.LoadCTSeries`) goes
through three steps:

1. **Slice selection** (:func:`lung_fractions`, :func:`select_lung_slices`): the lobe Generator's lung locator
   (:meth:`~mstl_monai.transforms.LungLobeGenerator.locate`: quantiser + boundary map at 128 px) gives each slice's
   lung area as a fraction of the slice. A slice is used when the locator found a lung box in it and its lung
   fraction is at least ``min_lung_share`` (default 0.25) of the scan's largest and at least
   ``min_lung_fraction`` (default 0.01) of the slice. Why: the classifier was trained on slices that show the
   lungs (the COVID19-CT slices are cut from papers at the lungs' widest); apex and base slices, the neck and
   the abdomen show little or no lung and give it inputs it has never seen. A quarter of the maximum keeps the
   lung's middle ~2/3 on an ordinary chest CT.
2. **Slice classification** (:class:`ScanClassifier`): the used slices, preprocessed like the single-slice
   bundle (resize, pad, crop, normalise), in batches through the network under autocast (bf16 on CPUs with
   AMX/AVX512-BF16 and on GPUs, where it is faster; ``amp="auto"``).
3. **Aggregation** (:func:`aggregate_slice_probabilities`): the scan's probability is the mean of the top
   ``top_fraction`` (default 25 %, at least one) of the slice probabilities. Why: COVID-19 findings (ground
   glass, consolidation) are often patchy and occupy a minority of the slices (peripheral, lower lobes), so the
   plain mean dilutes them by the many clear slices, while the maximum rests on one slice and follows any single
   false positive. The interval is a 95 % percentile bootstrap over the used slices (slices resampled with
   replacement, the same top-k rule on each resample): it says how much the answer rests on particular
   slices. Neighbouring slices are correlated, so it is a lower bound on the uncertainty, and it is not a
   calibration of the network.

The ``n_top`` slices with the highest probability come with Grad-CAM heat maps (:func:`~mstl_monai.visualize.grad_cam`)
on the slice's own grid. Finding the scans among the inputs and writing ``scans.csv``/``slices.csv``:
:mod:`mstl_monai.engines.scan_inference`.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, InvertibleTransform

from .inferers import AutocastInferer

__all__ = [
    "ScanClassifier",
    "aggregate_slice_probabilities",
    "autocast_helps",
    "load_classifier_weights",
    "lung_fractions",
    "select_lung_slices",
]

logger = logging.getLogger(__name__)

@functools.lru_cache(maxsize=None)
def _cpu_has_bf16() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def autocast_helps(device: str | torch.device) -> bool:
    """Whether bf16 autocast is expected to speed up inference on ``device``: CUDA devices with bf16 support, CPUs
    with AMX or AVX512-BF16 instructions (elsewhere bf16 matmuls are emulated and slower than float32)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return _cpu_has_bf16()
    return False


def load_classifier_weights(network: torch.nn.Module, ckpt_path: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a classifier checkpoint (the bundle's ``models/model.pt`` or any file
    :func:`~mstl_monai.networks.weights.extract_state_dict` reads) strictly into ``network``; returns it in eval mode.

    Raises:
        FileNotFoundError: ``ckpt_path`` does not exist.
        ValueError: the weights do not fit the network (the message names the file).
    """
    from mstl_monai.networks.weights import extract_state_dict, read_checkpoint

    if not os.path.isfile(str(ckpt_path)):
        raise FileNotFoundError(f"model checkpoint (ckpt_path) {str(ckpt_path)!r} does not exist.")
    state = extract_state_dict(read_checkpoint(ckpt_path), str(ckpt_path))
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(
            f"checkpoint {str(ckpt_path)!r} does not fit the configured network (backbone/n_attn/num_classes "
            f"settings): {str(e).splitlines()[0]}"
        ) from e
    return network.to(device).eval()


# ---------------------------------------------------------------------------------------------------------------
# slice selection
# ---------------------------------------------------------------------------------------------------------------
def lung_fractions(stack: torch.Tensor, locate_size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Lung area per slice of a (N, 1, H, W) stack in [0, 1], from the lobe Generator's lung locator.

    Returns:
        ``(fractions, found)``: the share of each slice's pixels labelled lung by the quantiser (at
        ``locate_size`` px), and whether the locator found a lung box in the slice (``False``: it fell back to
        the whole image, and the fraction is set to 0).
    """
    from mstl_monai.transforms.lobe import LUNG, LungLobeGenerator
    from mstl_monai.transforms.lobe.functional import cpu_single_thread

    locator = LungLobeGenerator(locate_size=locate_size)
    t = torch.as_tensor(stack)
    fractions = np.zeros(t.shape[0], dtype=np.float64)
    found = np.zeros(t.shape[0], dtype=bool)
    with cpu_single_thread(t.device.type == "cpu"):
        for i in range(t.shape[0]):
            _, fallback, info = locator.locate(t[i])
            found[i] = not fallback
            fractions[i] = float((info["labels"] == LUNG).float().mean()) if not fallback else 0.0
    return fractions, found


def select_lung_slices(
    fractions: np.ndarray, found: np.ndarray | None = None, min_lung_share: float = 0.25, min_lung_fraction: float = 0.01
) -> np.ndarray:
    """The slices to classify: lung found, lung fraction >= ``min_lung_share`` x the scan's largest and
    >= ``min_lung_fraction`` (see the module docstring for why). Returns a bool mask (all ``False``: no lung)."""
    if not 0.0 <= min_lung_share <= 1.0:
        raise ValueError(f"min_lung_share must be in [0, 1], got {min_lung_share}.")
    f = np.asarray(fractions, dtype=float)
    ok = np.ones_like(f, dtype=bool) if found is None else np.asarray(found, dtype=bool)
    if f.size == 0 or not ok.any():
        return np.zeros_like(f, dtype=bool)
    top = float(f[ok].max())
    return ok & (f >= min_lung_share * top) & (f >= min_lung_fraction)


# ---------------------------------------------------------------------------------------------------------------
# aggregation
# ---------------------------------------------------------------------------------------------------------------
def _top_k_mean(p: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` largest values along the last axis."""
    return np.sort(p, axis=-1)[..., -k:].mean(axis=-1)


def aggregate_slice_probabilities(
    probs: Sequence[float] | np.ndarray,
    top_fraction: float = 0.25,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """One scan probability from slice probabilities: the mean of the top ``top_fraction`` (k = ceil(fraction x n),
    at least 1; 1.0 gives the plain mean) with a percentile-bootstrap interval over the slices.

    Returns:
        ``{"probability", "ci_low", "ci_high", "k", "n", "aggregation"}``.

    Raises:
        ValueError: no probabilities, or ``top_fraction`` outside (0, 1].
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("aggregate_slice_probabilities needs at least one slice probability.")
    if not 0.0 < top_fraction <= 1.0:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}.")
    n = p.size
    k = max(1, math.ceil(top_fraction * n))
    prob = float(_top_k_mean(p, k))
    lo = hi = prob
    if n > 1 and n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        boot = _top_k_mean(p[rng.integers(0, n, size=(int(n_bootstrap), n))], k)
        alpha = (1.0 - confidence) / 2.0
        lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
    return {
        "probability": prob,
        "ci_low": min(lo, prob),
        "ci_high": max(hi, prob),
        "k": k,
        "n": n,
        "aggregation": f"top{k}/{n}-mean" if k < n else f"mean/{n}",
    }


# ---------------------------------------------------------------------------------------------------------------
# the classifier
# ---------------------------------------------------------------------------------------------------------------
class ScanClassifier:
    """Classify a whole scan: lung-slice selection, batched slice classification, top-k aggregation, heat maps.

    Args:
        network: the slice classifier (logits ``(B, num_classes)``), weights loaded.
        preprocessing: array transform(s) taking one (1, H, W) slice in [0, 1] to the network input (e.g. the
            single-slice bundle's resize / pad / crop / normalise); invertible spatial steps are undone for the
            heat maps.
        device: where the network runs.
        batch_size: slices per forward pass.
        amp: autocast (``"auto"``: bf16 where :func:`autocast_helps`; ``True``/``False``).
        amp_dtype: ``"bf16"`` or ``"fp16"``.
        positive_class: the class whose probability is aggregated (COVID = 1).
        min_lung_share: see :func:`select_lung_slices`.
        min_lung_fraction: see :func:`select_lung_slices`.
        top_fraction: see :func:`aggregate_slice_probabilities`.
        n_bootstrap: bootstrap resamples for the interval.
        n_top: how many top slices get a heat map (0: none).
        seed: bootstrap seed.

    .. code-block:: python

        result = ScanClassifier(net, preprocessing)(LoadCTSeries()("series_folder"))
        result["probability"], result["ci_low"], result["ci_high"], result["top_slices"][0]["heatmap"].shape
    """

    def __init__(
        self,
        network: torch.nn.Module,
        preprocessing: Callable | Sequence[Callable] | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        amp: bool | str = "auto",
        amp_dtype: str | torch.dtype = "bf16",
        positive_class: int = 1,
        min_lung_share: float = 0.25,
        min_lung_fraction: float = 0.01,
        top_fraction: float = 0.25,
        n_bootstrap: int = 1000,
        n_top: int = 3,
        seed: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.network = network
        if preprocessing is None:
            preprocessing = []
        self.preprocessing = preprocessing if isinstance(preprocessing, Compose) else Compose(
            list(preprocessing) if isinstance(preprocessing, (list, tuple)) else [preprocessing]
        )
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        use_amp = autocast_helps(self.device) if str(amp).lower() == "auto" else bool(amp)
        self.inferer = AutocastInferer(enabled=use_amp, dtype=amp_dtype)
        self.positive_class = int(positive_class)
        self.min_lung_share = float(min_lung_share)
        self.min_lung_fraction = float(min_lung_fraction)
        self.top_fraction = float(top_fraction)
        self.n_bootstrap = int(n_bootstrap)
        self.n_top = int(n_top)
        self.seed = int(seed)

    def _prepare(self, img: torch.Tensor) -> torch.Tensor:
        out = self.preprocessing(img)
        return torch.as_tensor(out).float()

    @torch.no_grad()
    def slice_probabilities(self, stack: torch.Tensor, indices: Sequence[int]) -> np.ndarray:
        """Probability of ``positive_class`` for the slices ``indices`` of a (N, 1, H, W) stack."""
        self.network.eval()
        plain = stack.as_tensor() if isinstance(stack, MetaTensor) else torch.as_tensor(stack)  # no metadata tracking
        out = []
        for start in range(0, len(indices), self.batch_size):
            batch = torch.stack([self._prepare(plain[i]) for i in indices[start : start + self.batch_size]])
            logits = self.inferer(batch.to(self.device), self.network)
            out.append(torch.softmax(logits.float(), dim=1)[:, self.positive_class].cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)

    def heatmaps(self, stack: torch.Tensor, indices: Sequence[int]) -> list[np.ndarray]:
        """Grad-CAM maps of ``positive_class`` for the slices ``indices``, each (H, W) in [0, 1] on the slice's grid."""
        from mstl_monai.visualize import grad_cam

        if not indices:
            return []
        prepared = []
        for i in indices:
            s = stack[i]
            s = s if isinstance(s, MetaTensor) else MetaTensor(s)
            prepared.append(self.preprocessing(MetaTensor(s.as_tensor().clone(), meta=dict(s.meta))))
        x = torch.stack([torch.as_tensor(p).float() for p in prepared]).to(self.device)
        heat = grad_cam(self.network, x, class_idx=self.positive_class).cpu()
        maps = []
        invertible = [t for t in self.preprocessing.flatten().transforms if isinstance(t, InvertibleTransform)]
        for p, h in zip(prepared, heat):
            m = h
            if isinstance(p, MetaTensor) and invertible:
                m = MetaTensor(h, meta=dict(p.meta), applied_operations=list(p.applied_operations))
                for t in reversed(invertible):
                    m = t.inverse(m)
            maps.append(torch.as_tensor(m).float()[0].clamp(0, 1).numpy())
        return maps

    def __call__(self, stack: torch.Tensor, name: str | None = None) -> dict[str, Any]:
        """Classify a (N, 1, H, W) stack (e.g. from :class:`~mstl_monai.transforms.LoadCTSeries`).

        Returns:
            a dict with ``probability``, ``ci_low``, ``ci_high``, ``k``, ``aggregation``, ``n_slices``,
            ``slices_used``, ``slices_skipped``, ``slices`` (one dict per slice: ``slice``, ``z_mm``, ``source``,
            ``lung_fraction``, ``used``, ``probability``) and ``top_slices`` (the ``n_top`` most positive used
            slices, each with its ``heatmap`` (H, W) and the windowed ``image`` (H, W)).

        Raises:
            ValueError: the stack is not (N, 1, H, W), or no slice shows lung (the message names the scan and
                its value range, e.g. a constant volume).
        """
        if not isinstance(stack, torch.Tensor) or stack.ndim != 4 or stack.shape[1] != 1:
            raise ValueError(f"ScanClassifier expects a (N, 1, H, W) stack of slices, got {getattr(stack, 'shape', type(stack))}.")
        meta = dict(getattr(stack, "meta", {}) or {})
        name = name or str(meta.get("filename_or_obj", "<scan>"))
        n = int(stack.shape[0])
        positions = list(meta.get("slice_positions", range(n)))
        sources = list(meta.get("slice_sources", [f"{name}#{i}" for i in range(n)]))
        fractions, found = lung_fractions(stack.as_tensor() if isinstance(stack, MetaTensor) else stack)
        used = select_lung_slices(fractions, found, self.min_lung_share, self.min_lung_fraction)
        if not used.any():
            lo, hi = float(stack.min()), float(stack.max())
            what = "a constant volume" if lo == hi else f"lung-window values {lo:.3f}..{hi:.3f}"
            hu = meta.get("hu_range")
            hu_txt = f", HU {hu[0]:.0f}..{hu[1]:.0f}" if hu is not None else ""
            raise ValueError(f"CT scan {name!r}: no slice shows lung ({n} slices, {what}{hu_txt}): nothing to classify.")
        idx = np.nonzero(used)[0].tolist()
        probs = self.slice_probabilities(stack, idx)
        agg = aggregate_slice_probabilities(probs, self.top_fraction, self.n_bootstrap, seed=self.seed)
        slice_prob = dict(zip(idx, probs.tolist()))
        rows = [
            {
                "slice": i,
                "z_mm": float(positions[i]),
                "source": str(sources[i]),
                "lung_fraction": round(float(fractions[i]), 5),
                "used": bool(used[i]),
                "probability": slice_prob.get(i),
            }
            for i in range(n)
        ]
        top = sorted(idx, key=lambda i: -slice_prob[i])[: max(self.n_top, 0)]
        maps = self.heatmaps(stack, top) if top else []
        top_slices = [
            {
                "slice": i,
                "z_mm": float(positions[i]),
                "source": str(sources[i]),
                "probability": slice_prob[i],
                "heatmap": m,
                "image": torch.as_tensor(stack[i]).float()[0].cpu().numpy(),
            }
            for i, m in zip(top, maps)
        ]
        return dict(
            agg,
            scan=name,
            source_format=meta.get("source_format"),
            n_slices=n,
            slices_used=int(used.sum()),
            slices_skipped=int(n - used.sum()),
            gaps=list(meta.get("gaps", [])),
            slices=rows,
            top_slices=top_slices,
        )
