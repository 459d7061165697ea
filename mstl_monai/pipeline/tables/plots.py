# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Figures of the result tables: the ROC curves of the chains, and LEEP over the transfer stages (Fig. 3)."""

from __future__ import annotations

import json
from pathlib import Path

from mstl_monai.metrics import save_roc_curve
from mstl_monai.metrics.io import read_predictions_csv
from mstl_monai.utils.io import atomic_write

from .cells import VARIANT
from .load import find_metrics, leep_network

__all__ = ["LEEP_STAGES", "save_roc", "save_leep_plot"]


def save_roc(rows: list[dict], results: str | Path) -> Path | None:
    """``<results>/roc.png``: one ROC curve per finished chain, from the predictions each chain saved (``None``
    when no chain saved them)."""
    results = Path(results)
    curves = {}
    for r in rows:
        f = results / r["chain"] / "predictions.csv"
        if f.is_file():
            _, y, probs, _ = read_predictions_csv(f)
            curves[r["chain"]] = (y, probs[:, 1])
    if not curves:
        return None
    return save_roc_curve(curves, results / "roc.png", title="COVID19-CT test")


LEEP_STAGES = (("none", "none"), ("stl_n", "STL-N"), ("stl_m", "STL-M"))  # leep.json key, x tick


def _leep_nets(data: dict) -> list[tuple[str, int, dict]]:
    """``leep.json`` (``{"<backbone>_attn<n>": {"none": .., "stl_n": .., "stl_m": ..}}``) as sorted (bb, n, row)."""
    return sorted(((*leep_network(key), v) for key, v in data.items()), key=lambda t: (t[0], t[1]))


def save_leep_plot(rows: list[dict], results: str | Path) -> Path | None:
    """Fig. 3: LEEP per network over the transfer stages, and LEEP vs the test accuracy it should predict.

    Left: one line per network over none -> STL-N -> STL-M (a stage missing from ``leep.json`` is skipped and the
    line bridges it dotted; a tick no network has reads "n/a"). Right: LEEP of the STL-M source model vs the test
    accuracy (95% CI bars) of that network's STL-M -> finetune chain (filled), and of the random-init model vs its
    no-transfer chain (hollow), joined per network. Returns ``None`` when there is no ``leep.json``.
    """
    results = Path(results)
    f = results / "leep.json"
    if not f.is_file():
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    nets = _leep_nets(json.loads(f.read_text()))
    fig = Figure(figsize=(10.5, 4.2))
    FigureCanvasAgg(fig)
    ax, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    colors = [f"C{i}" for i in range(10)]
    markers, styles = ["o", "s", "^", "D", "v"], ["-", "--", "-.", ":"]
    plotted = 0
    for i, (bb, n, v) in enumerate(nets):
        label, color = f"{bb} {VARIANT.get(n, f'+{n} ATTNs')}", colors[i % len(colors)]
        marker = markers[i % len(markers)]  # distinct markers and offsets: networks with equal LEEP stay visible
        pts = [(x, v[k]) for x, (k, _) in enumerate(LEEP_STAGES) if v.get(k) is not None]
        if not pts:
            continue
        dx = 0.04 * (i - (len(nets) - 1) / 2)
        ax.plot([x + dx for x, _ in pts], [y for _, y in pts], ls="none", marker=marker, color=color, label=label,
                mfc="none" if i % 2 else color)
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            ax.plot([x0 + dx, x1 + dx], [y0, y1], color=color, lw=1.4, ls=styles[i % len(styles)], alpha=0.8)
        plotted += 1
        # right panel: LEEP of the source model vs the accuracy of the chain that starts from it
        pair = []
        for key, stages, fill in (("none", (), False), ("stl_m", ("stl_m",), True)):
            m = find_metrics(rows, bb, n, stages)
            acc = m.get("accuracy") if m else None
            if v.get(key) is None or not isinstance(acc, dict) or acc.get("value") is None:
                continue
            y = 100 * acc["value"]
            err = [[y - 100 * acc.get("ci_low", acc["value"])], [100 * acc.get("ci_high", acc["value"]) - y]]
            ax2.errorbar([v[key]], [y], yerr=err, fmt=marker, color=color, mfc=color if fill else "white", capsize=3,
                         label=label if fill else None)
            pair.append((v[key], y))
            if fill:
                ax2.annotate(
                    label,
                    (v[key], y),
                    textcoords="offset points",
                    xytext=(6, 4 + 9 * i),
                    fontsize="x-small",
                    color=color,
                )
        if len(pair) == 2:
            ax2.plot([pair[0][0], pair[1][0]], [pair[0][1], pair[1][1]], color=color, lw=0.8, alpha=0.6)
    have = {k for _, _, v in nets for k, _ in LEEP_STAGES if v.get(k) is not None}
    ax.set_xticks(range(len(LEEP_STAGES)))
    ax.set_xticklabels([t if k in have else f"{t}\n(n/a)" for k, t in LEEP_STAGES])
    ax.set_xlim(-0.3, len(LEEP_STAGES) - 0.7)
    ax.set_xlabel("source model (transfer stages so far)")
    ax.set_ylabel("LEEP on COVID19-CT train")
    ax.set_title("LEEP per transfer stage (higher = more transferable)", fontsize="small")
    if plotted:
        ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    ax2.set_xlabel("LEEP of the source model")
    ax2.set_ylabel("test accuracy after finetuning (%, 95% CI)")
    ax2.margins(x=0.25, y=0.1)
    ax2.set_title("LEEP vs accuracy (filled: STL-M → finetune; hollow: no transfer)", fontsize="small")
    if not ax2.has_data():
        ax2.text(0.5, 0.5, "no STL-M → finetune chain results", ha="center", va="center", transform=ax2.transAxes)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    out = results / "leep.png"
    with atomic_write(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=150)
    return out
