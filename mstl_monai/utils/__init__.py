# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""mstl_monai.utils: the values and keys of the settings (names, enums), their checks (settings), and the real cause
of a bundle failure as the last line of its traceback."""

from __future__ import annotations

import sys
from types import TracebackType

__all__ = ["install_cause_hook", "root_cause"]

#: messages of the exceptions MONAI's config parser wraps every failure in
_WRAPPERS = ("Failed to evaluate", "Failed to instantiate")


def root_cause(exc: BaseException) -> BaseException:
    """The exception under MONAI's generic config wrappers (``RuntimeError: Failed to evaluate ConfigExpression``,
    ``Failed to instantiate component``): the first one in the ``__cause__`` chain that is not such a wrapper."""
    seen: set[int] = set()
    while (
        isinstance(exc, RuntimeError)
        and str(exc).startswith(_WRAPPERS)
        and exc.__cause__ is not None
        and id(exc) not in seen
    ):
        seen.add(id(exc))
        exc = exc.__cause__
    return exc


def _cause_hook(previous):
    def hook(exc_type: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        previous(exc_type, exc, tb)
        cause = root_cause(exc)
        if cause is not exc:
            lines = str(cause).strip().splitlines() or [""]
            more = f" ({len(lines) - 1} more lines above)" if len(lines) > 1 else ""
            print(f"{type(cause).__name__}: {lines[0]}{more}", file=sys.stderr, flush=True)

    hook.mstl_cause_hook = True  # type: ignore[attr-defined]
    return hook


def install_cause_hook() -> None:
    """Make an uncaught failure inside a bundle config end with its real cause (one line) after the traceback.

    MONAI wraps every error raised while a config is parsed or run in ``RuntimeError: Failed to evaluate
    ConfigExpression ...``, which then is the last line a user sees. This keeps the whole traceback and adds the
    cause's own ``Type: message`` as the last line. Installed when :mod:`mstl_monai` is imported (every bundle
    config imports it), unless another program (IPython, a debugger) has set its own ``sys.excepthook``.
    """
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _cause_hook(sys.excepthook)
