# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Table cells: metrics with their 95% CIs in %, the names of the grid's variants, stages and SSTL-M methods."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from mstl_monai.pipeline.summary import metric_cell

__all__ = [
    "VARIANT",
    "STAGE_NAMES",
    "METHOD_NAMES",
    "NOT_RUN",
    "METRIC_KEYS",
    "variant_name",
    "stage_label",
    "metric_cell",
    "metric_value",
    "top1_cell",
    "paper_cell",
    "markdown_table",
]

VARIANT = {0: "baseline", 1: "+1 ATTN", 5: "+5 ATTNs"}
STAGE_NAMES = {"stl_n": "STL-N", "stl_m": "STL-M", "sstl_m": "SSTL-M"}
METHOD_NAMES = {"moco": "MoCo", "simclr": "SimCLR", "ours": "ours"}
#: a cell with no run (:func:`metric_cell`'s default)
NOT_RUN = "not run"
#: the metrics of the result tables: acc, F1, AUC
METRIC_KEYS = ("accuracy", "f1", "auc")


def variant_name(n_attn: int) -> str:
    """``"baseline"``, ``"+1 ATTN"``, ``"+5 ATTNs"`` (else the number)."""
    return VARIANT.get(n_attn, str(n_attn))


def stage_label(stages: Iterable[str], method: str | None = None) -> str:
    """``"STL-M → SSTL-M (ours)"``; ``"none"`` for no transfer stage."""
    label = " → ".join(STAGE_NAMES[x] for x in stages) or "none"
    if method:
        label += f" ({METHOD_NAMES.get(method, method)})"
    return label


def metric_value(m: dict | None, key: str) -> float | None:
    """``m[key]["value"]`` in %, ``None`` when there is no such value."""
    if m is None or not isinstance(m.get(key), dict) or m[key].get("value") is None:
        return None
    return 100 * m[key]["value"]


def top1_cell(d: dict | None) -> str:
    """The top-1 of an ``stl_n_*.json`` file with its CI, in %."""
    if not d:
        return NOT_RUN
    t = d["top1"]
    epochs = f" ({int(d['epochs'])} epochs)" if d.get("epochs") else ""
    return f"{100 * t['value']:.1f} [{100 * t['low']:.1f}, {100 * t['high']:.1f}]{epochs}"


def paper_cell(t: Sequence[float] | None) -> str:
    """The paper's ``acc / F1 / AUC``; ``"-"`` without them."""
    return " / ".join(f"{v:.1f}" for v in t) if t else "-"


def markdown_table(hdr: Sequence[str], lines: Iterable[Sequence]) -> list[str]:
    """The Markdown lines of a table: the header, its rule and one line per row."""
    head = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    return head + ["| " + " | ".join(map(str, line)) + " |" for line in lines]
