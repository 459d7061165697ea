# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Cost of a MAG-SD finetune epoch beside the plain one, measured in one run.

Builds the bundle's finetune trainer twice from ``bundle/configs/train.yaml`` + ``cpu.yaml`` (R-18 +5 ATTN, 128 px,
batch 32, bf16 autocast by default), once with ``train.yaml`` alone and once with ``mag_sd.yaml`` merged, on the COVID19-CT
train split, and times whole training epochs (data loading, augmentation, forward, backward, step; no validation)
in alternating rounds (plain, MAG-SD, plain, MAG-SD, ...) so that both arms see the same machine load. Prints each
epoch's seconds, the median per arm and the ratio MAG-SD / plain; ``--json`` writes them.

.. code-block:: bash

    OMP_NUM_THREADS=1 python scripts/benchmark_mag_sd.py                # 2 rounds
    OMP_NUM_THREADS=1 python scripts/benchmark_mag_sd.py --rounds 3 --json runs/mag_sd/benchmark.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def build_trainer(mag_sd: bool, args: argparse.Namespace, run_dir: str):
    from monai.bundle import ConfigParser

    configs = os.path.join(REPO, "bundle", "configs")
    parser = ConfigParser()
    names = ["train.yaml", "cpu.yaml"] + (["mag_sd.yaml"] if mag_sd else [])
    parser.read_config([os.path.join(configs, n) for n in names])
    overrides = {
        "bundle_root": os.path.join(REPO, "bundle"),
        "n_attn": args.n_attn,
        "backbone": args.backbone,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "amp": not args.fp32,
        "epochs": 10**6,
        "val_interval": 10**6,  # no validation inside the timed epochs
        "run_dir": run_dir,
        "progress": False,
    }
    if args.dataset_dir:
        overrides["dataset_dir"] = args.dataset_dir
    parser.update(overrides)
    parser.parse()
    return parser.get_parsed_content("train#trainer")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds (one epoch per arm each)")
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--n_attn", type=int, default=5)
    ap.add_argument("--image_size", type=int, default=128)
    ap.add_argument("--batch_size", type=int, default=32)
    ap.add_argument("--num_workers", type=int, default=0)
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--dataset_dir", default="", help="default: the bundle's (../shared/data/covid-ct)")
    ap.add_argument("--json", default="", help="write the measurements here")
    args = ap.parse_args()

    import torch
    from ignite.engine import Events

    sys.path.insert(0, REPO)
    torch.manual_seed(0)
    times: dict[str, list[float]] = {"plain": [], "mag_sd": []}
    with tempfile.TemporaryDirectory() as tmp:
        trainers = {arm: build_trainer(arm == "mag_sd", args, os.path.join(tmp, arm)) for arm in times}
        n_images = len(trainers["plain"].data_loader.dataset)
        for arm, trainer in trainers.items():
            stamps: dict[str, float] = {}
            trainer.add_event_handler(
                Events.EPOCH_STARTED, lambda e, s=stamps: s.__setitem__("t0", time.perf_counter())
            )
            trainer.add_event_handler(
                Events.EPOCH_COMPLETED,
                lambda e, s=stamps, a=arm: (times[a].append(time.perf_counter() - s["t0"]), e.terminate()),
            )
        for r in range(args.rounds):
            for arm, trainer in trainers.items():
                trainer.run()  # stopped after one epoch; the next call goes on with the next epoch
                print(f"round {r + 1} {arm:>6}: {times[arm][-1]:7.1f} s/epoch", flush=True)
    med = {arm: statistics.median(v) for arm, v in times.items()}
    ratio = med["mag_sd"] / med["plain"]
    setting = (
        f"{args.backbone} +{args.n_attn} ATTN, {args.image_size} px, batch {args.batch_size}, "
        f"{'fp32' if args.fp32 else 'bf16 autocast'}, {n_images} train images, {args.num_workers} loader workers, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}"
    )
    print(f"{setting}")
    print(f"plain  epoch: median {med['plain']:.1f} s ({', '.join(f'{t:.1f}' for t in times['plain'])})")
    print(f"MAG-SD epoch: median {med['mag_sd']:.1f} s ({', '.join(f'{t:.1f}' for t in times['mag_sd'])})")
    print(f"ratio MAG-SD / plain: {ratio:.2f}x")
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"setting": setting, "seconds": times, "median": med, "ratio": ratio}, f, indent=2)


if __name__ == "__main__":
    main()
