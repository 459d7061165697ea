# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.label: serve and retrain the bundle's classifier through MONAI Label.

``prepare`` (app folders, label parsing) and ``scan`` need only the core package; ``app`` (the MONAI Label app)
and its ``datastore``, ``infers`` and ``trainers`` need the ``label`` extra, installed in its own environment by
``scripts/setup_label_env.sh``.

.. code-block:: bash

    .venv-label/bin/python -m mstl_monai.label init --app-dir apps/covid --checkpoint runs/.../finetune/models/model.pt \\
        --image-size 128 --resize-size 146
    .venv-label/bin/python -m mstl_monai.label start --app-dir apps/covid --studies /data/ct_slices --port 8000
"""

from __future__ import annotations

from .prepare import (
    DEFAULT_MODEL_NAME,
    network_config_from_state_dict,
    parse_class_label,
    prepare_app,
    save_state_dict_atomic,
)

__all__ = ["DEFAULT_MODEL_NAME", "network_config_from_state_dict", "parse_class_label", "prepare_app", "save_state_dict_atomic"]
