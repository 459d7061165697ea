# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Inferers that add mixed precision on any device (MONAI's engines only autocast on CUDA)."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from monai.inferers import Inferer

__all__ = ["AutocastInferer", "FlipTTAInferer", "resolve_amp_dtype"]


def resolve_amp_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """Turn ``"bf16"``/``"bfloat16"``/``"fp16"``/``"float16"`` (or a torch dtype) into a torch dtype."""
    if dtype is None:
        return torch.bfloat16
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}
    if dtype.lower() not in names:
        raise ValueError(f"unknown amp dtype {dtype!r}: use one of {sorted(names)}.")
    return names[dtype.lower()]


def _switch(value: Any, setting: str) -> bool:
    """``value`` as a switch: ``True``/``False`` (also numpy's); anything else, e.g. the text ``"false"`` that a
    command line gives for ``--tta false`` and that ``bool()`` would read as on, is refused naming ``setting``."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise ValueError(f"{setting} must be True or False, got {value!r} (on the command line: --{setting} True or --{setting} False).")


class AutocastInferer(Inferer):
    """Run ``network(inputs)`` under ``torch.autocast`` on the inputs' own device, return float32.

    MONAI's ``SupervisedTrainer(amp=True)`` and ``SupervisedEvaluator(amp=True)`` autocast on CUDA only; this
    inferer gives bf16 mixed precision on CPU (about 2x faster training on recent x86 CPUs) and on GPUs alike,
    for trainers and evaluators, without a gradient scaler (bf16 has float32's exponent range).

    Args:
        enabled: switch autocast on or off (off: a plain ``SimpleInferer``).
        dtype: autocast dtype, ``"bf16"`` (default) or ``"fp16"`` (fp16 is only sensible on CUDA).
        output_float: cast the output back to float32 so losses and metrics run in full precision.

    .. code-block:: python

        inferer = AutocastInferer(enabled=True)
        logits = inferer(images, net)  # bf16 compute, float32 logits
    """

    def __init__(self, enabled: bool = True, dtype: str | torch.dtype = "bf16", output_float: bool = True) -> None:
        super().__init__()
        self.enabled = _switch(enabled, "amp")
        self.dtype = resolve_amp_dtype(dtype)
        self.output_float = output_float

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return network(inputs, *args, **kwargs)
        device_type = inputs.device.type if isinstance(inputs, torch.Tensor) else "cpu"
        with torch.autocast(device_type=device_type, dtype=self.dtype):
            out = network(inputs, *args, **kwargs)
        if self.output_float and isinstance(out, torch.Tensor) and out.is_floating_point():
            out = out.float()
        return out


class FlipTTAInferer(Inferer):
    """Test-time augmentation by horizontal flip: average the class probabilities of the image and its mirror.

    Returns ``log(mean softmax)``, so the bundle's ``Activationsd(softmax=True)`` postprocessing yields exactly the
    averaged probabilities and ``argmax`` the averaged decision. With ``enabled=False`` it is the wrapped inferer.

    Args:
        inferer: the inferer that runs the network (e.g. :class:`AutocastInferer`); ``None``: call the network.
        enabled: switch the augmentation on or off (the bundle's ``tta`` setting).
        spatial_axis: the image axis to flip (1: left-right for channel-first 2D images ``(B, C, H, W)``, the
            axis the training's ``RandFlipd`` flips).
    """

    def __init__(self, inferer: Inferer | None = None, enabled: bool = True, spatial_axis: int = 1) -> None:
        super().__init__()
        self.inferer = inferer
        self.enabled = _switch(enabled, "tta")
        self.spatial_axis = int(spatial_axis)

    def _run(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.inferer is None:
            return network(inputs, *args, **kwargs)
        return self.inferer(inputs, network, *args, **kwargs)

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        out = self._run(inputs, network, *args, **kwargs)
        if not self.enabled:
            return out
        flipped = self._run(torch.flip(inputs, dims=(2 + self.spatial_axis,)), network, *args, **kwargs)
        probs = (torch.softmax(out.float(), dim=1) + torch.softmax(flipped.float(), dim=1)) / 2
        return torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
