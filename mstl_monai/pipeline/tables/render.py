# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Build every result table of a results folder and write them: ``tables.md``, one CSV a table, the figures, and
the section of the README between its results markers."""

from __future__ import annotations

import csv
from pathlib import Path

from .grid import grid_tables, leep_table
from .load import load_results, load_stl_n_top1, seed_groups
from .plots import save_leep_plot, save_roc
from .recipes import recipe_table
from .runs import probe_table, runs_table, seed_table, threshold_table
from .stats import PairedDifferences

__all__ = ["README_START", "README_END", "build_tables", "splice_readme", "write_tables"]

README_START, README_END = "<!-- results:start -->", "<!-- results:end -->"


def build_tables(results: str | Path) -> tuple[str, dict[str, list[list]]]:
    """Every table of ``results`` as Markdown and ``{csv name: rows}``; writes ``roc.png`` and ``leep.png`` there.

    Tables 1-5 show seed 0's chains (all chains when none is seed 0); the seed, threshold and finetune-settings
    tables every chain; Table 6 ``leep.json``.

    Raises:
        ValueError: when ``results`` holds no finished chain (``metrics.json`` + ``chain.json``).
    """
    results = Path(results)
    rows = load_results(results)
    if not rows:
        raise ValueError(f"no finished chains (metrics.json + chain.json) under {results}")
    diffs = PairedDifferences(seed_groups(rows))
    md, csvs = grid_tables([r for r in rows if r.get("seed", 0) == 0] or rows, diffs, load_stl_n_top1(results))
    for name, (smd, srows) in (
        ("seeds", seed_table(rows)),
        ("threshold", threshold_table(rows)),
        ("recipes", recipe_table(rows, diffs)),
        ("table6", leep_table(results)),
    ):
        md += smd
        if srows:
            csvs[name] = srows
    md += probe_table(rows, results) + runs_table(rows)
    roc = save_roc(rows, results)
    if roc is not None:
        md += f"\nROC curves: `{roc.name}`.\n"
    leep_png = save_leep_plot(rows, results)
    if leep_png is not None:
        md += f"\nLEEP per transfer stage and LEEP vs finetuned accuracy (Fig. 3): `{leep_png.name}`.\n"
    return md, csvs


def splice_block(readme: str | Path, body: str, start: str, end: str) -> None:
    """Put ``body`` between the ``start`` and ``end`` marker lines of ``readme`` (the text outside them unchanged).

    Raises:
        ValueError: when the README lacks one of the markers.
    """
    text = Path(readme).read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme} has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    Path(readme).write_text(head + start + "\n" + body + end + tail)


def splice_readme(readme: str | Path, md: str, results: str | Path) -> None:
    """Put ``md`` between the README's :data:`README_START` and :data:`README_END` markers, one heading level down,
    its figures named by their path under ``results``.

    Raises:
        ValueError: when the README lacks one of the markers.
    """
    body = md.replace("### ", "#### ")
    for png in ("roc.png", "leep.png"):
        body = body.replace(f"`{png}`", f"`{Path(results) / png}`")
    splice_block(readme, body, README_START, README_END)


def write_tables(results: str | Path, readme: str | Path | None = None) -> str:
    """:func:`build_tables` of ``results`` written there as ``tables.md`` and ``<name>.csv`` (and into ``readme``:
    :func:`splice_readme`); returns the Markdown."""
    results = Path(results)
    md, csvs = build_tables(results)
    (results / "tables.md").write_text(md)
    for name, table in csvs.items():
        with open(results / f"{name}.csv", "w", newline="") as f:
            csv.writer(f).writerows(table)
    if readme:
        splice_readme(readme, md, results)
    return md
