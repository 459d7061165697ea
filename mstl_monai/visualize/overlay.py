# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Heatmap overlays on a CT slice and a Fig. 4-style explanation figure (slice | Grad-CAM | attention)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from monai.config import NdarrayOrTensor, PathLike

from mstl_monai.utils.io import atomic_write
from mstl_monai.utils.type_conversion import to_numpy
from mstl_monai.visualize.localization import as_2d

__all__ = ["overlay", "save_explanation_figure"]

_RANGE_TOL = 1e-4


def _unit_range(a: np.ndarray, name: str) -> np.ndarray:
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds non-finite values (nan or inf).")
    if a.size and (a.min() < -_RANGE_TOL or a.max() > 1 + _RANGE_TOL):
        raise ValueError(f"{name} must be scaled to [0, 1], got values in [{a.min():.4g}, {a.max():.4g}].")
    return np.clip(a, 0.0, 1.0)


def _image_rgb(image: NdarrayOrTensor) -> np.ndarray:
    """``(H, W, 3)`` float in [0, 1] from a grey ``(H, W)``/``(1, H, W)`` or channel-first RGB ``(3, H, W)`` image."""
    a = to_numpy(image, "image").astype(np.float64)
    while a.ndim > 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[0] == 3:
        a = np.moveaxis(a, 0, -1)
    elif a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] != 3:
        raise ValueError(f"image must be (H, W), (1, H, W) or (3, H, W), got {tuple(to_numpy(image, 'image').shape)}.")
    return _unit_range(a, "image")


def overlay(
    image: NdarrayOrTensor, heatmap: NdarrayOrTensor, alpha: float = 0.4, cmap: str = "jet"
) -> np.ndarray:
    """Blend a colour-mapped heatmap onto an image: ``(1 - alpha) * image + alpha * cmap(heatmap)``.

    Both must be in the same orientation (mind MONAI's 2D readers, which give ``(W, H)`` unless
    ``reverse_indexing=True``).

    Args:
        image: ``(H, W)`` grey slice in [0, 1] (or ``(1, H, W)``, or channel-first RGB ``(3, H, W)``).
        heatmap: ``(H, W)`` map in [0, 1] (leading singleton dims allowed, e.g. one item of :func:`grad_cam`).
        alpha: heatmap weight in [0, 1].
        cmap: a matplotlib colormap name.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.

    Raises:
        ValueError: for shape mismatch, values outside [0, 1], an invalid ``alpha`` or an unknown ``cmap``.
    """
    import matplotlib

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
    img = _image_rgb(image)
    hm = _unit_range(as_2d(heatmap), "heatmap")
    if hm.shape != img.shape[:2]:
        raise ValueError(f"heatmap shape {hm.shape} differs from image shape {img.shape[:2]}.")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as e:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}.") from e
    colour = colormap(hm)[..., :3]
    out = (1.0 - alpha) * img + alpha * colour
    return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)


def save_explanation_figure(
    path: PathLike,
    image: NdarrayOrTensor,
    gradcam: NdarrayOrTensor | None,
    attention: NdarrayOrTensor | None = None,
    title: str | None = None,
    alpha: float = 0.4,
    cmap: str = "jet",
    dpi: int = 150,
    attention_label: str = "attention (ATTN)",
) -> Path:
    """Write a PNG like the paper's Fig. 4: CT slice | Grad-CAM overlay | attention overlay (if given).

    .. code-block:: python

        save_explanation_figure("fig4.png", img[0, 0], grad_cam(net, img)[0, 0], attention_heatmap(net, img)[0, 0],
                                title="COVID, p=0.97")

    Args:
        path: the PNG file (written atomically, parent folders created).
        image: ``(H, W)`` slice in [0, 1] (see :func:`overlay` for other accepted shapes).
        gradcam: ``(H, W)`` Grad-CAM map in [0, 1], or ``None`` (no Grad-CAM panel, e.g. for a ViT).
        attention: ``(H, W)`` attention map in [0, 1], or ``None`` for a two-panel figure.
        title: figure title (e.g. the true label and predicted probability).
        alpha: heatmap weight of the overlays.
        cmap: matplotlib colormap of the heatmaps.
        dpi: resolution.
        attention_label: title of the attention panel (``"attention rollout"`` for a ViT).

    Returns:
        the path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = [("CT slice", (_image_rgb(image) * 255).round().astype(np.uint8))]
    if gradcam is not None:
        panels.append(("Grad-CAM", overlay(image, gradcam, alpha=alpha, cmap=cmap)))
    if attention is not None:
        panels.append((attention_label, overlay(image, attention, alpha=alpha, cmap=cmap)))
    fig = Figure(figsize=(3.2 * len(panels), 3.6 if title else 3.3))
    FigureCanvasAgg(fig)
    for i, (name, rgb) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(rgb, interpolation="nearest")
        ax.set_title(name, fontsize="medium")
        ax.set_axis_off()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return Path(path)
