# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Is model a better than model b on the same test images? Paired differences with CIs, over seeds when given.

Each arm is one or more ``predictions.csv`` files written by the bundle's evaluation (or the folders that hold one,
e.g. ``results/cpu_scale/<chain>``): one file per seed. The images of every file must be the same (matched by name
and label, in any order). The difference a - b of accuracy, F1, AUC, sensitivity and specificity comes with a 95%
CI from :func:`~mstl_monai.metrics.seed_paired_difference`: a bootstrap over the test images, paired between the
arms, and over each arm's seeds when it has several (with one file per arm it is the plain paired bootstrap). The
seed ensembles (mean probability over each arm's seeds) are compared too when an arm has several seeds.

.. code-block:: bash

    # MAG-SD vs plain finetune of the same chain, seeds 0 and 1 of each
    python -m mstl_monai.metrics.compare \\
        --a results/cpu_scale/r18_base_stln_stlm_sstl_ours_robust_magsd results/cpu_scale/r18_base_stln_stlm_sstl_ours_robust_magsd_ft_s1 \\
        --b results/cpu_scale/r18_base_stln_stlm_sstl_ours_robust results/cpu_scale/r18_base_stln_stlm_sstl_ours_robust_ft_s1
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .classification import METRIC_NAMES
from .io import atomic_write, read_predictions_csv, to_jsonable
from .seeds import seed_paired_difference

__all__ = ["compare_predictions", "load_arm"]


def _predictions_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / "predictions.csv"
    if not p.is_file():
        raise FileNotFoundError(f"no predictions file at {p} (give a predictions.csv or the folder holding one).")
    return p


def load_arm(paths: list[str | Path], positive: int = 1) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """``(images, y (n,), probs (K, n))`` of one arm: the positive-class probability of each of its ``K`` files,
    rows ordered as the first file's ``(name, label)`` pairs.

    Raises:
        ValueError: when a file's images (name and label) differ from the first file's, naming both files.
    """
    if not paths:
        raise ValueError("an arm needs at least one predictions file.")
    files = [_predictions_file(p) for p in paths]
    names, y, probs, _ = read_predictions_csv(files[0])
    keys = [(str(n), int(t)) for n, t in zip(names, y)]
    if len(set(keys)) != len(keys):
        raise ValueError(f"{files[0]} lists an image twice; cannot pair images.")
    out = [probs[:, positive]]
    for f in files[1:]:
        out.append(_aligned(f, keys, files[0], positive))
    return keys, np.asarray(y, dtype=np.int64), np.stack(out)


def _aligned(path: Path, keys: list[tuple[str, int]], first: Path, positive: int) -> np.ndarray:
    names, y, probs, _ = read_predictions_csv(path)
    pos = {(str(n), int(t)): i for i, (n, t) in enumerate(zip(names, y))}
    if set(pos) != set(keys):
        extra, missing = sorted(set(pos) - set(keys))[:3], sorted(set(keys) - set(pos))[:3]
        raise ValueError(f"{path} holds other images than {first} (only in it: {extra}; missing: {missing}); "
                         "compare predictions of the same test split.")
    return probs[[pos[k] for k in keys], positive]


def compare_predictions(a: list[str | Path], b: list[str | Path], n_bootstrap: int = 1000, seed: int = 0,
                        threshold: float = 0.5) -> dict:
    """:func:`~mstl_monai.metrics.seed_paired_difference` of arm ``a`` minus arm ``b`` read from predictions files
    (one per seed), with the files recorded under ``"files"``."""
    keys, y, pa = load_arm(a)
    first = _predictions_file(a[0])
    pb = np.stack([_aligned(_predictions_file(f), keys, first, 1) for f in b])
    out = seed_paired_difference(y, pa, pb, n_bootstrap=n_bootstrap, seed=seed, threshold=threshold)
    out["files"] = {arm: [str(_predictions_file(f)) for f in files] for arm, files in (("a", a), ("b", b))}
    return out


def _line(name: str, d: dict) -> str:
    return (f"{name:12s} a {100 * d['a']:5.1f}  b {100 * d['b']:5.1f}  a - b {100 * d['value']:+5.1f} "
            f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mstl_monai.metrics.compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--a", nargs="+", required=True, help="arm a: predictions.csv files or folders, one per seed")
    p.add_argument("--b", nargs="+", required=True, help="arm b: the same for the model it is compared with")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold for accuracy, F1, sens, spec")
    p.add_argument("--json", default=None, help="also write the result to this file")
    args = p.parse_args(argv)
    try:
        out = compare_predictions(args.a, args.b, args.n_bootstrap, args.seed, args.threshold)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ka, kb = out["n_seeds"]
    print(f"a: {ka} seed(s), b: {kb} seed(s), {out['n']} test images; mean over seeds, 95% CI over images"
          + (" and seeds" if max(ka, kb) > 1 else "") + f" (threshold {args.threshold}):")
    for m in METRIC_NAMES:
        print(_line(m, out[m]))
    if max(ka, kb) > 1:
        print("seed ensembles (mean probability over each arm's seeds):")
        for m in METRIC_NAMES:
            print(_line(m, out["ensemble"][m]))
    if args.json:
        with atomic_write(args.json) as f:
            f.write(json.dumps(to_jsonable(out), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
