# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The paper's result tables (Tables 1-6, the per-stage gains, checkpoint selection) from our chains, the paper's
numbers (Liu & Ji 2021, its result tables) beside them."""

from __future__ import annotations

import json
from pathlib import Path

from .cells import (
    METHOD_NAMES,
    METRIC_KEYS,
    NOT_RUN,
    STAGE_NAMES,
    markdown_table,
    metric_cell,
    paper_cell,
    top1_cell,
    variant_name,
)
from .load import find_metrics, find_row, leep_network
from .stats import PairedDifferences

__all__ = ["PAPER_T1", "PAPER_T2", "PAPER_T3", "PAPER_T5", "PAPER_T6", "grid_tables", "leep_table"]

# the paper's numbers (acc, F1, AUC in %), from its result tables
PAPER_T2 = {  # all three stages then finetune, and without transfer
    ("resnet50", 0): ((88.2, 88.7, 90.3), (83.7, 84.1, 84.6)),
    ("resnet50", 1): ((93.1, 92.9, 92.9), (84.9, 82.4, 85.7)),
    ("resnet50", 5): ((93.9, 94.7, 96.8), (84.7, 83.1, 86.9)),
    ("resnet101", 0): ((89.3, 88.8, 90.7), (83.8, 83.9, 86.2)),
    ("resnet101", 1): ((93.4, 93.2, 93.7), (85.4, 83.6, 86.1)),
    ("resnet101", 5): ((94.2, 95.3, 97.8), (86.1, 84.5, 87.6)),
}
PAPER_T3 = {  # SSTL-M method after STL-N + STL-M: moco, simclr, ours
    ("resnet50", 0): ((87.3, 88.6, 90.0), (87.7, 87.9, 90.1), (88.2, 88.7, 90.3)),
    ("resnet50", 1): ((92.5, 92.3, 92.6), (92.6, 91.7, 92.1), (93.1, 92.9, 92.9)),
    ("resnet50", 5): ((93.6, 94.3, 96.1), (93.5, 94.0, 95.9), (93.9, 94.7, 96.8)),
    ("resnet101", 0): ((88.6, 88.3, 90.6), (89.1, 88.3, 90.5), (89.3, 88.8, 90.7)),
    ("resnet101", 1): ((92.5, 93.0, 93.7), (92.6, 92.7, 93.0), (93.4, 93.2, 93.7)),
    ("resnet101", 5): ((93.7, 95.0, 96.6), (93.1, 94.5, 96.6), (94.2, 95.3, 97.8)),
}
PAPER_T5 = {  # one supervised stage only (acc): STL-N, STL-M
    ("resnet50", 0): (85.4, 86.0), ("resnet50", 1): (88.4, 89.2), ("resnet50", 5): (89.2, 88.7),
    ("resnet101", 0): (85.8, 86.1), ("resnet101", 1): (88.3, 89.5), ("resnet101", 5): (89.4, 90.0),
}
PAPER_T6 = {  # LEEP: none -> STL-N -> +STL-M
    ("resnet50", 0): (-0.918, -0.908, -0.894), ("resnet50", 1): (-0.917, -0.902, -0.882),
    ("resnet50", 5): (-0.915, -0.897, -0.875), ("resnet101", 0): (-0.913, -0.909, -0.899),
    ("resnet101", 1): (-0.904, -0.887, -0.872), ("resnet101", 5): (-0.907, -0.880, -0.865),
}
PAPER_T1 = {"resnet50": (77.2, 78.3), "resnet101": (78.3, 79.5)}  # ImageNet top-1 (%): baseline, +5 ATTNs

FULL4, FULL3 = ("stl_n", "stl_m", "sstl_m"), ("stl_m", "sstl_m")
#: per-stage gains: (stage added, chain without it, chain with it, SSTL-M method of the chain without, with)
STAGE_STEPS = (
    ("STL-N", (), ("stl_n",), None, None),
    ("STL-M after STL-N", ("stl_n",), ("stl_n", "stl_m"), None, None),
    ("SSTL-M (ours) after STL-N → STL-M", ("stl_n", "stl_m"), ("stl_n", "stl_m", "sstl_m"), None, "ours"),
    ("STL-M", (), ("stl_m",), None, None),
    ("SSTL-M (ours) after STL-M", ("stl_m",), ("stl_m", "sstl_m"), None, "ours"),
    ("STL-N before STL-M → SSTL-M (ours)", ("stl_m", "sstl_m"), ("stl_n", "stl_m", "sstl_m"), "ours", "ours"),
)


def _paper_row(table: dict, bb: str, n: int):
    """The paper's row of this backbone, else its R-50 row of the same variant."""
    return table.get((bb, n)) or table.get(("resnet50", n))


