# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The rules of scan-level diagnosis that need no network: which slices to classify, how their probabilities make
one, the interval around it, and the check of these options (see :mod:`mstl_monai.inferers.scan` for why)."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["MIN_CI_SLICES", "SCAN_OPTIONS", "aggregate_slice_probabilities", "check_scan_options", "select_lung_slices"]

#: the fewest used slices with which a bootstrap interval is given: with 1 slice every resample is that slice,
#: with 2 the top-k mean of a resample takes at most 3 values, so the "95 %" bounds say nothing
MIN_CI_SLICES = 3


def _check(name: str, value: Any, lo: float, hi: float, lo_open: bool, hi_open: bool, what: str = "") -> float:
    """``value`` as a float in the interval from ``lo`` to ``hi``, or a ValueError naming the setting and value."""
    span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a number in {span}{what}, got {value!r}.")
    v = float(value)
    if not (lo < v if lo_open else lo <= v) or not (v < hi if hi_open else v <= hi):
        raise ValueError(f"{name} must be in {span}{what}, got {value!r}.")
    return v


def _whole(name: str, value: Any, lo: int, what: str = "") -> int:
    """``value`` as an int >= ``lo``, or a ValueError naming the setting and value."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    ok = ok or (isinstance(value, float) and value.is_integer())
    if not ok or value < lo:
        raise ValueError(f"{name} must be a whole number >= {lo}{what}, got {value!r}.")
    return int(value)


#: the scan options and their ranges: a number in an interval ``(lo, hi, lo_open, hi_open)`` or a whole number
#: ``>= lo`` (``(lo,)``), with what the message adds
SCAN_OPTIONS: dict[str, tuple[tuple, str]] = {
    "min_lung_share": ((0.0, 1.0, False, False), ""),
    "min_lung_fraction": ((0.0, 1.0, False, True), ""),
    "top_fraction": ((0.0, 1.0, True, False), ""),
    "n_bootstrap": ((0,), " (0: no interval)"),
    "n_top": ((0,), ""),
    "batch_size": ((1,), ""),
    "positive_class": ((0,), ""),
}


def check_scan_options(**options: Any) -> dict[str, float | int]:
    """Check scan options (the keys of :data:`SCAN_OPTIONS`) up front, before any scan is read; returns them as
    numbers.

    Raises:
        ValueError: an option of the wrong type or out of range, one line naming it and its value
            (e.g. ``top_fraction must be in (0, 1], got 0.``), or an unknown option.
    """
    out: dict[str, float | int] = {}
    for name, value in options.items():
        if name not in SCAN_OPTIONS:
            raise ValueError(f"unknown scan option {name!r}; the options are {sorted(SCAN_OPTIONS)}.")
        rule, what = SCAN_OPTIONS[name]
        out[name] = _whole(name, value, rule[0], what) if len(rule) == 1 else _check(name, value, *rule, what)
    return out


def select_lung_slices(
    fractions: np.ndarray, found: np.ndarray | None = None, min_lung_share: float = 0.25, min_lung_fraction: float = 0.01
) -> np.ndarray:
    """The slices to classify: lung found, lung fraction >= ``min_lung_share`` x the scan's largest and
    >= ``min_lung_fraction`` (see :mod:`mstl_monai.inferers.scan` for why). Returns a bool mask (all ``False``:
    no lung).

    Raises:
        ValueError: ``min_lung_share`` outside [0, 1] or ``min_lung_fraction`` outside [0, 1).
    """
    opts = check_scan_options(min_lung_share=min_lung_share, min_lung_fraction=min_lung_fraction)
    min_lung_share, min_lung_fraction = opts["min_lung_share"], opts["min_lung_fraction"]
    f = np.asarray(fractions, dtype=float)
    ok = np.ones_like(f, dtype=bool) if found is None else np.asarray(found, dtype=bool)
    if f.size == 0 or not ok.any():
        return np.zeros_like(f, dtype=bool)
    top = float(f[ok].max())
    return ok & (f >= min_lung_share * top) & (f >= min_lung_fraction)


def _top_k_mean(p: np.ndarray, k: int) -> np.ndarray:
    """Mean of the ``k`` largest values along the last axis."""
    return np.sort(p, axis=-1)[..., -k:].mean(axis=-1)


def aggregate_slice_probabilities(
    probs: Sequence[float] | np.ndarray,
    top_fraction: float = 0.25,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """One scan probability from slice probabilities: the mean of the top ``top_fraction`` (k = ceil(fraction x n),
    at least 1; 1.0 gives the plain mean) with a percentile-bootstrap interval over the slices.

    The interval is not available (``ci_low``/``ci_high`` None, ``ci_note`` says why) with fewer than
    :data:`MIN_CI_SLICES` slices, with ``n_bootstrap`` 0, or when every slice has the same probability (no spread
    to resample): never a zero-width interval that would look like certainty.

    Returns:
        ``{"probability", "ci_low", "ci_high", "ci_note", "k", "n", "aggregation"}`` (``ci_note`` empty when the
        interval is given).

    Raises:
        ValueError: no probabilities, ``top_fraction`` outside (0, 1] or ``n_bootstrap`` not a whole number >= 0.
    """
    p = np.asarray(probs, dtype=np.float64).reshape(-1)
    if p.size == 0:
        raise ValueError("aggregate_slice_probabilities needs at least one slice probability.")
    opts = check_scan_options(top_fraction=top_fraction, n_bootstrap=n_bootstrap)
    top_fraction, n_bootstrap = opts["top_fraction"], int(opts["n_bootstrap"])
    n = p.size
    k = max(1, math.ceil(top_fraction * n))
    prob = float(_top_k_mean(p, k))
    label = f"{100 * confidence:g} % CI not available"
    lo = hi = None
    if n < MIN_CI_SLICES:
        note = f"{label} ({n} slice{'s' if n > 1 else ''} used; a bootstrap over slices needs at least {MIN_CI_SLICES})"
    elif n_bootstrap == 0:
        note = f"{label} (n_bootstrap is 0)"
    elif np.ptp(p) == 0:
        note = f"{label} (all {n} slices have the same probability: nothing to resample)"
    else:
        rng = np.random.default_rng(seed)
        boot = _top_k_mean(p[rng.integers(0, n, size=(n_bootstrap, n))], k)
        alpha = (1.0 - confidence) / 2.0
        lo, hi = (float(v) for v in np.quantile(boot, [alpha, 1.0 - alpha]))
        lo, hi = min(lo, prob), max(hi, prob)
        note = ""
        if hi <= lo:  # e.g. the top k slices all alike: every resample gives the same mean
            lo = hi = None
            note = f"{label} (all {n_bootstrap} bootstrap resamples give the same probability)"
    return {
        "probability": prob,
        "ci_low": lo,
        "ci_high": hi,
        "ci_note": note,
        "k": k,
        "n": n,
        "aggregation": f"top{k}/{n}-mean" if k < n else f"mean/{n}",
    }
