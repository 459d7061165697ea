#!/usr/bin/env python
"""Write the paper's result tables (Tables 2-6 as Markdown and CSV) from the pipeline's measured results.

    python scripts/make_tables.py --results results/cpu_scale [--runs runs/cpu_scale]

Reads ``<results>/<chain>/metrics.json`` and ``chain.json`` (written by ``mstl-pipeline``), ``leep.json`` where
present (``--leep`` computes it from the STL-M checkpoints in ``--runs``), and writes ``tables.md``,
``table*.csv``, ``roc.png`` and ``leep.png`` into ``--results``. Every number comes from those files; cells with no
run say "not run", and Table 1 reads the STL-N top-1 files (stl_n_<backbone>_attn<n>.json) written by scripts/stl_n_top1.py. The paper's numbers (SPEC.md section 7, R-50/R-101 at 224 px,
full recipe) stand beside ours for reference; our CPU-scale runs use another backbone and recipe.

Chains run with several seeds (the pipeline's ``seeds:``; ``<chain>_s<k>`` for seed k) give the "Seeds" table: the
mean over seeds with a 95% CI over test images and seeds (``mstl_monai.metrics.seed_bootstrap_metrics``), the seed
spread, and the seed ensemble (the seeds' mean probability) beside them. Tables 2-5 show seed 0's chains; their
Δ columns, where both cells ran 2+ seeds, compare the means over all seeds of each cell (marked ‡;
``mstl_monai.metrics.seed_paired_difference``: a bootstrap over the test images, paired, and each cell's seeds).
Where the evaluation recorded a decision threshold chosen on val (``at_threshold`` in metrics.json), the
"Decision threshold" table shows the metrics at it beside those at 0.5.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

# the paper's numbers (acc, F1, AUC in %), SPEC.md section 7
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
VARIANT = {0: "baseline", 1: "+1 ATTN", 5: "+5 ATTNs"}
STAGE_NAMES = {"stl_n": "STL-N", "stl_m": "STL-M", "sstl_m": "SSTL-M"}
METHOD_NAMES = {"moco": "MoCo", "simclr": "SimCLR", "ours": "ours"}
NO_STL_N = "not run"
#: the results folder being tabulated (set by main; Table 1 reads its stl_n_*.json files)
RESULTS_DIR: list[Path] = []


def _stl_n_top1(results: Path) -> dict[tuple[str, int], dict]:
    out = {}
    for f in sorted(results.glob("stl_n_*.json")):
        d = json.loads(f.read_text())
        if "top1" in d:
            out[(d["backbone"], int(d["n_attn"]))] = d
    return out


def _top1_cell(d: dict | None) -> str:
    if not d:
        return "not run"
    t = d["top1"]
    return f"{100 * t['value']:.1f} [{100 * t['low']:.1f}, {100 * t['high']:.1f}]"


def _describe(chain_json: dict) -> dict:
    chain = chain_json["chain"]
    common = chain_json.get("common", {})
    ov = dict(common, **chain.get("overrides", {}))
    stages, method, guard = [], None, float(ov.get("selection_min_class_fraction", 0) or 0)
    recipe: tuple = ()
    ft_seed = None
    for st in chain["stages"]:
        name = st if isinstance(st, str) else st["stage"]
        if name == "finetune" and isinstance(st, dict):
            guard = float(st.get("overrides", {}).get("selection_min_class_fraction", guard) or 0)
            # a finetune-only seed (the pretraining stages shared with seed 0): a seed of the same cell
            ft_seed = st.get("overrides", {}).get("seed")
            # other finetune settings (label_fraction, mixup_alpha, ...): not the grid's cell, kept apart
            recipe = tuple(sorted((k, v) for k, v in st.get("overrides", {}).items()
                                  if k not in ("selection_min_class_fraction", "seed")))
        if name == "sstl_m":
            method = (st.get("overrides", {}) if isinstance(st, dict) else {}).get("method", "ours")
        if name in ("stl_n", "stl_m", "sstl_m"):
            stages.append(name)
    if chain.get("pretrained"):
        stages.insert(0, "stl_n")
    return {
        "backbone": ov.get("backbone", "resnet50"),
        "n_attn": int(ov.get("n_attn", 0)),
        "stages": tuple(stages),
        "method": method,
        "image_size": ov.get("image_size"),
        "guard": guard,
        "recipe": recipe,
        "seed": int(ft_seed if ft_seed is not None else (ov.get("seed", 0) or 0)),
        "seed_scope": "finetune" if ft_seed is not None else "chain",
    }


def _finetune_epochs(chain_json: dict) -> int:
    """The finetune's epochs: its stage override, else the chain's, else the pipeline's stage default (40)."""
    chain = chain_json["chain"]
    epochs = chain_json.get("stage_defaults", {}).get("finetune", {}).get("epochs", 40)
    epochs = chain.get("overrides", {}).get("epochs", epochs)
    for st in chain["stages"]:
        if isinstance(st, dict) and st.get("stage") == "finetune":
            epochs = st.get("overrides", {}).get("epochs", epochs)
    return int(epochs)


