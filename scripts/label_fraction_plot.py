# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Label-fraction study (issue 15): test AUC against the share of COVID19-CT training labels, no transfer vs transfer.

Reads the published results of the label-fraction chains of ``configs/cpu_scale.yaml`` (``<chain>_lf10``, ``_lf25``,
``_lf50``; 100 % is the chain itself) and writes, beside them:

* ``label_fraction.csv`` / ``label_fraction.md``: acc / F1 / AUC with 95% bootstrap CIs per arm and fraction, and the
  transfer gain (transfer - no transfer) with its paired bootstrap CI over the same 203 test images;
* ``label_fraction.png``: AUC with its CI against the fraction, one line per arm.

A fraction whose chain has not run yet is listed as missing (never interpolated).

.. code-block:: bash

    python scripts/label_fraction_plot.py                       # results/cpu_scale, R-18 scratch vs STL-N->STL-M->SSTL-M
    python scripts/label_fraction_plot.py --results results/cpu_scale --arms r18_base_scratch r18_base_stln_stlm_sstl_ours
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

from mstl_monai.pipeline.tables import metric_cell, paired_difference  # noqa: E402

FRACTIONS = ((0.1, "_lf10"), (0.25, "_lf25"), (0.5, "_lf50"), (1.0, ""))


def _load(results: Path, chain: str) -> dict | None:
    m = results / chain / "metrics.json"
    if not m.is_file():
        return None
    out = {"metrics": json.loads(m.read_text())}
    p = results / chain / "predictions.csv"
    out["predictions"] = p if p.is_file() else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", default="results/cpu_scale")
    p.add_argument("--arms", nargs=2, default=["r18_base_scratch", "r18_base_stln_stlm_sstl_ours"],
                   metavar=("NO_TRANSFER", "TRANSFER"))
    args = p.parse_args(argv)
    results = Path(args.results)
    labels = {args.arms[0]: "no transfer", args.arms[1]: "transfer"}
    rows, table, missing = [], [], []
    curves: dict[str, list] = {a: [] for a in args.arms}
    for frac, suffix in FRACTIONS:
        got = {a: _load(results, a + suffix) for a in args.arms}
        for a in args.arms:
            if got[a] is None:
                missing.append(a + suffix)
                continue
            m = got[a]["metrics"]
            curves[a].append((frac, m["auc"]))
            rows.append({"fraction": frac, "arm": labels[a], "chain": a + suffix,
                         **{f"{k}_{s}": m[k][s] for k in ("accuracy", "f1", "auc") for s in ("value", "ci_low", "ci_high")}})
        if all(got.values()):
            transfer, scratch = got[args.arms[1]]["predictions"], got[args.arms[0]]["predictions"]
            d = paired_difference(transfer, scratch) if transfer and scratch else None
            gain = "n/a" if d is None else (
                f"{100 * d['auc']['value']:+.1f} [{100 * d['auc']['ci_low']:+.1f}, {100 * d['auc']['ci_high']:+.1f}]")
            auc, acc = ([metric_cell(got[a]["metrics"], k) for a in args.arms] for k in ("auc", "accuracy"))
            table.append([f"{int(frac * 100)} %"] + auc + [gain] + acc)
    if not rows:
        print(f"no label-fraction results under {results} (missing: {', '.join(missing)})")
        return 1
    from mstl_monai.metrics.io import atomic_write

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    with atomic_write(results / "label_fraction.csv") as f:
        f.write(buf.getvalue())
    md = ["| labels | AUC no transfer | AUC transfer | transfer gain (AUC, paired 95% CI) | acc no transfer | acc transfer |",
          "|---|---|---|---|---|---|"] + ["| " + " | ".join(r) + " |" for r in table]
    if missing:
        md.append(f"\nNot run yet: {', '.join(missing)}.")
    with atomic_write(results / "label_fraction.md") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    for a, pts in curves.items():
        if not pts:
            continue
        xs = [100 * f for f, _ in pts]
        ax.errorbar(xs, [100 * m["value"] for _, m in pts],
                    yerr=[[100 * (m["value"] - m["ci_low"]) for _, m in pts], [100 * (m["ci_high"] - m["value"]) for _, m in pts]],
                    marker="o", capsize=3, label=f"{labels[a]} ({a})")
    ax.set_xscale("log")
    ax.set_xticks([10, 25, 50, 100])
    ax.set_xticklabels(["10", "25", "50", "100"])
    ax.set_xlabel("COVID19-CT training labels used (%)")
    ax.set_ylabel("test AUC (%, 95% CI)")
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
    raise SystemExit(main())
