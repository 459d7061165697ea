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
   calibration of the network. With fewer than 3 used slices, ``n_bootstrap`` 0 or no spread to resample there
   is no interval (empty, and the scan's message says why), never one of zero width. The options are checked
   when the classifier is made (:func:`~mstl_monai.inferers.scan_aggregate.check_scan_options`, beside the
   selection and aggregation rules).

The ``n_top`` slices with the highest probability come with Grad-CAM heat maps (:func:`~mstl_monai.visualize.grad_cam`)
on the slice's own grid. Finding the scans among the inputs and writing ``scans.csv``/``slices.csv``:
:mod:`mstl_monai.inferers.scan_inference`.
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

from mstl_monai.metrics.calibration import calibrated_softmax

from .inferer import AutocastInferer, FlipTTAInferer
from .scan_aggregate import aggregate_slice_probabilities, check_scan_options, select_lung_slices

__all__ = [
    "ScanClassifier",
    "aggregate_slice_probabilities",
    "autocast_helps",
    "check_scan_options",
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
    """Load a classifier checkpoint (the bundle's ``models/model.pt`` or a training checkpoint) strictly into
    ``network`` (:func:`~mstl_monai.networks.checkpoint.load_weights`); returns it in eval mode.

    Raises:
        FileNotFoundError: ``ckpt_path`` does not exist.
        ValueError: the weights do not fit the network (the message names the file).
    """
    from mstl_monai.networks.checkpoint import load_weights

    if not os.path.isfile(str(ckpt_path)):
        raise FileNotFoundError(f"model checkpoint (ckpt_path) {str(ckpt_path)!r} does not exist.")
    load_weights(network, ckpt_path)
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
    from mstl_monai.transforms.lobe import LungLobeGenerator
    from mstl_monai.transforms.lobe.functional import cpu_single_thread

    locator = LungLobeGenerator(locate_size=locate_size)
    t = torch.as_tensor(stack)
    fractions = np.zeros(t.shape[0], dtype=np.float64)
    found = np.zeros(t.shape[0], dtype=bool)
    with cpu_single_thread(t.device.type == "cpu"):
        for i in range(t.shape[0]):
            fraction, fallback = locator.lung_fraction(t[i])
            found[i] = not fallback
            fractions[i] = fraction if not fallback else 0.0
    return fractions, found


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
        n_bootstrap: bootstrap resamples for the interval (0: no interval).
        n_top: how many top slices get a heat map (0: none).
        seed: bootstrap seed.
        temperature: the checkpoint's softmax temperature (fitted on val; 1.0: none): slice probabilities are
            ``softmax(logits / temperature)``, the calibrated probabilities its thresholds refer to.
        tta: flip test-time augmentation as the checkpoint was selected (its settings file's ``tta``): each slice's
            probabilities are averaged with its left-right mirror's (:class:`~mstl_monai.inferers.FlipTTAInferer`),
            so a scan's slices get the probabilities ``inference.yaml`` gives the same slices.

    Raises:
        ValueError: an option of the wrong type or out of range (:func:`check_scan_options`), here, before any
            scan is read: one line naming the option and its value.

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
        temperature: float = 1.0,
        tta: bool = False,
    ) -> None:
        if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not 0 < float(temperature) < float("inf"):
            raise ValueError(f"temperature must be a number > 0 (the checkpoint's, fitted on val), got {temperature!r}.")
        self.temperature = float(temperature)
        opts = dict(min_lung_share=min_lung_share, min_lung_fraction=min_lung_fraction, top_fraction=top_fraction)
        opts = check_scan_options(
            **opts, n_bootstrap=n_bootstrap, n_top=n_top, batch_size=batch_size, positive_class=positive_class
        )
        self.network = network
        if preprocessing is None:
            preprocessing = []
        self.preprocessing = preprocessing if isinstance(preprocessing, Compose) else Compose(
            list(preprocessing) if isinstance(preprocessing, (list, tuple)) else [preprocessing]
        )
        self.device = torch.device(device)
        self.batch_size = opts["batch_size"]
        use_amp = autocast_helps(self.device) if isinstance(amp, str) and amp.lower() == "auto" else amp
        self.inferer = FlipTTAInferer(AutocastInferer(enabled=use_amp, dtype=amp_dtype), enabled=tta)
        self.positive_class = opts["positive_class"]
        self.min_lung_share = opts["min_lung_share"]
        self.min_lung_fraction = opts["min_lung_fraction"]
        self.top_fraction = opts["top_fraction"]
        self.n_bootstrap = opts["n_bootstrap"]
        self.n_top = opts["n_top"]
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
            out.append(calibrated_softmax(logits, self.temperature, dim=1)[:, self.positive_class].cpu())
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
            a dict with ``probability``, ``ci_low``, ``ci_high`` (None when the interval is not available),
            ``ci_note``, ``k``, ``aggregation``, ``n_slices``, ``slices_used``, ``slices_skipped``, ``gaps``,
            ``position_source``, ``notes`` (the loader's fallbacks and files left out, then ``ci_note``), ``slices``
            (one dict per slice: ``slice``, ``z_mm`` (None without positions), ``source``, ``lung_fraction``,
            ``used``, ``probability``) and ``top_slices`` (the ``n_top`` most positive used slices, each with its
            ``heatmap`` (H, W) and the windowed ``image`` (H, W)).

        Raises:
            ValueError: the stack is not (N, 1, H, W), or no slice shows lung (the message names the scan and
                its value range, e.g. a constant volume).
        """
        if not isinstance(stack, torch.Tensor) or stack.ndim != 4 or stack.shape[1] != 1:
            raise ValueError(f"ScanClassifier expects a (N, 1, H, W) stack of slices, got {getattr(stack, 'shape', type(stack))}.")
        meta = dict(getattr(stack, "meta", {}) or {})
        name = name or str(meta.get("filename_or_obj", "<scan>"))
        n = int(stack.shape[0])
        # mm along the slice normal; None where the scan has no positions (DICOM ordered by InstanceNumber)
        positions = [float(z) if math.isfinite(float(z)) else None for z in meta.get("slice_positions", range(n))]
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
                "z_mm": positions[i],
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
                "z_mm": positions[i],
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
            position_source=meta.get("position_source"),
            notes=[str(v) for v in meta.get("notes", [])] + ([agg["ci_note"]] if agg["ci_note"] else []),
            slices=rows,
            top_slices=top_slices,
        )