def load_results(results: Path) -> list[dict]:
    rows = []
    for d in sorted(p for p in results.iterdir() if p.is_dir()):
        m, c = d / "metrics.json", d / "chain.json"
        if not (m.is_file() and c.is_file()):
            continue
        info = _describe(json.loads(c.read_text()))
        info["chain"] = d.name
        info["metrics"] = json.loads(m.read_text())
        t = d / "timing.json"
        timing = json.loads(t.read_text()) if t.is_file() else {}
        info["seconds"] = sum(v for v in timing.values() if v) if timing else None
        info["finetune_seconds"] = timing.get("finetune")
        info["finetune_epochs"] = _finetune_epochs(json.loads(c.read_text()))
        info["predictions"] = d / "predictions.csv" if (d / "predictions.csv").is_file() else None
        rows.append(info)
    return rows


def _cell(m: dict | None, key: str) -> str:
    if m is None or not isinstance(m.get(key), dict) or m[key].get("value") is None:
        return "not run"
    v = m[key]
    return f"{100 * v['value']:.1f} [{100 * v['ci_low']:.1f}, {100 * v['ci_high']:.1f}]"


def _val(m: dict | None, key: str) -> float | None:
    if m is None or not isinstance(m.get(key), dict) or m[key].get("value") is None:
        return None
    return 100 * m[key]["value"]


def _find_row(rows, backbone, n_attn, stages, method=None, guard=0.0):
    for r in rows:
        same = r["backbone"] == backbone and r["n_attn"] == n_attn and r["stages"] == tuple(stages)
        if same and r["method"] == method and r.get("guard", 0.0) == guard and not r.get("recipe"):
            return r
    return None


def _find(rows, backbone, n_attn, stages, method=None, guard=0.0):
    r = _find_row(rows, backbone, n_attn, stages, method, guard)
    return r["metrics"] if r else None


_PAIRED: dict = {}
#: the cells (``_cell_key``) run with 2+ seeds that saved predictions: one row per seed, by seed (set by main)
SEED_GROUPS: dict[tuple, list[dict]] = {}
_SEED_PAIRED: dict = {}
_SEED_USED: list[bool] = []  # a Δ of the table being written was taken over seeds (its note is due)
SEED_MARK = "‡"
SEED_NOTE = (
    f"\n{SEED_MARK} Δ over seeds: the mean over all seeds of the one cell minus that of the other (the Seeds table"
    " lists them; acc / F1 / AUC columns show seed 0's chain), 95% CI from a bootstrap over the test images (the same"
    " for both) and over each cell's seeds."
)


def _paired(ra: dict, rb: dict) -> dict | None:
    """Paired bootstrap of the differences a - b on the test images both chains scored (None without predictions)."""
    if not ra or not rb or not ra.get("predictions") or not rb.get("predictions"):
        return None
    key = (str(ra["predictions"]), str(rb["predictions"]))
    if key not in _PAIRED:
        from mstl_monai.metrics import paired_bootstrap_difference
        from mstl_monai.metrics.io import read_predictions_csv

        na, ya, pa, _ = read_predictions_csv(ra["predictions"])
        nb, yb, pb, _ = read_predictions_csv(rb["predictions"])
        pos_b = {(str(n), int(y)): i for i, (n, y) in enumerate(zip(nb, yb))}
        try:
            order = [pos_b[(str(n), int(y))] for n, y in zip(na, ya)]
        except KeyError:
            _PAIRED[key] = None  # not the same test images
            return None
        _PAIRED[key] = paired_bootstrap_difference(ya, pa[:, 1], pb[order, 1], n_bootstrap=1000, seed=0)
    return _PAIRED[key]


