# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mixup (Zhang et al. 2018) for ``SupervisedTrainer`` as a ``prepare_batch``: the finetune's ``mixup_alpha`` setting.

MONAI's :class:`monai.transforms.MixUp` mixes a batch of a fixed size with its own ``RandomState``; a training
loader's last batch is smaller and a resumed run must draw the same mixes as an unbroken one, so this subclass
samples the weights and the pairing per batch from torch's global generator (reseeded each epoch by
:class:`~mstl_monai.handlers.training.EpochSeedHandler`) and mixes on the batch's own device. The labels become soft
one-hot targets, which ``torch.nn.CrossEntropyLoss`` takes as class probabilities.
"""

from __future__ import annotations

from typing import Any

import torch
from monai.engines.utils import PrepareBatch, default_prepare_batch
from monai.transforms import MixUp
from monai.utils import CommonKeys

__all__ = ["BatchMixUp", "MixUpPrepareBatch", "mixup_label_postprocessing"]


class BatchMixUp(MixUp):
    """:class:`monai.transforms.MixUp` for batches of any size, on any device, drawing from torch's generator.

    Each sample ``i`` becomes ``w_i * x_i + (1 - w_i) * x_perm(i)`` with ``w_i ~ Beta(alpha, alpha)`` and ``perm`` a
    random permutation of the batch (as in MONAI's ``MixUp``); labels (one-hot) are mixed with the same weights.

    Args:
        alpha: Beta distribution parameter (> 0); 0.2-0.4 is usual for classification.
    """

    def __init__(self, alpha: float = 0.2) -> None:
        super().__init__(batch_size=1, alpha=alpha)

    def randomize(self, data: torch.Tensor | None = None) -> None:
        if data is None:
            raise ValueError("BatchMixUp.randomize needs the batch to size the draw.")
        n = int(data.shape[0])
        a = torch.tensor(float(self.alpha))
        weight = torch.distributions.Beta(a, a).sample((n,))
        self.batch_size = n
        self._params = (weight, torch.randperm(n), [])

    def apply(self, data: torch.Tensor) -> torch.Tensor:
        weight, perm, _ = self._params
        if len(weight) != data.shape[0]:
            raise ValueError(f"BatchMixUp: drawn for a batch of {len(weight)}, got {data.shape[0]}.")
        w = weight.to(device=data.device, dtype=data.dtype if data.is_floating_point() else torch.float32)
        w = w[(Ellipsis,) + (None,) * (data.ndim - 1)]
        return w * data + (1 - w) * data[perm.to(data.device)]

    def __call__(self, data: torch.Tensor, labels: torch.Tensor | None = None, randomize: bool = True):
        if randomize:
            self.randomize(data)
        if labels is None:
            return self.apply(data)
        return self.apply(data), self.apply(labels)


class MixUpPrepareBatch(PrepareBatch):
    """``prepare_batch`` for MONAI's ``SupervisedTrainer``: move the batch to the device, then mix it up.

    The trainer then sees ``(mixed images, soft one-hot labels)``; with ``alpha <= 0`` it is MONAI's
    ``default_prepare_batch`` unchanged (integer labels).

    Args:
        num_classes: number of classes of the integer labels.
        alpha: mixup Beta parameter; ``<= 0`` switches mixup off.
        prob: probability that a batch is mixed (1.0: every batch).

    .. code-block:: yaml

        prepare_batch: {_target_: mstl_monai.engines.MixUpPrepareBatch, num_classes: 2, alpha: "@mixup_alpha"}
    """

    def __init__(self, num_classes: int, alpha: float = 0.0, prob: float = 1.0) -> None:
        if alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0 switches mixup off), got {alpha!r}.")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"mixup prob must lie in [0, 1], got {prob!r}.")
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.prob = float(prob)
        self.mixer = BatchMixUp(alpha=self.alpha) if self.alpha > 0 else None

    def __call__(
        self, batchdata: dict[str, torch.Tensor], device: str | torch.device | None = None,
        non_blocking: bool = False, **kwargs: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = default_prepare_batch(batchdata, device, non_blocking, **kwargs)
        if self.mixer is None:
            return images, labels
        soft = torch.nn.functional.one_hot(labels.long().view(-1), self.num_classes).to(images.dtype)
        if self.prob < 1.0 and float(torch.rand(())) >= self.prob:
            return images, soft
        return self.mixer(images, soft)


def mixup_label_postprocessing(mixup_alpha: float, num_classes: int) -> list:
    """The training postprocessing of ``pred_label``/``label`` for metrics: with mixup the label is soft (one row
    of class weights per image) and its dominant class stands for it, else the integer label is one-hot encoded."""
    from monai.transforms import AsDiscreted

    return [AsDiscreted(keys=[CommonKeys.PRED + "_label", CommonKeys.LABEL], argmax=[True, float(mixup_alpha) > 0],
                        to_onehot=num_classes)]
