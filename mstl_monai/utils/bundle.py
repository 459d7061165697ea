# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Where the bundle folder is, for the code that copies or reads it (the MONAI Label app, the deploy application).

The package does not ship the bundle: an installed ``mstl_monai`` has no ``bundle/`` beside it. The folder is the
one given (an argument or a command-line option), else ``$MSTL_BUNDLE_DIR``, else ``bundle/`` in the current folder
(the root of a checkout, where the documented commands run).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BUNDLE_ENV", "find_bundle"]

#: environment variable naming the bundle folder when no folder is given
BUNDLE_ENV = "MSTL_BUNDLE_DIR"


def find_bundle(
    bundle_dir: str | os.PathLike | None = None,
    required: Sequence[str] = ("configs/inference.yaml",),
    option: str = "bundle_dir",
) -> Path:
    """The bundle folder holding every file of ``required``.

    Args:
        bundle_dir: the folder; ``None`` or ``""``: ``$MSTL_BUNDLE_DIR``, else ``./bundle``.
        required: files the caller reads, relative to the folder.
        option: how the caller's user gives the folder (e.g. ``--bundle``), named in the error.

    Raises:
        FileNotFoundError: a required file is not there; one line naming the folder, where it came from, the
            file, and the option and environment variable that give another folder.
    """
    if bundle_dir:
        root, source = Path(bundle_dir), option
    elif os.environ.get(BUNDLE_ENV):
        root, source = Path(os.environ[BUNDLE_ENV]), f"${BUNDLE_ENV}"
    else:
        root, source = Path("bundle"), f"no {option} given and ${BUNDLE_ENV} unset"
    for name in required:
        if not (root / name).is_file():
            raise FileNotFoundError(
                f"bundle folder {str(root.resolve())!r} ({source}) has no {name}: pass the bundle folder ({option}) "
                f"or set {BUNDLE_ENV}."
            )
    return root
