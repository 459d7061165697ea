# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Label-fraction study: test AUC against the share of COVID19-CT training labels, no transfer vs transfer.

Reads the published results of the label-fraction chains of ``configs/cpu_scale.yaml`` (``<chain>_lf10``, ``_lf25``,
``_lf50``; 100 % is the chain itself) and, where they ran, the other seeds of each chain's cell (same settings in
``chain.json`` but the seed: ``<chain>[_lfNN]_ft_s<k>``, or ``_s<k>`` from the pipeline's ``seeds:``), and writes,
beside them:

* ``label_fraction.csv`` / ``label_fraction.md``: acc / F1 / AUC per arm and fraction, the mean over the seeds found
  with a 95% CI over test images and seeds (:func:`~mstl_monai.metrics.seed_bootstrap_metrics`) and the seed SD, and
  the transfer gain (transfer - no transfer), seed-averaged and paired over the same 203 test images
  (:func:`~mstl_monai.metrics.compare.compare_predictions`); one seed gives the plain image bootstrap;
* ``label_fraction.png``: the seed-mean AUC with its CI against the fraction, one line per arm, each seed a dot.

A fraction whose chain has not run yet is listed as missing (never interpolated).

.. code-block:: bash

    python scripts/label_fraction_plot.py                       # results/cpu_scale, R-18 scratch vs STL-N->STL-M->SSTL-M
    python scripts/label_fraction_plot.py --results results/cpu_scale --arms r18_base_scratch r18_base_stln_stlm_sstl_ours
    python scripts/label_fraction_plot.py --results_doc docs/RESULTS.md   # also the table between its markers
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mstl_monai.metrics import seed_bootstrap_metrics  # noqa: E402
from mstl_monai.metrics.compare import compare_predictions, load_arm  # noqa: E402
from mstl_monai.pipeline.tables import cell_key, load_results, metric_cell, seed_groups, splice_block  # noqa: E402

README_START, README_END = "<!-- label-fraction:start -->", "<!-- label-fraction:end -->"
FRACTIONS = ((0.1, "_lf10"), (0.25, "_lf25"), (0.5, "_lf50"), (1.0, ""))
KEYS = ("accuracy", "f1", "auc")


def _seed_chains(groups: dict, by_name: dict, chain: str) -> list[str]:
    """``chain`` and the other seeds of its cell (:func:`~mstl_monai.pipeline.tables.seed_groups`: the same settings
    in ``chain.json`` but the seed, e.g. ``chain_ft_s<k>`` or the pipeline's ``seeds:`` chains ``chain_s<k>``), by
    seed; [] when ``chain`` has not run."""
    row = by_name.get(chain)
    if row is None:
        return []
    group = groups.get(cell_key(row)) if row.get("predictions") else None
    return [r["chain"] for r in group] if group else [chain]


def _arm_metrics(results: Path, chains: list[str]) -> dict:
    """Seed-mean metrics of ``chains`` (one per seed); one chain: its own metrics.json (image bootstrap)."""
    if len(chains) == 1:
        m = json.loads((results / chains[0] / "metrics.json").read_text())
        return {k: {**m[k], "sd": 0.0, "per_seed": [m[k]["value"]]} for k in KEYS}
    _, y, probs = load_arm([results / c for c in chains])
    return seed_bootstrap_metrics(y, probs, n_bootstrap=1000, seed=0)


