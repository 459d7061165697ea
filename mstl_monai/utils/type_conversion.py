# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Array-like inputs (numpy, torch, sequences) to numpy arrays for the metric and plotting code."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from monai.utils import convert_to_numpy

__all__ = ["to_numpy"]


def to_numpy(x: Any, name: str = "input") -> np.ndarray:
    """Convert a numpy array, torch tensor (any device, with or without grad) or nested sequence to a numpy array.

    MONAI's :func:`monai.utils.convert_to_numpy` does the conversion; torch floating tensors (``bfloat16`` and
    ``float16`` included, which numpy cannot hold) become ``float64`` and the other tensors ``int64``, so
    sums and logs over them run in double precision.

    Args:
        x: the value.
        name: the argument's name, used in the error message.

    Raises:
        TypeError: ``x`` cannot be read as an array (one line naming ``name`` and the type).
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().to(torch.float64 if x.is_floating_point() else torch.int64)
    try:
        out = convert_to_numpy(x, wrap_sequence=True)
        return out if isinstance(out, np.ndarray) else np.asarray(out)
    except Exception as e:
        raise TypeError(f"{name} must be array-like (numpy array, torch tensor or sequence), got {type(x)}.") from e
