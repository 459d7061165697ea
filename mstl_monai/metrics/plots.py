# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""ROC curve figure (PNG, matplotlib's Agg canvas, no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from monai.config import NdarrayOrTensor, PathLike

from mstl_monai.metrics.classification import binary_roc_auc, roc_curve_points
from mstl_monai.utils.io import atomic_write

__all__ = ["save_roc_curve"]


def save_roc_curve(
    curves: Mapping[str, tuple[NdarrayOrTensor, NdarrayOrTensor]],
    path: PathLike,
    title: str | None = None,
    dpi: int = 150,
) -> Path:
    """Draw one ROC curve per entry of ``curves`` on one plot and write it as a PNG (atomically).

    Uses matplotlib's object API with an Agg canvas, so pyplot's global state and backend are untouched.

    .. code-block:: python

        save_roc_curve({"R-50 +5 ATTNs": (y_test, p_test), "no transfer": (y_test, p_scratch)}, "roc.png")

    Args:
        curves: legend label -> ``(y_true, prob_pos)``; the legend shows each curve's AUC.
        path: the PNG file.
        title: figure title.
        dpi: resolution.

    Returns:
        the path written.

    Raises:
        ValueError: when ``curves`` is empty, or a curve's labels hold one class only (message names the curve).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not curves:
        raise ValueError("save_roc_curve needs at least one curve, got an empty mapping.")
    fig = Figure(figsize=(5.0, 5.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for label, pair in curves.items():
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"curve {label!r} must be a (y_true, prob_pos) pair, got {type(pair).__name__}.")
        y_true, prob_pos = pair
        try:
            fpr, tpr, _ = roc_curve_points(y_true, prob_pos)
            auc = binary_roc_auc(y_true, prob_pos)
        except ValueError as e:
            raise ValueError(f"curve {label!r}: {e}") from e
        ax.plot(fpr, tpr, lw=1.8, label=f"{label} (AUC = {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=1.0, color="grey", label="chance")
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_aspect("equal")
    ax.set_xlabel("1 - specificity (false positive rate)")
    ax.set_ylabel("sensitivity (true positive rate)")
    if title:
        ax.set_title(title)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=dpi)
    return Path(path)
