# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Pipeline runner (``mstl-pipeline``): run chains of bundle stages in order, passing each stage's best checkpoint to
the next; a finished stage counts as done only for the exact settings it ran with.

.. code-block:: bash

    mstl-pipeline --config configs/cpu_scale.yaml                 # every chain of the config
    mstl-pipeline --config configs/cpu_scale.yaml --chains r18_base_stln40_stlm_sstl_ours_robust
    mstl-pipeline --config configs/cpu_scale.yaml --dry-run       # print the commands only

A pipeline config is code, like a bundle config: its settings go to the bundle, which evaluates ``$...`` values as
Python. Run only configs you trust. Chains, the grid, seeds, when a stage is done, locks and publishing: see
``docs/PIPELINE.md``.
"""

from __future__ import annotations

from mstl_monai.utils.names import ATTN_COUNTS, BACKBONES, SSTL_METHODS

from .cli import main
from .config import (
    GRID_STAGES,
    STAGES,
    expand_grid,
    expand_seeds,
    grid_chain_name,
    load_pipeline_config,
    parse_stage_set,
    skipped_lines,
)
from .lock import StageLock, StageLockedError
from .plan import check_chains, folder_conflicts, plan_chain
from .publish import recover, write_folder
from .run import (
    ADDED_STAGE_DEFAULTS,
    SPEC_VERSION,
    StageProgress,
    _cmd_epochs,  # noqa: F401  (used by the tests)
    _hms,  # noqa: F401
    chain_record,
    chain_spec,
    results_match,
    results_up_to_date,
    run_chain,
    run_dir_results,
)
from .summary import summary_table

__all__ = [
    "STAGES",
    "GRID_STAGES",
    "ADDED_STAGE_DEFAULTS",
    "SPEC_VERSION",
    "StageProgress",
    "SSTL_METHODS",
    "ATTN_COUNTS",
    "BACKBONES",
    "load_pipeline_config",
    "expand_grid",
    "expand_seeds",
    "parse_stage_set",
    "grid_chain_name",
    "skipped_lines",
    "plan_chain",
    "chain_spec",
    "chain_record",
    "check_chains",
    "folder_conflicts",
    "results_match",
    "results_up_to_date",
    "StageLock",
    "StageLockedError",
    "write_folder",
    "recover",
    "run_dir_results",
    "run_chain",
    "summary_table",
    "main",
]
