# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Ignite metric handler computing LEEP over an evaluation epoch."""

from __future__ import annotations

from collections.abc import Callable

from monai.handlers.ignite_metric import IgniteMetricHandler
from monai.handlers.utils import from_engine

from mstl_monai.metrics.leep import LEEPMetric

__all__ = ["LEEP"]


class LEEP(IgniteMetricHandler):
    """LEEP (Nguyen et al. 2020) of a source model on the target data seen during an epoch.

    Usable wherever MONAI takes an ignite metric, e.g. ``key_val_metric`` or ``additional_metrics`` of a
    ``SupervisedEvaluator`` whose network outputs the *source* head (ImageNet 1000-way, COVIDx 3-way):

    .. code-block:: python

        evaluator = SupervisedEvaluator(
            device=device, val_data_loader=loader, network=source_net,
            postprocessing=Activationsd(keys="pred", softmax=True),
            key_val_metric={"val_leep": LEEP(output_transform=from_engine(["pred", "label"]))},
        )

    Args:
        apply_softmax: apply a softmax to ``pred`` first (when the engine's ``pred`` holds logits).
        output_transform: callable extracting ``(pred, label)`` from ``engine.state.output``; ``pred`` are
            probabilities over the source classes, ``label`` target class indices or one-hot vectors.
            Defaults to ``from_engine(["pred", "label"])``.
    """

    def __init__(self, apply_softmax: bool = False, output_transform: Callable | None = None) -> None:
        if output_transform is None:
            output_transform = from_engine(["pred", "label"])
        super().__init__(
            metric_fn=LEEPMetric(apply_softmax=apply_softmax), output_transform=output_transform, save_details=False
        )
