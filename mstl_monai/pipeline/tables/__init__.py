# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The paper's result tables (Tables 1-6 as Markdown and CSV) from the pipeline's published results.

.. code-block:: bash

    python scripts/make_tables.py --results results/cpu_scale [--results_doc docs/RESULTS.md]

Reads ``<results>/<chain>/metrics.json`` and ``chain.json`` (written by ``mstl-pipeline``), ``predictions.csv`` and
``timing.json`` where present, ``leep.json`` (``scripts/leep_table.py``) and ``stl_n_<backbone>_attn<n>.json``
(``scripts/stl_n_top1.py``, Table 1), and writes ``tables.md``, ``table*.csv``, ``roc.png`` and ``leep.png`` into
``results`` (:func:`write_tables`). Every number comes from those files; cells with no run say "not run". The paper's
numbers (R-50/R-101 at 224 px, full recipe) stand beside ours for reference; our CPU-scale runs use
another backbone and recipe.

* :mod:`.load`: the rows (one per chain) and the grid cells they belong to;
* :mod:`.stats`: paired differences between chains on the same test images, one seed or all seeds of each cell;
* :mod:`.cells`: cell formatting;
* :mod:`.grid`: Tables 1-6, the per-stage gains, checkpoint selection;
* :mod:`.recipes`: the finetune settings (label fraction, input size, mixup, ...) beside their grid cell;
* :mod:`.runs`: the seeds, decision threshold, SSTL-M probe and run tables;
* :mod:`.plots`: the ROC curves and the LEEP figure (Fig. 3);
* :mod:`.render`: all of them written, and spliced into a Markdown page (``docs/RESULTS.md``).

Chains run with several seeds (the pipeline's ``seeds:``; ``<chain>_s<k>`` for seed k) give the "Seeds" table: the
mean over seeds with a 95% CI over test images and seeds (:func:`~mstl_monai.metrics.seed_bootstrap_metrics`), the
seed spread, and the seed ensemble (the seeds' mean probability) beside them. Tables 2-5 show seed 0's chains; their
Δ columns, where both cells ran 2+ seeds, compare the means over all seeds of each cell (marked ‡;
:func:`~mstl_monai.metrics.seed_paired_difference`: a bootstrap over the test images, paired, and each cell's seeds).
Where the evaluation recorded a decision threshold chosen on val (``at_threshold`` in metrics.json), the
"Decision threshold" table shows the metrics at it beside those at 0.5.
"""

from __future__ import annotations

from .cells import METHOD_NAMES, STAGE_NAMES, VARIANT, metric_cell, metric_value, stage_label, variant_name
from .grid import PAPER_T1, PAPER_T2, PAPER_T3, PAPER_T5, PAPER_T6, grid_tables, leep_table
from .load import (
    cell_key,
    describe_chain,
    find_metrics,
    find_row,
    finetune_epochs,
    leep_network,
    load_results,
    load_stl_n_top1,
    seed_groups,
)
from .plots import save_leep_plot, save_roc
from .recipes import recipe_table
from .render import build_tables, splice_block, splice_readme, write_tables
from .runs import probe_table, runs_table, seed_table, threshold_table
from .stats import (
    SEED_MARK,
    SEED_NOTE,
    PairedDifferences,
    aligned_probs,
    image_keys,
    match_rows,
    paired_difference,
    seed_paired,
)

__all__ = [
    "METHOD_NAMES",
    "PAPER_T1",
    "PAPER_T2",
    "PAPER_T3",
    "PAPER_T5",
    "PAPER_T6",
    "PairedDifferences",
    "SEED_MARK",
    "SEED_NOTE",
    "STAGE_NAMES",
    "VARIANT",
    "aligned_probs",
    "build_tables",
    "cell_key",
    "describe_chain",
    "find_metrics",
    "find_row",
    "finetune_epochs",
    "grid_tables",
    "image_keys",
    "leep_network",
    "leep_table",
    "load_results",
    "load_stl_n_top1",
    "match_rows",
    "metric_cell",
    "metric_value",
    "paired_difference",
    "probe_table",
    "recipe_table",
    "runs_table",
    "save_leep_plot",
    "save_roc",
    "seed_groups",
    "seed_paired",
    "seed_table",
    "splice_block",
    "splice_readme",
    "stage_label",
    "threshold_table",
    "variant_name",
    "write_tables",
]