def _seed_group(r: dict | None) -> list[dict] | None:
    group = SEED_GROUPS.get(_cell_key(r)) if r else None
    return group if group and len(group) > 1 else None


def _aligned_probs(group: list[dict], names, y) -> np.ndarray | None:
    """``(K, n)`` class-1 probabilities of the rows of ``group`` on the images ``names``/``y`` (None if one row
    scored other images)."""
    from mstl_monai.metrics.io import read_predictions_csv

    pos = {(str(a), int(b)): i for i, (a, b) in enumerate(zip(names, y))}
    out = np.empty((len(group), len(pos)))
    for k, r in enumerate(group):
        n, c, p, _ = read_predictions_csv(r["predictions"])
        keys = [(str(a), int(b)) for a, b in zip(n, c)]
        if len(keys) != len(pos) or set(keys) != set(pos):
            return None
        out[k, [pos[x] for x in keys]] = p[:, 1]
    return out


def _seed_paired(ra: dict | None, rb: dict | None) -> dict | None:
    """Seed-mean differences a - b over all seeds of each cell (None unless both cells ran 2+ seeds on the same
    test images)."""
    ga, gb = _seed_group(ra), _seed_group(rb)
    if ga is None or gb is None:
        return None
    key = (tuple(str(r["predictions"]) for r in ga), tuple(str(r["predictions"]) for r in gb))
    if key not in _SEED_PAIRED:
        from mstl_monai.metrics import seed_paired_difference
        from mstl_monai.metrics.io import read_predictions_csv

        names, y, _, _ = read_predictions_csv(ga[0]["predictions"])
        pa, pb = _aligned_probs(ga, names, y), _aligned_probs(gb, names, y)
        ok = pa is not None and pb is not None
        _SEED_PAIRED[key] = seed_paired_difference(y, pa, pb, n_bootstrap=1000, seed=0) if ok else None
    return _SEED_PAIRED[key]


def _seed_note(md: list[str]) -> None:
    """Put the ‡ note under the table just written when one of its Δ was taken over seeds."""
    if _SEED_USED:
        md.append(SEED_NOTE)
        _SEED_USED.clear()


def _delta(ra: dict | None, rb: dict | None, key: str) -> str:
    """``a - b`` in points, with its paired 95% CI when both chains saved their predictions; over seeds (‡) when
    both cells ran 2+ seeds."""
    a, b = _val(ra["metrics"] if ra else None, key), _val(rb["metrics"] if rb else None, key)
    if a is None or b is None:
        return "-"
    s = _seed_paired(ra, rb)
    if s is not None:
        _SEED_USED.append(True)
        d = s[key]
        ci = f" [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]" if np.isfinite(d["ci_low"]) else ""
        return f"{100 * d['value']:+.1f}{ci} {SEED_MARK}"
    d = _paired(ra, rb)
    if d is None or not np.isfinite(d[key]["ci_low"]):
        return f"{a - b:+.1f}"
    return f"{a - b:+.1f} [{100 * d[key]['ci_low']:+.1f}, {100 * d[key]['ci_high']:+.1f}]"


def _paper(t: tuple | None) -> str:
    return " / ".join(f"{v:.1f}" for v in t) if t else "-"


def _cell_key(r: dict) -> tuple:
    return (r["backbone"], r["n_attn"], r["stages"], r["method"] or "", r.get("guard", 0.0), r.get("image_size"), r.get("recipe", ()))