def _table1(rows: list[dict], top1: dict, md: list[str]) -> list[list]:
    md.append("### Table 1: top-1 of the STL-N source model (%, 95% bootstrap CI)\n")
    md.append(
        "Ours: Tiny ImageNet (202 ImageNet classes, 64 px, 100 train images a class; chance 0.5 %), top-1 on its 2,020"
        " held-out val images (`scripts/stl_n_top1.py`); the paper: ImageNet (1000 classes, 224 px). Not comparable in"
        " scale: the column says whether the source stage learnt natural images at all.\n"
    )
    variants = sorted({n for (_, n) in top1} | {0, 5})
    hdr = ["backbone"] + [f"ours {variant_name(n)}" for n in variants] + ["paper baseline", "paper +5 ATTNs"]
    lines = []
    for bb in sorted({r["backbone"] for r in rows} | set(PAPER_T1) | {b for (b, _) in top1}):
        paper = PAPER_T1.get(bb)
        line = [bb] + [top1_cell(top1.get((bb, n))) for n in variants]
        lines.append(line + ([f"{paper[0]:.1f}", f"{paper[1]:.1f}"] if paper else ["-", "-"]))
    md += markdown_table(hdr, lines)
    md.append("")
    return [hdr] + lines


def _table2(rows: list[dict], nets: list, diffs: PairedDifferences, md: list[str]) -> list[list]:
    md.append("### Table 2/4: all stages then finetune vs no transfer (COVID19-CT test, %, 95% bootstrap CI)\n")
    md.append(
        "Chains: STL-N → STL-M → SSTL-M (ours) → finetune (the paper's), and STL-M → SSTL-M (ours) → finetune (without"
        " STL-N). Δ = with − without, in points, with a paired bootstrap 95% CI over the test images (both models"
        " scored on the same resamples).\n"
    )
    hdr = ["backbone", "variant", "stages", "acc", "F1", "AUC", "acc w/o", "F1 w/o", "AUC w/o", "Δacc", "ΔF1", "ΔAUC"]
    hdr += ["paper (with)*", "paper (w/o)*"]
    lines = []
    for bb, n in nets:
        rwo = find_row(rows, bb, n, ())
        wo = rwo["metrics"] if rwo else None
        paper = _paper_row(PAPER_T2, bb, n)
        for full in (FULL4, FULL3):
            rw = find_row(rows, bb, n, full, "ours")
            if rw is None and full == FULL4:
                continue
            w = rw["metrics"] if rw else None
            line = [bb, variant_name(n), " → ".join(STAGE_NAMES[x] for x in full)]
            line += [metric_cell(w, k) for k in METRIC_KEYS] + [metric_cell(wo, k) for k in METRIC_KEYS]
            line += [diffs.delta(rw, rwo, k) for k in METRIC_KEYS]
            with_paper = paper and full == FULL4
            line += [paper_cell(paper[0]) if with_paper else "-", paper_cell(paper[1]) if with_paper else "-"]
            lines.append(line)
    md += markdown_table(hdr, lines)
    diffs.seed_note(md)
    return [hdr] + lines


def _stage_gains(rows: list[dict], nets: list, diffs: PairedDifferences, md: list[str]) -> list[list]:
    """Pp - Pn per stage (the paper's question: does each stage help, and more with ATTNs?)."""
    lines = []
    for bb, n in nets:
        for label, before, after, meth_b, meth in STAGE_STEPS:
            ra, rb = find_row(rows, bb, n, after, meth), find_row(rows, bb, n, before, meth_b)
            if ra is None or rb is None:
                continue
            lines.append([bb, variant_name(n), label] + [diffs.delta(ra, rb, k) for k in METRIC_KEYS])
    if not lines:
        return []
    md.append("\n### Per-stage gain Pp − Pn (COVID19-CT test, points, paired bootstrap 95% CI)\n")
    md.append(
        "Pp − Pn = the chain with the stage minus the same chain without it, both finetuned and scored on the same"
        " test images.\n"
    )
    hdr = ["backbone", "variant", "stage added", "Δacc", "ΔF1", "ΔAUC"]
    md += markdown_table(hdr, lines)
    diffs.seed_note(md)
    return [hdr] + lines


def _table3(rows: list[dict], nets: list, diffs: PairedDifferences, md: list[str]) -> list[list]:
    md.append("\n### Table 3: SSTL-M method after STL-M, then finetune (%, 95% bootstrap CI)\n")
    md.append("ΔAUC vs ours = ours − this method, paired bootstrap 95% CI.\n")
    hdr = ["backbone", "variant", "SSTL-M", "acc", "F1", "AUC", "ΔAUC vs ours", "paper acc / F1 / AUC*"]
    lines = []
    for bb, n in nets:
        paper = _paper_row(PAPER_T3, bb, n)
        ours = find_row(rows, bb, n, FULL3, "ours")
        for j, meth in enumerate(("moco", "simclr", "ours")):
            r = find_row(rows, bb, n, FULL3, meth)
            m = r["metrics"] if r else None
            vs = diffs.delta(ours, r, "auc") if meth != "ours" else "-"
            line = [bb, variant_name(n), METHOD_NAMES[meth]] + [metric_cell(m, k) for k in METRIC_KEYS]
            lines.append(line + [vs, paper_cell(paper[j]) if paper else "-"])
    md += markdown_table(hdr, lines)
    diffs.seed_note(md)
    return [hdr] + lines


