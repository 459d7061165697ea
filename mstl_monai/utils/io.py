# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Atomic file writing and conversion of numpy/torch values to plain JSON types."""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from monai.config import PathLike

__all__ = ["atomic_write", "check_output_path", "to_jsonable"]


def check_output_path(path: PathLike, what: str, folder: bool = False) -> Path:
    """Refuse, before any work, an output path that cannot be written: a file path that is a folder, a folder path
    that is a file, or a path under a file. Missing folders are fine (the writers create them).

    Args:
        path: the output file (or folder, with ``folder=True``).
        what: how the user gave it, for the message (e.g. ``"--json"``, ``"output_dir"``).
        folder: ``path`` is a folder to write into.

    Returns:
        ``path`` as a ``Path``.

    Raises:
        ValueError: one line naming ``what``, the path and why.
    """
    p = Path(path)
    if folder and p.exists() and not p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a file, not a folder: give a folder path.")
    if not folder and p.is_dir():
        raise ValueError(f"{what} {str(p)!r} is a folder: give a file path.")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {str(p)!r}: {str(parent)!r} is a file, not a folder.")
            break
    return p


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "w", **open_kwargs: Any) -> Iterator[IO]:
    """Open a temporary file beside ``path`` and move it onto ``path`` with ``os.replace`` on success.

    Readers never see a half-written file; on an exception the temporary file is removed and ``path`` is
    left as it was. Missing parent folders are created.

    Args:
        path: the final file.
        mode: ``"w"`` (text) or ``"wb"`` (binary).
        open_kwargs: passed to ``open`` (e.g. ``newline=""`` for csv).

    Raises:
        ValueError: ``mode`` is neither ``"w"`` nor ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "w":
        open_kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; give the usual permissions of a new file
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths, tuples and sets to plain JSON types.

    Non-finite floats (``nan``, ``inf``) become ``None`` so that the output is strict JSON.

    Raises:
        TypeError: a value of another type (one line naming the type and the value).
    """
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"cannot write a value of type {type(obj).__name__} to JSON: {obj!r}")