def seed_table(rows: list[dict]) -> tuple[str, list[list]]:
    """The cells run with several seeds: mean over seeds [95% CI over images and seeds] (± seed SD), and the seed
    ensemble; from each seed's predictions.csv (the same test images)."""
    from mstl_monai.metrics import seed_bootstrap_metrics
    from mstl_monai.metrics.io import read_predictions_csv

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("predictions"):
            groups.setdefault(_cell_key(r), []).append(r)
    hdr = ["backbone", "variant", "stages", "seeds", "acc", "F1", "AUC", "ensemble acc", "ensemble F1", "ensemble AUC"]
    lines = []
    for key, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        seeds = sorted({r["seed"] for r in group})
        if len(seeds) < 2:
            continue
        group = sorted(group, key=lambda r: r["seed"])
        n0, y0, p0, _ = read_predictions_csv(group[0]["predictions"])
        order0 = {(str(n), int(y)): i for i, (n, y) in enumerate(zip(n0, y0))}
        probs = [p0[:, 1]]
        for r in group[1:]:
            n, y, p, _ = read_predictions_csv(r["predictions"])
            if sorted(order0) != sorted((str(a), int(b)) for a, b in zip(n, y)):
                raise SystemExit(f"{r['chain']}: its predictions.csv holds other test images than {group[0]['chain']}'s")
            aligned = np.empty(len(y0))
            for i, (a, b) in enumerate(zip(n, y)):
                aligned[order0[(str(a), int(b))]] = p[i, 1]
            probs.append(aligned)
        m = seed_bootstrap_metrics(y0, np.stack(probs), n_bootstrap=1000, seed=0)
        stages = " → ".join(STAGE_NAMES[x] for x in key[2]) or "none"
        if key[3]:
            stages += f" ({METHOD_NAMES.get(key[3], key[3])})"
        if key[6]:
            stages += " [finetune " + ", ".join(f"{k}={v}" for k, v in key[6]) + "]"
        cells = [f"{_cell(m, k)} ±{100 * m[k]['sd']:.1f}" for k in ("accuracy", "f1", "auc")]
        scope = " (finetune)" if any(r.get("seed_scope") == "finetune" for r in group) else ""
        line = [key[0], VARIANT.get(key[1], str(key[1])), stages, ", ".join(map(str, seeds)) + scope] + cells
        line += [_cell(m["ensemble"], k) for k in ("accuracy", "f1", "auc")]
        lines.append(line)
    if not lines:
        return "", []
    md = [
        "\n### Seeds: mean over seeds and seed ensemble (COVID19-CT test, %, 95% CI)\n",
        "Mean over the seeds [95% CI from a bootstrap over test images and seeds] ±SD across seeds; the ensemble averages"
        " the seeds' probabilities (one model, 95% bootstrap CI over test images). Seeds marked (finetune) vary the"
        " finetune only (initialisation of the head, data order, augmentation) on the pretraining stages of seed 0;"
        " the others retrain every stage.\n",
        "| " + " | ".join(hdr) + " |",
        "|" + "---|" * len(hdr),
    ]
    md += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(md) + "\n", [hdr] + lines


