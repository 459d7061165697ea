# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.visualize: Grad-CAM, non-local attention and ViT attention-rollout heatmaps, overlays, Fig. 4-style figures, box statistics."""

from __future__ import annotations

from .attention import attention_heatmap, mag_sd_heatmap
from .cam import grad_cam, minmax_normalize
from .localization import as_2d, box_area_fraction, box_bounds, heatmap_mass_in_box
from .overlay import overlay, save_explanation_figure
from .rollout import attention_rollout, rollout_attentions

__all__ = [
    "as_2d",
    "attention_heatmap",
    "attention_rollout",
    "box_area_fraction",
    "box_bounds",
    "grad_cam",
    "heatmap_mass_in_box",
    "mag_sd_heatmap",
    "minmax_normalize",
    "overlay",
    "rollout_attentions",
    "save_explanation_figure",
]
