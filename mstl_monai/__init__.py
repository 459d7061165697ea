# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl-monai: multi-stage attentive transfer learning (Liu & Ji 2021) as a MONAI plugin."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__"]

from mstl_monai.utils import install_cause_hook as _install_cause_hook  # noqa: E402

_install_cause_hook()  # a bundle failure ends with its real cause, not MONAI's "Failed to evaluate ConfigExpression"
