# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The pipeline's summary: one row per chain with results (metrics with CIs, seconds), from the run folder or the
published results."""

from __future__ import annotations

import json
import os
from pathlib import Path

from mstl_monai.pipeline.run import results_match, run_dir_results

__all__ = ["chains_run_text", "metric_cell", "summary_table"]


def metric_cell(m: dict | None, key: str, missing: str = "not run") -> str:
    """``"value [ci_low, ci_high]"`` in % of ``m[key]`` (a metric of ``metrics.json``); ``missing`` when there is no
    such value. The cell of this summary and of the result tables (:mod:`mstl_monai.pipeline.tables`)."""
    if m is None or not isinstance(m.get(key), dict) or m[key].get("value") is None:
        return missing
    v = m[key]
    return f"{100 * v['value']:.1f} [{100 * v['ci_low']:.1f}, {100 * v['ci_high']:.1f}]"


#: the metrics of a chain's lines, in this order, with their short names
_LINE_METRICS = (("accuracy", "acc"), ("f1", "F1"), ("auc", "AUC"), ("sensitivity", "sens"), ("specificity", "spec"))


def _metrics_line(m: dict) -> str:
    return ", ".join(f"{short} {metric_cell(m, k)}" for k, short in _LINE_METRICS if metric_cell(m, k, "") != "")


def chains_run_text(rows: dict[str, list[dict]], how: dict[str, str]) -> str:
    """What the chains of one ``mstl-pipeline`` command gave, shown before the summary of every chain.

    Args:
        rows: chain name -> its stage rows (:func:`~mstl_monai.pipeline.run_chain`), in the order run.
        how: chain name -> how its results came (``"trained now"``, ``"already done"``, ...).

    Returns:
        per chain: its name and ``how``, its test metrics (% with 95% CI) at 0.5 and at the checkpoint's threshold (or
        why there is none), and where its evaluation is (the evaluate stage's ``stage.log``, or the published
        ``metrics.json``).
    """
    lines = ["Chains run by this command (test metrics in %, 95% bootstrap CI):"]
    for name, chain_rows in rows.items():
        lines.append(f"{name} ({how.get(name, 'done')})")
        ev = next((r for r in chain_rows if r.get("stage") == "evaluate"), None)
        m = ev.get("metrics") if ev else None
        if not m:
            lines.append("  no evaluation: the chain has no evaluate stage, or it has not written metrics.json")
            continue
        lines.append(f"  at 0.5: {_metrics_line(m)}")
        used = m.get("decision_threshold") or {}
        if used.get("value") is not None and used.get("source") != "default" and m.get("at_threshold"):
            lines.append(f"  at the {used.get('source', 'stored')} threshold {used['value']:.4f}: "
                         f"{_metrics_line(m['at_threshold'])}")
        else:
            lines.append("  no decision threshold stored with the checkpoint: 0.5 is its threshold")
        log = Path(ev["dir"]) / "stage.log" if ev.get("dir") else None
        where = [f"{log}; metrics: {Path(ev['dir']) / 'metrics.json'}"] if log is not None and log.is_file() else []
        where += [f"published {ev['published']}"] if ev.get("published") else []
        lines.append(f"  evaluate: {'; '.join(where) or 'no log'}")
    return "\n".join(lines)


def _summary_table(all_rows: list[dict]) -> str:
    lines = ["| chain | seconds | acc | F1 (COVID) | AUC | sens | spec | n |", "|---|---|---|---|---|---|---|---|"]
    by_chain: dict[str, list[dict]] = {}
    for r in all_rows:
        by_chain.setdefault(r["chain"], []).append(r)
    for name, rows in by_chain.items():
        secs = sum(r.get("seconds") or 0 for r in rows)
        m = next((r["metrics"] for r in rows if "metrics" in r), None)
        cells = " | ".join(metric_cell(m, k, "-") for k in ("accuracy", "f1", "auc", "sensitivity", "specificity"))
        n = m.get("n", "-") if m else "-"
        lines.append(f"| {name} | {secs:.0f} | {cells} | {n} |")
    return "\n".join(lines)


def _chain_result(folder: Path) -> dict | None:
    """``{"metrics", "seconds"}`` of a chain's result folder, ``None`` without ``metrics.json``."""
    if not (folder / "metrics.json").is_file():
        return None
    metrics = json.loads((folder / "metrics.json").read_text())
    timing_file = folder / "timing.json"
    timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
    seconds = sum(v for v in timing.values() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return {"metrics": metrics, "seconds": seconds}


def _chains_with_results(cfg: dict, folders: list[Path]) -> list[str]:
    """Chain names with a ``metrics.json`` in any of ``folders``: the config's chains in its order, then others."""
    names = [c["name"] for c in cfg["chains"]]
    extra: set[str] = set()
    for folder in folders:
        if folder.is_dir():
            extra |= {p.parent.name for p in folder.glob("*/metrics.json") if (p.parent / "chain.json").is_file()}
    return [n for n in names if any((f / n / "metrics.json").is_file() for f in folders)] + sorted(extra - set(names))


def summary_table(cfg: dict, repo_root: str | os.PathLike = ".", published_only: bool = False) -> tuple[str, int]:
    """The summary of every chain with results, whatever was run now: ``(table, rows taken from results_dir)``.

    Rows come from the run folder (:func:`run_dir_results`) where it holds the chain's results for the config's
    settings now, else from the published ``results_dir``; those rows are marked ``*`` (not with ``published_only``:
    the published summary). A row made with other settings than the config's now is marked ``(other settings)``.
    """
    published = Path(repo_root) / cfg["results_dir"]
    local = run_dir_results(cfg, repo_root)
    folders = [published] if published_only else [local, published]
    chains = {c["name"]: c for c in cfg["chains"]}

    def current(folder: Path) -> bool:
        return folder.name not in chains or results_match(folder, cfg, chains[folder.name], repo_root)

    rows, n_published, n_other = [], 0, 0
    for name in _chains_with_results(cfg, folders):
        candidates = [] if published_only else [(local / name, "")]
        candidates.append((published / name, "" if published_only else " *"))
        found = [(f, mark) for f, mark in candidates if (f / "metrics.json").is_file()]
        folder, mark = next(((f, m) for f, m in found if current(f)), found[0])
        if not current(folder):
            mark += " (other settings)"
            n_other += 1
        n_published += folder.parent == published
        result = _chain_result(folder)
        rows.append({"chain": name + mark, "seconds": result["seconds"], "metrics": result["metrics"]})
    table = _summary_table(rows)
    if n_other:
        table += "\n\n(other settings): made with settings other than the config's now; run the chain to replace them"
    return table, n_published
