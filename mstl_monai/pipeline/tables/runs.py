# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Tables over the runs themselves: the seeds of a cell, the decision threshold chosen on val, the SSTL-M probes and
the run list."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mstl_monai.metrics import seed_bootstrap_metrics
from mstl_monai.metrics.io import read_predictions_csv

from .cells import METRIC_KEYS, markdown_table, metric_cell, stage_label, variant_name
from .load import cell_key
from .stats import aligned_probs, image_keys

__all__ = ["seed_table", "threshold_table", "probe_table", "runs_table"]


def _seed_probs(group: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Labels and ``(K, n)`` class-1 probabilities of the rows of ``group`` on the images of the first, in its order.

    Raises:
        ValueError: when a row's predictions.csv holds other test images than the first's.
    """
    names, y0, _, _ = read_predictions_csv(group[0]["predictions"])
    ref = image_keys(names, y0)
    probs = []
    for r in group:
        p = aligned_probs([r["predictions"]], ref)
        if p is None:
            raise ValueError(f"{r['chain']}: its predictions.csv holds other test images than {group[0]['chain']}'s")
        probs.append(p[0])
    return y0, np.stack(probs)


def seed_table(rows: list[dict], n_bootstrap: int = 1000, seed: int = 0) -> tuple[str, list[list]]:
    """The cells run with several seeds: mean over seeds [95% CI over images and seeds] (± seed SD), and the seed
    ensemble; from each seed's predictions.csv (the same test images). ``("", [])`` when no cell has 2+ seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("predictions"):
            groups.setdefault(cell_key(r), []).append(r)
    hdr = ["backbone", "variant", "stages", "seeds", "acc", "F1", "AUC", "ensemble acc", "ensemble F1", "ensemble AUC"]
    lines = []
    for key, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        seeds = sorted({r["seed"] for r in group})
        if len(seeds) < 2:
            continue
        y, probs = _seed_probs(sorted(group, key=lambda r: r["seed"]))
        m = seed_bootstrap_metrics(y, probs, n_bootstrap=n_bootstrap, seed=seed)
        stages = stage_label(key[2], key[3])
        if key[6]:
            stages += " [finetune " + ", ".join(f"{k}={v}" for k, v in key[6]) + "]"
        scope = " (finetune)" if any(r.get("seed_scope") == "finetune" for r in group) else ""
        line = [key[0], variant_name(key[1]), stages, ", ".join(map(str, seeds)) + scope]
        line += [f"{metric_cell(m, k)} ±{100 * m[k]['sd']:.1f}" for k in METRIC_KEYS]
        lines.append(line + [metric_cell(m["ensemble"], k) for k in METRIC_KEYS])
    if not lines:
        return "", []
    md = [
        "\n### Seeds: mean over seeds and seed ensemble (COVID19-CT test, %, 95% CI)\n",
        "Mean over the seeds [95% CI from a bootstrap over test images and seeds] ±SD across seeds; the ensemble"
        " averages the seeds' probabilities (one model, 95% bootstrap CI over test images). Seeds marked (finetune)"
        " vary the finetune only (initialisation of the head, data order, augmentation) on the pretraining stages of seed 0;"
        " the others retrain every stage.\n",
    ] + markdown_table(hdr, lines)
    return "\n".join(md) + "\n", [hdr] + lines


def threshold_table(rows: list[dict]) -> tuple[str, list[list]]:
    """Metrics at the decision threshold chosen on val (metrics.json ``at_threshold``) beside those at 0.5."""
    hdr = ["chain", "threshold", "acc", "F1", "sens", "spec", "acc @0.5", "F1 @0.5", "sens @0.5", "spec @0.5"]
    keys = ("accuracy", "f1", "sensitivity", "specificity")
    lines = []
    for r in rows:
        m = r["metrics"]
        used = m.get("decision_threshold") or {}
        if "at_threshold" not in m or used.get("source") == "default":
            continue
        at = [metric_cell(m["at_threshold"], k) for k in keys]
        lines.append([r["chain"], f"{used['value']:.3f}"] + at + [metric_cell(m, k) for k in keys])
    if not lines:
        return "", []
    md = ["\n### Decision threshold chosen on val (max Youden J) vs 0.5 (COVID19-CT test, %, 95% CI)\n"]
    md += markdown_table(hdr, lines)
    return "\n".join(md) + "\n", [hdr] + lines


def probe_table(rows: list[dict], results: str | Path) -> str:
    """Before → after SSTL-M of the k-NN and lobe probes (``<results>/<chain>/sstl_m_probe.json``); ``""`` without."""
    md = [
        "\n### SSTL-M: is it learning? (k-NN probe of frozen features on COVID19-CT val; lobe task on held-out val"
        " crops, chance 20 %)\n",
        "| chain | method | k-NN acc before → after | k-NN AUC before → after | lobe head acc before → after |"
        " lobe k-NN acc before → after |",
        "|---|---|---|---|---|---|",
    ]
    n_probes = 0
    for r in rows:
        f = Path(results) / r["chain"] / "sstl_m_probe.json"
        if not f.is_file():
            continue
        pr = json.loads(f.read_text())
        before, after = pr.get("before", {}), pr.get("after", {})

        def pair(section: str, key: str) -> str:
            x, y = before.get(section, {}).get(key), after.get(section, {}).get(key)
            return f"{100 * x:.1f} → {100 * y:.1f}" if x is not None and y is not None else "-"

        md.append(
            f"| {r['chain']} | {r['method']} | {pair('knn', 'accuracy')} | {pair('knn', 'auc')} | "
            f"{pair('lobe', 'head_accuracy')} | {pair('lobe', 'knn_accuracy')} |"
        )
        n_probes += 1
    return "\n".join(md) + "\n" if n_probes else ""


def runs_table(rows: list[dict]) -> str:
    """Every chain: its transfer stages, SSTL-M method, seconds (timing.json) and number of test images."""
    md = ["\n### Runs\n", "| chain | stages | method | seconds | n test |", "|---|---|---|---|---|"]
    for r in rows:
        secs = f"{r['seconds']:.0f}" if r["seconds"] else "-"
        md.append(
            f"| {r['chain']} | {' → '.join(r['stages']) or 'none'} | {r['method'] or '-'} | {secs} |"
            f" {r['metrics'].get('n')} |"
        )
    return "\n".join(md) + "\n"
