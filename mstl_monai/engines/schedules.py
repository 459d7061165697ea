# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Learning-rate schedules a stage's ``lr_schedule`` setting names."""

from __future__ import annotations

from collections.abc import Sequence

import torch

LR_SCHEDULES = ("step", "cosine")


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer,
    schedule: str = "step",
    milestones: Sequence[int] = (),
    epochs: int = 1,
    gamma: float = 0.1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The epoch-level scheduler of a training stage.

    Args:
        optimizer: the stage's optimizer.
        schedule: ``"step"`` (:class:`~torch.optim.lr_scheduler.MultiStepLR`: ``lr * gamma`` at each of
            ``milestones``) or ``"cosine"`` (:class:`~torch.optim.lr_scheduler.CosineAnnealingLR` from ``lr`` to 0 over
            ``epochs``; ``milestones`` unused).
        milestones: epochs of the step schedule.
        epochs: the stage's number of epochs (cosine's period).
        gamma: the step schedule's factor.

    Raises:
        ValueError: an unknown ``schedule`` (named, with the known ones) or ``epochs < 1`` for cosine.
    """
    if schedule == "step":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    if schedule == "cosine":
        if int(epochs) < 1:
            raise ValueError(f"lr_schedule 'cosine' needs epochs >= 1, got epochs={epochs!r}.")
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(epochs))
    raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {schedule!r}.")
