# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Command line of mstl_monai.metrics: paired comparison of two models' predictions, LEEP of a checkpoint.

.. code-block:: bash

    # is a better than b on the same test images? (one predictions.csv or run folder per seed and arm)
    python -m mstl_monai.metrics compare --a RUN_A [RUN_A_SEED1 ...] --b RUN_B [RUN_B_SEED1 ...] [--json out.json]
    # LEEP of a source checkpoint's own head on COVID19-CT (e.g. the COVIDx 3-way head of an STL-M checkpoint)
    python -m mstl_monai.metrics leep --ckpt runs/stl_m/models/model.pt --num-source-classes 3 \\
        --backbone resnet18 --n-attn 5 --image-size 128 --resize-size 146 --target-dir ../shared/data/covid-ct

``compare`` exits with code 2 and one line naming the file on a bad predictions file. The old module commands
(``python -m mstl_monai.metrics.compare``, ``python -m mstl_monai.metrics.transferability``) still run these, with a
deprecation line, for one release.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import numpy as np

__all__ = ["main"]

_COMPARE_HELP = "is model a better than model b on the same test images? Paired differences with CIs"
_LEEP_HELP = "LEEP of a source checkpoint on COVID19-CT"


def _compare_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--a", nargs="+", required=True, help="arm a: predictions.csv files or folders, one per seed")
    p.add_argument("--b", nargs="+", required=True, help="arm b: the same for the model it is compared with")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    p.add_argument("--threshold", type=float, default=0.5, help="decision threshold for accuracy, F1, sens, spec")
    p.add_argument("--json", default=None, help="also write the result to this file")


def _leep_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True)
    p.add_argument("--num-source-classes", type=int, required=True)
    p.add_argument("--backbone", default=None, help="default: the checkpoint's (its settings file), else resnet50")
    p.add_argument("--n-attn", type=int, default=None, help="default: the checkpoint's, else 0")
    p.add_argument("--in-channels", type=int, default=None, help="default: the checkpoint's, else 1")
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's, else 224")
    p.add_argument("--resize-size", type=int, default=None, help="default: the checkpoint's, else 256")
    p.add_argument("--target-dir", required=True, help="COVID19-CT folder")
    p.add_argument("--split", default="train", choices=["train", "val", "test"])
    p.add_argument("--output", default=None, help="optional JSON file for the result")


def _line(name: str, d: dict, undefined: dict[str, str]) -> str:
    if name in undefined:
        return f"{name:12s} undefined: {undefined[name]}"
    if not all(np.isfinite(d[k]) for k in ("a", "b", "value")):
        return f"{name:12s} undefined (NaN) on these images, e.g. precision when no image is predicted positive"
    return (f"{name:12s} a {100 * d['a']:5.1f}  b {100 * d['b']:5.1f}  a - b {100 * d['value']:+5.1f} "
            f"[{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]")


def _compare(args: argparse.Namespace) -> int:
    from mstl_monai.metrics.classification import METRIC_NAMES
    from mstl_monai.metrics.compare import compare_predictions
    from mstl_monai.utils.io import atomic_write, check_output_path, to_jsonable

    try:
        if args.json:
            check_output_path(args.json, "--json")
        out = compare_predictions(args.a, args.b, args.n_bootstrap, args.seed, args.threshold)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ka, kb = out["n_seeds"]
    print(f"a: {ka} seed(s), b: {kb} seed(s), {out['n']} test images; mean over seeds, 95% CI over images"
          + (" and seeds" if max(ka, kb) > 1 else "") + f" (threshold {args.threshold}):")
    for m in METRIC_NAMES:
        print(_line(m, out[m], out["undefined"]))
    if max(ka, kb) > 1:
        print("seed ensembles (mean probability over each arm's seeds):")
        for m in METRIC_NAMES:
            print(_line(m, out["ensemble"][m], out["undefined"]))
    if args.json:
        with atomic_write(args.json) as f:
            f.write(json.dumps(to_jsonable(out), indent=2) + "\n")
    return 0


def _leep(a: argparse.Namespace) -> int:
    from mstl_monai.data import covid_ct_datalist
    from mstl_monai.metrics.transferability import leep_of_checkpoint
    from mstl_monai.utils.io import atomic_write, check_output_path

    try:
        if a.output:
            check_output_path(a.output, "--output")
        dl = covid_ct_datalist(a.target_dir, a.split)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    value = leep_of_checkpoint(
        a.ckpt, a.num_source_classes, dl, a.backbone, a.n_attn, a.in_channels, a.image_size, a.resize_size
    )
    result = {"leep": value, "ckpt": a.ckpt, "n": len(dl), "split": a.split, "num_source_classes": a.num_source_classes}
    print(json.dumps(result, indent=2))
    if a.output:
        with atomic_write(a.output) as f:
            json.dump(result, f, indent=2)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mstl_monai.metrics compare|leep ...``: the exit code."""
    p = argparse.ArgumentParser(prog="python -m mstl_monai.metrics", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True)
    _compare_args(sub.add_parser("compare", help=_COMPARE_HELP, description=_COMPARE_HELP, allow_abbrev=False))
    _leep_args(sub.add_parser("leep", help=_LEEP_HELP, description=_LEEP_HELP, allow_abbrev=False))
    args = p.parse_args(argv)
    return _compare(args) if args.cmd == "compare" else _leep(args)


if __name__ == "__main__":
    sys.exit(main())