def threshold_table(rows: list[dict]) -> tuple[str, list[list]]:
    """Metrics at the decision threshold chosen on val (metrics.json ``at_threshold``) beside those at 0.5."""
    hdr = ["chain", "threshold", "acc", "F1", "sens", "spec", "acc @0.5", "F1 @0.5", "sens @0.5", "spec @0.5"]
    lines = []
    for r in rows:
        m = r["metrics"]
        used = m.get("decision_threshold") or {}
        if "at_threshold" not in m or used.get("source") == "default":
            continue
        keys = ("accuracy", "f1", "sensitivity", "specificity")
        lines.append([r["chain"], f"{used['value']:.3f}"] + [_cell(m["at_threshold"], k) for k in keys] + [_cell(m, k) for k in keys])
    if not lines:
        return "", []
    md = ["\n### Decision threshold chosen on val (max Youden J) vs 0.5 (COVID19-CT test, %, 95% CI)\n",
          "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    md += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(md) + "\n", [hdr] + lines


def make_tables(rows: list[dict]) -> tuple[str, dict[str, list[list]]]:
    nets = sorted({(r["backbone"], r["n_attn"]) for r in rows}, key=lambda k: (k[0], k[1]))
    md, csvs = [], {}
    # Table 1: the STL-N source's top-1 (ours: Tiny ImageNet, scripts/stl_n_top1.py -> stl_n_<net>.json)
    top1 = _stl_n_top1(RESULTS_DIR[0]) if RESULTS_DIR else {}
    md.append("### Table 1: top-1 of the STL-N source model (%, 95% bootstrap CI)\n")
    md.append(
        "Ours: Tiny ImageNet (202 ImageNet classes, 64 px, 100 train images a class; chance 0.5 %), top-1 on its 2,020"
        " held-out val images (`scripts/stl_n_top1.py`); the paper: ImageNet (1000 classes, 224 px). Not comparable in"
        " scale: the column says whether the source stage learnt natural images at all.\n"
    )
    variants = sorted({n for (_, n) in top1} | {0, 5})
    hdr = ["backbone"] + [f"ours {VARIANT.get(n, n)}" for n in variants] + ["paper baseline", "paper +5 ATTNs"]
    md += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    rows_csv = [hdr]
    for bb in sorted({r["backbone"] for r in rows} | set(PAPER_T1) | {b for (b, _) in top1}):
        paper = PAPER_T1.get(bb)
        line = [bb] + [_top1_cell(top1.get((bb, n))) for n in variants]
        line += [f"{paper[0]:.1f}", f"{paper[1]:.1f}"] if paper else ["-", "-"]
        md.append("| " + " | ".join(line) + " |")
        rows_csv.append(line)
    csvs["table1"] = rows_csv
    md.append("")
    # Table 2/4: all stages available vs no transfer
    full4, full3 = ("stl_n", "stl_m", "sstl_m"), ("stl_m", "sstl_m")
    md.append("### Table 2/4: all stages then finetune vs no transfer (COVID19-CT test, %, 95% bootstrap CI)\n")
    md.append(
        "Chains: STL-N → STL-M → SSTL-M (ours) → finetune (the paper's), and STL-M → SSTL-M (ours) → finetune (without"
        " STL-N). Δ = with − without, in points, with a paired bootstrap 95% CI over the test images (both models scored"
        " on the same resamples).\n"
    )
    hdr = ["backbone", "variant", "stages", "acc", "F1", "AUC", "acc w/o", "F1 w/o", "AUC w/o", "Δacc", "ΔF1", "ΔAUC", "paper (with)*", "paper (w/o)*"]
    md += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    rows_csv = [hdr]
    for bb, n in nets:
        rwo = _find_row(rows, bb, n, ())
        wo = rwo["metrics"] if rwo else None
        paper = PAPER_T2.get((bb, n)) or PAPER_T2.get(("resnet50", n))
        for full in (full4, full3):
            rw = _find_row(rows, bb, n, full, "ours")
            if rw is None and full == full4:
                continue
            w = rw["metrics"] if rw else None
            deltas = [_delta(rw, rwo, k) for k in ("accuracy", "f1", "auc")]
            line = [bb, VARIANT.get(n, str(n)), " → ".join(STAGE_NAMES[x] for x in full)]
            line += [_cell(w, k) for k in ("accuracy", "f1", "auc")]
            line += [_cell(wo, k) for k in ("accuracy", "f1", "auc")] + deltas
            line += [_paper(paper[0]) if paper and full == full4 else "-", _paper(paper[1]) if paper and full == full4 else "-"]
            md.append("| " + " | ".join(line) + " |")
            rows_csv.append(line)
    _seed_note(md)
    csvs["table2"] = rows_csv
    # per-stage gain Pp - Pn (the paper's question: does each stage help, and more with ATTNs?)
    steps = [  # (stage added, chain without it, chain with it, SSTL-M method of the chain without, with)
        ("STL-N", (), ("stl_n",), None, None),
        ("STL-M after STL-N", ("stl_n",), ("stl_n", "stl_m"), None, None),
        ("SSTL-M (ours) after STL-N → STL-M", ("stl_n", "stl_m"), ("stl_n", "stl_m", "sstl_m"), None, "ours"),
        ("STL-M", (), ("stl_m",), None, None),
        ("SSTL-M (ours) after STL-M", ("stl_m",), ("stl_m", "sstl_m"), None, "ours"),
        ("STL-N before STL-M → SSTL-M (ours)", ("stl_m", "sstl_m"), ("stl_n", "stl_m", "sstl_m"), "ours", "ours"),
    ]
    lines = []
    for bb, n in nets:
        for label, before, after, meth_b, meth in steps:
            ra, rb = _find_row(rows, bb, n, after, meth), _find_row(rows, bb, n, before, meth_b)
            if ra is None or rb is None:
                continue
            lines.append([bb, VARIANT.get(n, str(n)), label] + [_delta(ra, rb, k) for k in ("accuracy", "f1", "auc")])
    if lines:
        md.append("\n### Per-stage gain Pp − Pn (COVID19-CT test, points, paired bootstrap 95% CI)\n")
        md.append("Pp − Pn = the chain with the stage minus the same chain without it, both finetuned and scored on the same test images.\n")
        hdr = ["backbone", "variant", "stage added", "Δacc", "ΔF1", "ΔAUC"]
        md += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        md += ["| " + " | ".join(line) + " |" for line in lines]
        _seed_note(md)
        csvs["stage_gain"] = [hdr] + lines
    # Table 3: SSTL-M methods after STL-M
    md.append("\n### Table 3: SSTL-M method after STL-M, then finetune (%, 95% bootstrap CI)\n")
    md.append("ΔAUC vs ours = ours − this method, paired bootstrap 95% CI.\n")
    hdr = ["backbone", "variant", "SSTL-M", "acc", "F1", "AUC", "ΔAUC vs ours", "paper acc / F1 / AUC*"]
    md += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    rows_csv = [hdr]
    for bb, n in nets:
        paper = PAPER_T3.get((bb, n)) or PAPER_T3.get(("resnet50", n))
        ours = _find_row(rows, bb, n, full, "ours")
        for j, meth in enumerate(("moco", "simclr", "ours")):
            r = _find_row(rows, bb, n, full, meth)
            m = r["metrics"] if r else None
            vs = _delta(ours, r, "auc") if meth != "ours" else "-"
            line = [bb, VARIANT.get(n, str(n)), METHOD_NAMES[meth]] + [_cell(m, k) for k in ("accuracy", "f1", "auc")]
            line += [vs, _paper(paper[j]) if paper else "-"]
            md.append("| " + " | ".join(line) + " |")
            rows_csv.append(line)
    _seed_note(md)
    csvs["table3"] = rows_csv
    # Table 5: one supervised stage
    md.append("\n### Table 5: one supervised stage only (acc, %, 95% CI)\n")
    hdr = ["backbone", "variant", "none", "STL-N", "STL-M", "paper STL-N", "paper STL-M"]
    md += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    rows_csv = [hdr]
    for bb, n in nets:
        paper = PAPER_T5.get((bb, n)) or PAPER_T5.get(("resnet50", n))
        line = [bb, VARIANT.get(n, str(n)), _cell(_find(rows, bb, n, ()), "accuracy")]
        line += [_cell(_find(rows, bb, n, ("stl_n",)), "accuracy")]
        line += [_cell(_find(rows, bb, n, ("stl_m",)), "accuracy")]
        line += [f"{paper[0]:.1f}", f"{paper[1]:.1f}"] if paper else ["-", "-"]
        md.append("| " + " | ".join(line) + " |")
        rows_csv.append(line)
    csvs["table5"] = rows_csv
    guarded = [r for r in rows if r.get("guard", 0.0) > 0]
    if guarded:
        md.append(
            "\n### Checkpoint selection: plain val AUC vs val AUC skipping one-class epochs (acc / F1 / AUC, %, 95% CI)\n"
        )
        hdr = ["backbone", "variant", "stages", "plain val AUC", "guarded", "Δacc / ΔF1 (guarded − plain)", "min class share"]
        md += ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
        rows_csv = [hdr]
        for g in sorted(guarded, key=lambda r: (r["backbone"], r["n_attn"], r["stages"], r["method"] or "")):
            plain = _find(rows, g["backbone"], g["n_attn"], g["stages"], g["method"])
            stages = " → ".join(g["stages"]) or "none"
            if g["method"]:
                stages += f" ({g['method']})"
            cells = [" / ".join(_cell(m, k) for k in ("accuracy", "f1", "auc")) if m else "not run" for m in (plain, g["metrics"])]
            prow = _find_row(rows, g["backbone"], g["n_attn"], g["stages"], g["method"])
            delta = f"{_delta(g, prow, 'accuracy')} / {_delta(g, prow, 'f1')}"
            line = [g["backbone"], VARIANT.get(g["n_attn"], str(g["n_attn"])), stages] + cells + [delta, f"{g['guard']:.2f}"]
            md.append("| " + " | ".join(line) + " |")
            rows_csv.append(line)
        _seed_note(md)
        csvs["selection"] = rows_csv
    md.append(
        "\n\\* Paper columns: the paper's own network when it ran this backbone (R-50/R-101, 224 px, full recipe), else its"
        " R-50 row of the same variant, for reference only: our CPU-scale runs use a smaller backbone, input and"
        " schedule.\n"
    )
    return "\n".join(md) + "\n", csvs


def save_roc(rows: list[dict], results: Path) -> Path | None:
    """One ROC curve per finished chain, from the predictions each chain saved."""
    from mstl_monai.metrics import save_roc_curve
    from mstl_monai.metrics.io import read_predictions_csv

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
    nets = []
    for key, v in data.items():
        bb, n = key.rsplit("_attn", 1)
        nets.append((bb, int(n), v))
    return sorted(nets, key=lambda t: (t[0], t[1]))


def save_leep_plot(rows: list[dict], results: Path) -> Path | None:
    """Fig. 3: LEEP per network over the transfer stages, and LEEP vs the test accuracy it should predict.

    Left: one line per network over none -> STL-N -> STL-M (a stage missing from ``leep.json`` is skipped and the
    line bridges it dotted; a tick no network has reads "n/a"). Right: LEEP of the STL-M source model vs the test
    accuracy (95% CI bars) of that network's STL-M -> finetune chain (filled), and of the random-init model vs its
    no-transfer chain (hollow), joined per network. Returns ``None`` when there is no ``leep.json``.
    """
    f = results / "leep.json"
    if not f.is_file():
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mstl_monai.metrics.io import atomic_write

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
            m = _find(rows, bb, n, stages)
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
                    label, (v[key], y), textcoords="offset points", xytext=(6, 4 + 9 * i), fontsize="x-small", color=color
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


def leep_table(results: Path) -> tuple[str, list[list]]:
    f = results / "leep.json"
    if not f.is_file():
        return "", []
    data = json.loads(f.read_text())
    hdr = ["backbone", "variant", "LEEP no transfer", "LEEP STL-N", "LEEP STL-M", "LEEP STL-N → STL-M", "paper (none → STL-N → +STL-M)"]
    md = ["\n### Table 6: LEEP of the source model on COVID19-CT train\n", "| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    rows = [hdr]
    for key, v in sorted(data.items()):
        bb, n = key.rsplit("_attn", 1)
        n = int(n)
        paper = PAPER_T6.get((bb, n)) or PAPER_T6.get(("resnet50", n))
        line = [bb, VARIANT.get(n, str(n))]
        line += [f"{v[k]:.3f}" if v.get(k) is not None else "not run" for k in ("none", "stl_n", "stl_m", "stl_n+stl_m")]
        line += [" → ".join(f"{p:.3f}" for p in paper) if paper else "-"]
        md.append("| " + " | ".join(line) + " |")
        rows.append(line)
    return "\n".join(md) + "\n", rows


def recipe_table(rows: list[dict]) -> tuple[str, list[list]]:
    """Chains that change a finetune setting (label fraction, input size, mixup, ...) beside the grid cell they
    change: test metrics, the paired difference to that cell, and the finetune's seconds per epoch (timing.json)."""
    changed = [r for r in rows if r.get("recipe")]
    if not changed:
        return "", []
    hdr = ["backbone", "variant", "stages", "finetune setting", "acc", "F1", "AUC", "ΔAUC vs default", "s/epoch"]
    lines = []
    for r in sorted(changed, key=lambda r: (r["backbone"], r["n_attn"], r["stages"], str(r["recipe"]))):
        base = _find_row(rows, r["backbone"], r["n_attn"], r["stages"], r["method"], r.get("guard", 0.0))
        stages = " → ".join(STAGE_NAMES[x] for x in r["stages"]) or "none"
        if r["method"]:
            stages += f" ({METHOD_NAMES.get(r['method'], r['method'])})"
        setting = ", ".join(f"{k}={v}" for k, v in r["recipe"])
        per_epoch = f"{r['finetune_seconds'] / r['finetune_epochs']:.1f}" if r.get("finetune_seconds") else "-"
        line = [r["backbone"], VARIANT.get(r["n_attn"], str(r["n_attn"])), stages, setting]
        line += [_cell(r["metrics"], k) for k in ("accuracy", "f1", "auc")] + [_delta(r, base, "auc"), per_epoch]
        lines.append(line)
    for r in rows:  # the defaults' cost, for the s/epoch column's reference
        if not r.get("recipe") and r.get("finetune_seconds") and any(
            _find_row(rows, c["backbone"], c["n_attn"], c["stages"], c["method"], c.get("guard", 0.0)) is r for c in changed
        ):
            stages = " → ".join(STAGE_NAMES[x] for x in r["stages"]) or "none"
            lines.append([r["backbone"], VARIANT.get(r["n_attn"], str(r["n_attn"])), stages, "(default)"]
                         + [_cell(r["metrics"], k) for k in ("accuracy", "f1", "auc")]
                         + ["0", f"{r['finetune_seconds'] / r['finetune_epochs']:.1f}"])
    md = [
        "\n### Finetune settings: label fraction, input size, mixup, ... (COVID19-CT test, %, 95% CI)\n",
        "Each row changes one finetune setting of a grid cell; Δ = the row minus the cell with the default settings, paired"
        " bootstrap 95% CI over the test images. s/epoch = the finetune's seconds per epoch (timing.json; machine load"
        " varies between runs).\n",
        "| " + " | ".join(hdr) + " |",
        "|" + "---|" * len(hdr),
    ] + ["| " + " | ".join(map(str, line)) + " |" for line in lines]
    return "\n".join(md) + "\n", [hdr] + lines


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results/cpu_scale")
    p.add_argument("--readme", default=None, help="also put the tables between the README's results markers")
    a = p.parse_args(argv)
    results = Path(a.results)
    RESULTS_DIR[:] = [results]
    rows = load_results(results)
    if not rows:
        raise SystemExit(f"no finished chains (metrics.json + chain.json) under {results}")
    by_cell: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r.get("predictions"):
            by_cell.setdefault(_cell_key(r), {}).setdefault(r["seed"], r)
    SEED_GROUPS.clear()
    SEED_GROUPS.update({k: [v[s] for s in sorted(v)] for k, v in by_cell.items()})
    _SEED_USED.clear()
    md, csvs = make_tables([r for r in rows if r.get("seed", 0) == 0] or rows)
    for name, (smd, srows) in (("seeds", seed_table(rows)), ("threshold", threshold_table(rows)), ("recipes", recipe_table(rows))):
        md += smd
        if srows:
            csvs[name] = srows
    lmd, lrows = leep_table(results)
    md += lmd
    if lrows:
        csvs["table6"] = lrows
    probes = ["\n### SSTL-M: is it learning? (k-NN probe of frozen features on COVID19-CT val; lobe task on held-out val crops, chance 20 %)\n",
              "| chain | method | k-NN acc before → after | k-NN AUC before → after | lobe head acc before → after | lobe k-NN acc before → after |",
              "|---|---|---|---|---|---|"]
    n_probes = 0
    for r in rows:
        f = results / r["chain"] / "sstl_m_probe.json"
        if not f.is_file():
            continue
        pr = json.loads(f.read_text())
        before, after = pr.get("before", {}), pr.get("after", {})

        def pair(section: str, key: str) -> str:
            x, y = before.get(section, {}).get(key), after.get(section, {}).get(key)
            return f"{100 * x:.1f} → {100 * y:.1f}" if x is not None and y is not None else "-"

        probes.append(
            f"| {r['chain']} | {r['method']} | {pair('knn', 'accuracy')} | {pair('knn', 'auc')} | "
            f"{pair('lobe', 'head_accuracy')} | {pair('lobe', 'knn_accuracy')} |"
        )
        n_probes += 1
    if n_probes:
        md += "\n".join(probes) + "\n"
    runs = ["\n### Runs\n", "| chain | stages | method | seconds | n test |", "|---|---|---|---|---|"]
    for r in rows:
        secs = f"{r['seconds']:.0f}" if r["seconds"] else "-"
        runs.append(f"| {r['chain']} | {' → '.join(r['stages']) or 'none'} | {r['method'] or '-'} | {secs} | {r['metrics'].get('n')} |")
    md += "\n".join(runs) + "\n"
    roc = save_roc(rows, results)
    if roc is not None:
        md += f"\nROC curves: `{roc.name}`.\n"
    leep_png = save_leep_plot(rows, results)
    if leep_png is not None:
        md += f"\nLEEP per transfer stage and LEEP vs finetuned accuracy (Fig. 3): `{leep_png.name}`.\n"
    (results / "tables.md").write_text(md)
    for name, table in csvs.items():
        with open(results / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows(table)
    if a.readme:
        start, end = "<!-- results:start -->", "<!-- results:end -->"
        text = Path(a.readme).read_text()
        if start not in text or end not in text:
            raise SystemExit(f"{a.readme} has no {start} ... {end} markers")
        head, rest = text.split(start, 1)
        tail = rest.split(end, 1)[1]
        body = md.replace("### ", "#### ")
        for png in ("roc.png", "leep.png"):
            body = body.replace(f"`{png}`", f"`{results / png}`")
        Path(a.readme).write_text(head + start + "\n" + body + end + tail)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