def _cell(m: dict, key: str, n_seeds: int) -> str:
    return metric_cell(m, key) + (f" ±{100 * m[key]['sd']:.1f}" if n_seeds > 1 else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results/cpu_scale")
    p.add_argument("--arms", nargs=2, default=["r18_base_scratch", "r18_base_stln_stlm_sstl_ours"],
                   metavar=("NO_TRANSFER", "TRANSFER"))
    p.add_argument("--results_doc", "--readme", dest="results_doc", default=None,
                   help=f"also put the table between {README_START} and {README_END} in this Markdown file "
                   "(docs/RESULTS.md; --readme: the option's former name)")
    args = p.parse_args(argv)
    results = Path(args.results)
    labels = {args.arms[0]: "no transfer", args.arms[1]: "transfer"}
    rows, table, missing = [], [], []
    curves: dict[str, list] = {a: [] for a in args.arms}
    rows_all = load_results(results)
    by_name, groups = {r["chain"]: r for r in rows_all}, seed_groups(rows_all)
    for frac, suffix in FRACTIONS:
        got, mets = {}, {}
        for a in args.arms:
            chains = _seed_chains(groups, by_name, a + suffix)
            if not chains:
                missing.append(a + suffix)
                continue
            got[a], mets[a] = chains, _arm_metrics(results, chains)
            m = mets[a]
            curves[a].append((frac, m["auc"]))
            rows.append({"fraction": frac, "arm": labels[a], "chains": " ".join(chains), "n_seeds": len(chains),
                         **{f"{k}_{s}": m[k][s] for k in KEYS for s in ("value", "ci_low", "ci_high", "sd")}})
        if len(got) == 2:
            files = {a: [results / c / "predictions.csv" for c in got[a]] for a in args.arms}
            gain = "n/a"
            if all(f.is_file() for fs in files.values() for f in fs):
                d = compare_predictions(files[args.arms[1]], files[args.arms[0]])["auc"]
                gain = f"{100 * d['value']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"
            n = "/".join(str(len(got[a])) for a in args.arms)
            auc, acc = ([_cell(mets[a], k, len(got[a])) for a in args.arms] for k in ("auc", "accuracy"))
            table.append([f"{int(frac * 100)} %", n] + auc + [gain] + acc)
    if not rows:
        print(f"no label-fraction results under {results} (missing: {', '.join(missing)})")
        return 1
    from mstl_monai.utils.io import atomic_write

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    with atomic_write(results / "label_fraction.csv") as f:
        f.write(buf.getvalue())
    md = ["| labels | seeds (no transfer / transfer) | AUC no transfer | AUC transfer "
          "| transfer gain (AUC, seed-mean, paired 95% CI) | acc no transfer | acc transfer |",
          "|---|---|---|---|---|---|---|"] + ["| " + " | ".join(r) + " |" for r in table]
    md.append("\nMean over the seeds [95% CI over test images and seeds] ±SD across seeds (one seed: its image-bootstrap"
              " CI). The gain pairs the two arms on the same test images, averaged over each arm's seeds"
              " (`python -m mstl_monai.metrics compare`). Below 100 %, a finetune seed also draws its own stratified label subset.")
    if missing:
        md.append(f"\nNot run yet: {', '.join(missing)}.")
    with atomic_write(results / "label_fraction.md") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    if args.results_doc:
        splice_block(args.results_doc, "\n".join(md) + "\n", README_START, README_END)

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    for i, (a, pts) in enumerate(curves.items()):
        if not pts:
            continue
        xs = [100 * f * (0.97 if i == 0 else 1.03) for f, _ in pts]  # side by side, so the CIs do not hide each other
        line = ax.errorbar(xs, [100 * m["value"] for _, m in pts],
                           yerr=[[100 * (m["value"] - m["ci_low"]) for _, m in pts],
                                 [100 * (m["ci_high"] - m["value"]) for _, m in pts]],
                           marker="o", capsize=3, label=f"{labels[a]} ({a})")
        for x, (_, m) in zip(xs, pts):
            if len(m["per_seed"]) > 1:
                ax.scatter([x] * len(m["per_seed"]), [100 * v for v in m["per_seed"]], s=9, alpha=0.5,
                           color=line[0].get_color(), zorder=3)
    ax.set_xscale("log")
    ax.set_xticks([10, 25, 50, 100])
    ax.set_xticklabels(["10", "25", "50", "100"])
    ax.set_xlabel("COVID19-CT training labels used (%)")
    ax.set_ylabel("test AUC (%, seed mean, 95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    with atomic_write(results / "label_fraction.png", "wb") as f:
        f.write(png.getvalue())
    print(f"wrote {results / 'label_fraction.csv'}, .md, .png")
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except (OSError, ValueError) as e:  # a results file that cannot be read, named in the message
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2)