def _table5(rows: list[dict], nets: list, md: list[str]) -> list[list]:
    md.append("\n### Table 5: one supervised stage only (acc, %, 95% CI)\n")
    hdr = ["backbone", "variant", "none", "STL-N", "STL-M", "paper STL-N", "paper STL-M"]
    lines = []
    for bb, n in nets:
        paper = _paper_row(PAPER_T5, bb, n)
        line = [bb, variant_name(n)] + [
            metric_cell(find_metrics(rows, bb, n, stages), "accuracy") for stages in ((), ("stl_n",), ("stl_m",))
        ]
        lines.append(line + ([f"{paper[0]:.1f}", f"{paper[1]:.1f}"] if paper else ["-", "-"]))
    md += markdown_table(hdr, lines)
    return [hdr] + lines


def _selection(rows: list[dict], diffs: PairedDifferences, md: list[str]) -> list[list]:
    """Chains whose checkpoint selection skips one-class epochs beside the plain ones."""
    guarded = [r for r in rows if r.get("guard", 0.0) > 0]
    if not guarded:
        return []
    md.append(
        "\n### Checkpoint selection: plain val AUC vs val AUC skipping one-class epochs (acc / F1 / AUC, %, 95% CI)\n"
    )
    hdr = ["backbone", "variant", "stages", "plain val AUC", "guarded", "Δacc / ΔF1 (guarded − plain)"]
    hdr += ["min class share"]
    lines = []
    for g in sorted(guarded, key=lambda r: (r["backbone"], r["n_attn"], r["stages"], r["method"] or "")):
        plain = find_row(rows, g["backbone"], g["n_attn"], g["stages"], g["method"])
        stages = " → ".join(g["stages"]) or "none"
        if g["method"]:
            stages += f" ({g['method']})"
        cells = [
            " / ".join(metric_cell(m, k) for k in METRIC_KEYS) if m else NOT_RUN
            for m in (plain["metrics"] if plain else None, g["metrics"])
        ]
        delta = f"{diffs.delta(g, plain, 'accuracy')} / {diffs.delta(g, plain, 'f1')}"
        lines.append([g["backbone"], variant_name(g["n_attn"]), stages] + cells + [delta, f"{g['guard']:.2f}"])
    md += markdown_table(hdr, lines)
    diffs.seed_note(md)
    return [hdr] + lines


def grid_tables(
    rows: list[dict], diffs: PairedDifferences, top1: dict | None = None
) -> tuple[str, dict[str, list[list]]]:
    """Tables 1-5, the per-stage gains and the checkpoint-selection table of ``rows`` (one chain per cell: seed 0's),
    as Markdown and ``{csv name: rows}``.

    Args:
        rows: :func:`~mstl_monai.pipeline.tables.load.load_results` rows.
        diffs: the Δ cells (their seeds and caches).
        top1: Table 1's ``(backbone, n_attn) -> stl_n_*.json`` (:func:`~.load.load_stl_n_top1`).
    """
    nets = sorted({(r["backbone"], r["n_attn"]) for r in rows}, key=lambda k: (k[0], k[1]))
    md: list[str] = []
    csvs = {"table1": _table1(rows, top1 or {}, md), "table2": _table2(rows, nets, diffs, md)}
    gains = _stage_gains(rows, nets, diffs, md)
    if gains:
        csvs["stage_gain"] = gains
    csvs["table3"] = _table3(rows, nets, diffs, md)
    csvs["table5"] = _table5(rows, nets, md)
    selection = _selection(rows, diffs, md)
    if selection:
        csvs["selection"] = selection
    md.append(
        "\n\\* Paper columns: the paper's own network when it ran this backbone (R-50/R-101, 224 px, full recipe), else"
        " its R-50 row of the same variant, for reference only: our CPU-scale runs use a smaller backbone, input and"
        " schedule.\n"
    )
    return "\n".join(md) + "\n", csvs


def leep_table(results: str | Path) -> tuple[str, list[list]]:
    """Table 6 from ``<results>/leep.json`` (``scripts/leep_table.py``); ``("", [])`` without it."""
    f = Path(results) / "leep.json"
    if not f.is_file():
        return "", []
    data = json.loads(f.read_text())
    hdr = ["backbone", "variant", "LEEP no transfer", "LEEP STL-N", "LEEP STL-M", "LEEP STL-N → STL-M"]
    hdr += ["paper (none → STL-N → +STL-M)"]
    lines = []
    for key, v in sorted(data.items()):
        bb, n = leep_network(key)
        paper = _paper_row(PAPER_T6, bb, n)
        line = [bb, variant_name(n)]
        line += [f"{v[k]:.3f}" if v.get(k) is not None else NOT_RUN for k in ("none", "stl_n", "stl_m", "stl_n+stl_m")]
        lines.append(line + [" → ".join(f"{p:.3f}" for p in paper) if paper else "-"])
    md = ["\n### Table 6: LEEP of the source model on COVID19-CT train\n"] + markdown_table(hdr, lines)
    return "\n".join(md) + "\n", [hdr] + lines
