# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The "Finetune settings" table: chains that change a finetune setting of a grid cell, beside that cell."""

from __future__ import annotations

from .cells import METRIC_KEYS, markdown_table, metric_cell, stage_label, variant_name
from .load import find_row
from .stats import PairedDifferences

__all__ = ["recipe_table"]


def _default_of(rows: list[dict], r: dict) -> dict | None:
    """The grid cell (default finetune settings) that ``r`` changes."""
    return find_row(rows, r["backbone"], r["n_attn"], r["stages"], r["method"], r.get("guard", 0.0))


def _per_epoch(r: dict) -> str:
    return f"{r['finetune_seconds'] / r['finetune_epochs']:.1f}" if r.get("finetune_seconds") else "-"


def _finetune_settings(r: dict) -> tuple:
    """A row's finetune settings without the natural-image weights it started from (no transfer has none)."""
    return tuple((k, v) for k, v in r["recipe"] if k != "stl_n_weights")


def recipe_table(rows: list[dict], diffs: PairedDifferences) -> tuple[str, list[list]]:
    """Chains that change a finetune setting (label fraction, input size, mixup, ...) beside the grid cell they
    change: test metrics, the paired difference to that cell, and the finetune's seconds per epoch (timing.json).

    Args:
        rows: :func:`~mstl_monai.pipeline.tables.load.load_results` rows (every seed).
        diffs: the Δ cells (their seeds and caches).

    Returns:
        The Markdown section and its CSV rows; ``("", [])`` when no chain changes a finetune setting.
    """
    changed = [r for r in rows if r.get("recipe")]
    if not changed:
        return "", []
    hdr = ["backbone", "variant", "stages", "finetune setting", "acc", "F1", "AUC", "ΔAUC vs default"]
    hdr += ["ΔAUC vs no transfer (same setting)", "s/epoch"]
    lines = []
    seed0 = [r for r in changed if r.get("seed", 0) == 0]
    for r in sorted(seed0, key=lambda r: (r["backbone"], r["n_attn"], r["stages"], str(r["recipe"]))):
        base = _default_of(rows, r)
        scratch = next(
            (
                o
                for o in seed0
                if o["backbone"] == r["backbone"]
                and o["n_attn"] == r["n_attn"]
                and not o["stages"]
                and _finetune_settings(o) == _finetune_settings(r)
                and o.get("guard", 0.0) == r.get("guard", 0.0)
            ),
            None,
        )
        setting = ", ".join(f"{k}={v}" for k, v in r["recipe"])
        line = [r["backbone"], variant_name(r["n_attn"]), stage_label(r["stages"], r["method"]), setting]
        gain = diffs.delta(r, scratch, "auc") if r["stages"] and scratch else "-"
        line += [metric_cell(r["metrics"], k) for k in METRIC_KEYS] + [diffs.delta(r, base, "auc"), gain, _per_epoch(r)]
        lines.append(line)
    for r in rows:  # the defaults' cost, for the s/epoch column's reference
        if not r.get("recipe") and r.get("finetune_seconds") and any(_default_of(rows, c) is r for c in changed):
            line = [r["backbone"], variant_name(r["n_attn"]), stage_label(r["stages"]), "(default)"]
            lines.append(line + [metric_cell(r["metrics"], k) for k in METRIC_KEYS] + ["0", "-", _per_epoch(r)])
    md = [
        "\n### Finetune settings: label fraction, input size, mixup, ... (COVID19-CT test, %, 95% CI)\n",
        "Each row changes one finetune setting of a grid cell; Δ = the row minus the cell with the default settings (or"
        " minus no transfer with the same setting), paired bootstrap 95% CI over the test images (‡: seed-averaged,"
        " when both have several seeds). Seed 0 rows; the seeds are in the seed table. s/epoch = the finetune's seconds"
        " per epoch (timing.json; machine load varies between runs).\n",
    ] + markdown_table(hdr, lines)
    return "\n".join(md) + "\n", [hdr] + lines
