# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Cost of the ViT backbones beside ResNet-18 at the CPU recipe's input size, in one run.

ViT-Tiny/16, ViT-Small/16 and ResNet-18 as the stages build them (1-channel CT input, 2 classes), at 128x128 by
default: parameters, multiply-adds, training images/s (forward + backward + SGD step) and inference images/s
(eval, ``inference_mode``) in bfloat16 autocast, and the peak resident memory of each phase. Each network runs in a
fresh subprocess with one intra-op thread (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``) so its memory is
its own; the peak is VmHWM (reset before the phase) on Linux, ``getrusage`` elsewhere. Then the ratios to ResNet-18.

.. code-block:: bash

    python scripts/benchmark_vit.py                  # batch 16, 2 warm-up + 5 timed iterations per phase
    python scripts/benchmark_vit.py --quick          # batch 4, 1 + 2 iterations
    python scripts/benchmark_vit.py --size 224 --networks vit_small resnet18
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

#: (label, build_network name) in print order; ResNet-18 is the reference of the ratios
NETWORKS = [("ViT-Ti/16", "vit_tiny"), ("ViT-S/16", "vit_small"), ("R-18", "resnet18")]
REFERENCE = "R-18"


def run_worker(cfg: dict) -> dict:
    """Measure one network: parameters, MACs, inference then training speed and peak memory."""
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from mstl_monai.networks import build_network
    from mstl_monai.networks import count_macs, count_parameters

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from benchmark_networks import _peak_rss_mib, _reset_peak_rss, _rss_mib

    torch.set_num_threads(1)
    torch.manual_seed(0)
    size, batch = cfg["size"], cfg["batch"]
    net = build_network(cfg["name"], n_input_channels=1, num_classes=2, dropout=0.2, img_size=size)
    params, macs = count_parameters(net), count_macs(net, (1, 1, size, size))
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, 2, (batch,))
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-5)
    start = _rss_mib()

    def infer_step():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            net(x)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    result = {"label": cfg["label"], "params": params, "macs": macs}
    for phase, step, mode in (("infer", infer_step, False), ("train", train_step, True)):
        net.train(mode)
        _reset_peak_rss()
        for _ in range(cfg["warmup"]):
            step()
        t0 = time.perf_counter()
        for _ in range(cfg["iters"]):
            step()
        result[f"{phase}_img_s"] = cfg["iters"] * batch / (time.perf_counter() - t0)
        result[f"{phase}_peak_mib"] = _peak_rss_mib()
        result[f"{phase}_extra_mib"] = result[f"{phase}_peak_mib"] - start
    return result


def _measure(cfg: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker for {cfg['label']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=128, help="input size (the CPU recipe's 128)")
    p.add_argument("--quick", action="store_true", help="batch 4, 1 warm-up and 2 timed iterations")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 16, 4 with --quick)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per phase (default 5, 2 quick)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations per phase (default 2, 1 quick)")
    p.add_argument("--networks", nargs="+", default=[n for _, n in NETWORKS], choices=[n for _, n in NETWORKS])
    p.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker is not None:
        print(json.dumps(run_worker(json.loads(a.worker))), flush=True)
        return 0

    import torch

    batch = a.batch or (4 if a.quick else 16)
    iters = a.iters or (2 if a.quick else 5)
    warmup = a.warmup if a.warmup is not None else (1 if a.quick else 2)
    print(
        f"torch {torch.__version__}, CPU, 1 thread per network (OMP_NUM_THREADS=1), bf16 autocast; "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); input 1x{a.size}x{a.size}, "
        f"2 classes, batch {batch}, {warmup} warm-up + {iters} timed iterations per phase"
    )
    results = {}
    for label, name in NETWORKS:
        if name not in a.networks:
            continue
        cfg = {"label": label, "name": name, "size": a.size, "batch": batch, "iters": iters, "warmup": warmup}
        results[label] = _measure(cfg)

    print("\n| network   | params (M) | MACs (G) | train img/s | infer img/s | peak RSS train MiB | peak RSS infer MiB |")
    print("|-----------|-----------:|---------:|------------:|------------:|-------------------:|-------------------:|")
    for label, r in results.items():
        print(
            f"| {label:<9} | {r['params'] / 1e6:>10.2f} | {r['macs'] / 1e9:>8.3f} | {r['train_img_s']:>11.2f} "
            f"| {r['infer_img_s']:>11.2f} | {r['train_peak_mib']:>18.0f} | {r['infer_peak_mib']:>18.0f} |"
        )
    ref = results.get(REFERENCE)
    if ref is not None and len(results) > 1:
        print(f"\nRatios to {REFERENCE} (time = 1 / images per second; memory = peak RSS above the set-up)")
        print("| network   | params | MACs  | train time | infer time | train extra mem | infer extra mem |")
        print("|-----------|-------:|------:|-----------:|-----------:|----------------:|----------------:|")
        for label, r in results.items():
            if label == REFERENCE:
                continue

            def ratio(k: str) -> float:
                return r[k] / ref[k] if ref[k] else float("nan")

            print(
                f"| {label:<9} | {ratio('params'):>5.2f}x | {ratio('macs'):>4.2f}x "
                f"| {ref['train_img_s'] / r['train_img_s']:>9.2f}x | {ref['infer_img_s'] / r['infer_img_s']:>9.2f}x "
                f"| {ratio('train_extra_mib'):>14.2f}x | {ratio('infer_extra_mib'):>14.2f}x |"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
