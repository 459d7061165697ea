#!/usr/bin/env python
# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""STL-N's learning curve: top-1 per epoch on the held-out part of the *train* images (the split that chooses the
checkpoint and the schedule) beside the training top-1, read from the stage's TensorBoard event files.

    .venv/bin/python scripts/stl_n_curve.py --run_dir runs/stl_n_r18_long --out results/cpu_scale/stl_n_r18_curve

writes ``<out>.csv`` (epoch, train_top1, heldout_top1) and ``<out>.png``, and prints the best epoch and whether the
held-out top-1 was still rising over the last ``--window`` epochs (a least-squares slope per epoch).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def read_scalars(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(run_dir.rglob("events.out.tfevents.*"))
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir}")
    out: dict[str, dict[int, float]] = {}
    for f in files:  # a resumed run writes new files; later files win for the same epoch
        ea = EventAccumulator(str(f))
        ea.Reload()
        for tag in ea.Tags()["scalars"]:
            out.setdefault(tag, {}).update({int(e.step): float(e.value) for e in ea.Scalars(tag)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--run_dir", required=True)
    ap.add_argument("--out", required=True, help="output path without extension")
    ap.add_argument("--window", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        sc = read_scalars(Path(args.run_dir))
    except FileNotFoundError as e:
        print(f"stl_n_curve: {e}", file=sys.stderr)
        return 2
    if "val_top1" not in sc:
        print(f"stl_n_curve: no val_top1 in the event files of {args.run_dir} (is it an STL-N run?)", file=sys.stderr)
        return 2
    epochs = sorted(sc["val_top1"])
    train = sc.get("train_top1", {})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "train_top1", "heldout_top1"])
        for e in epochs:
            w.writerow([e, f"{train[e]:.4f}" if e in train else "", f"{sc['val_top1'][e]:.4f}"])
    held = np.array([sc["val_top1"][e] for e in epochs])
    best = int(epochs[int(held.argmax())])
    tail = np.array(epochs[-args.window :], dtype=float)
    slope = float(np.polyfit(tail, held[-args.window :], 1)[0]) if tail.size >= 2 else float("nan")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ax.plot(epochs, 100 * held, "o-", ms=3, label="held-out train images (5 %)")
    if train:
        ax.plot(sorted(train), [100 * train[e] for e in sorted(train)], "-", alpha=0.6, label="training (augmented)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("STL-N: ResNet-18 on Tiny ImageNet (202 classes, 64 px)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=120)
    print(
        f"{len(epochs)} epochs; held-out top-1 {100 * held[-1]:.1f} % at the last epoch, best {100 * held.max():.1f} % at "
        f"epoch {best}; slope over the last {min(args.window, len(epochs))} epochs {100 * slope:+.2f} points/epoch "
        f"({'still rising' if slope > 0.1 / 100 else 'flat'}); wrote {out.with_suffix('.csv')} and {out.with_suffix('.png')}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
