# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Benchmark of the paper's networks: parameters, multiply-adds, training/inference images/s and peak memory.

Measures, in one run, ResNet-18 and the six paper networks (ResNet-50/101 x {baseline, +1 ATTN, +5 ATTNs}) at
224x224 in float32 and in bfloat16 autocast, then prints the cost of 1 and 5 non-local blocks relative to the
baseline. Each (network, dtype) runs in a fresh subprocess so that its memory is its own; the peak of each phase
is the peak resident set size of that process on CPU (VmHWM, reset before the phase) and
``torch.cuda.max_memory_allocated`` on CUDA; "extra" is that peak minus the memory in use once the network, its
optimizer and the batch exist.

Usage::

    python scripts/benchmark_networks.py --quick              # batch 4, few iterations (minutes on 2 cores)
    python scripts/benchmark_networks.py > bench.txt 2>&1     # batch 16 (long on a small CPU)
    python scripts/benchmark_networks.py --threads 1          # a CPU shared with other jobs
    python scripts/benchmark_networks.py --device cuda --batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import torch

from mstl_monai.networks import count_macs, count_parameters
from mstl_monai.networks.nets import ATTENTIVE_RESNETS

__all__ = ["NETWORKS", "main"]

#: (label, factory name, n_attn) in print order
NETWORKS = [
    ("R-18", "resnet18", 0),
    ("R-50", "resnet50", 0),
    ("R-50 +1", "resnet50", 1),
    ("R-50 +5", "resnet50", 5),
    ("R-101", "resnet101", 0),
    ("R-101 +1", "resnet101", 1),
    ("R-101 +5", "resnet101", 5),
]
DTYPES = {"fp32": None, "bf16": torch.bfloat16}


def _status_mib(field: str) -> float | None:
    """A memory field of /proc/self/status (Linux) in MiB, ``None`` when unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _rss_mib() -> float:
    """Current resident set size."""
    rss = _status_mib("VmRSS")
    return rss if rss is not None else _peak_rss_mib()


def _reset_peak_rss() -> bool:
    """Reset the peak resident set size (VmHWM) of this process (Linux >= 4.0); False when not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    """Peak resident set size: VmHWM (resettable, reset by exec), else getrusage (which survives exec)."""
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        _reset_peak_rss()


def _peak(device: torch.device, start_mib: float) -> tuple[float, float]:
    """(peak MiB since the last reset, the same above the memory in use after set-up)."""
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        return peak, peak - start_mib
    peak = _peak_rss_mib()
    return peak, peak - start_mib


def run_worker(cfg: dict) -> dict:
    """Measure one (network, dtype): inference then training, each with its own peak memory."""
    device = torch.device(cfg["device"])
    if cfg.get("threads"):
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    net = ATTENTIVE_RESNETS[cfg["factory"]](n_attn=cfg["n_attn"], num_classes=1000).to(device)
    x = torch.randn(cfg["batch"], 3, cfg["size"], cfg["size"], device=device)
    y = torch.randint(0, 1000, (cfg["batch"],), device=device)
    dtype = DTYPES[cfg["dtype"]]
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None)

    start = torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else _rss_mib()

    def infer_step():
        with torch.inference_mode(), autocast():
            net(x)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with autocast():
            loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    result = {k: cfg[k] for k in ("label", "dtype", "batch", "size")}
    for phase, step, mode in (("infer", infer_step, False), ("train", train_step, True)):
        net.train(mode)
        _reset_peak(device)
        for _ in range(cfg["warmup"]):
            step()
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(cfg["iters"]):
            step()
        _sync(device)
        elapsed = time.perf_counter() - t0
        result[f"{phase}_img_s"] = cfg["iters"] * cfg["batch"] / elapsed
        result[f"{phase}_peak_mib"], result[f"{phase}_extra_mib"] = _peak(device, start)
    return result


def _measure(cfg: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(cfg)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark worker for {cfg['label']} {cfg['dtype']} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1])


def complexity_table(size: int) -> dict[str, tuple[int, int]]:
    """Parameters and multiply-adds at ``size`` for every network of ``NETWORKS``; prints the table."""
    out = {}
    print(f"\nParameters and multiply-adds at {size}x{size} (1000 classes; MACs of convolutions, matmuls, attention)")
    print(f"| {'network':<9} | {'params (M)':>10} | {'MACs (G)':>8} | {'params vs base':>14} | {'MACs vs base':>12} |")
    print(f"|{'-' * 11}|{'-' * 12}|{'-' * 10}|{'-' * 16}|{'-' * 14}|")
    for label, factory, n_attn in NETWORKS:
        net = ATTENTIVE_RESNETS[factory](n_attn=n_attn, num_classes=1000)
        params, macs = count_parameters(net), count_macs(net, (1, 3, size, size))
        out[label] = (params, macs)
        base = out.get(label.split(" ")[0], (params, macs))
        print(
            f"| {label:<9} | {params / 1e6:>10.2f} | {macs / 1e9:>8.2f} | {100 * (params / base[0] - 1):>+13.1f}% "
            f"| {100 * (macs / base[1] - 1):>+11.1f}% |",
            flush=True,
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 4, 1 warm-up and 2 timed iterations")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 16, 4 with --quick)")
    parser.add_argument("--iters", type=int, default=None, help="timed iterations per phase (default 5, 2 quick)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up iterations per phase (default 2, 1 quick)")
    parser.add_argument("--size", type=int, default=224, help="input size")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    parser.add_argument("--networks", nargs="+", default=[n[0] for n in NETWORKS], help="labels, e.g. 'R-50 +5'")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads per worker (default: torch's); on a CPU shared with other jobs, 1 avoids OpenMP "
        "barrier stalls behind a busy core",
    )
    parser.add_argument("--json", default=None, help="also write the measurements to this JSON file")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return

    if args.threads:
        torch.set_num_threads(args.threads)
    batch = args.batch or (4 if args.quick else 16)
    iters = args.iters or (2 if args.quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    unknown = set(args.networks) - {n[0] for n in NETWORKS}
    if unknown:
        parser.error(f"unknown networks {sorted(unknown)}; choose from {[n[0] for n in NETWORKS]}")
    networks = [n for n in NETWORKS if n[0] in args.networks]

    print(
        f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs ({platform.processor() or platform.machine()}); "
        f"batch {batch}, {warmup} warm-up + {iters} timed iterations per phase, input {args.size}x{args.size}"
    )
    t_start = time.perf_counter()
    complexity = complexity_table(args.size)

    print("\nSpeed and memory (train = forward + backward + SGD step; infer = eval, inference_mode)")
    mem = "peak MiB" if args.device.startswith("cuda") else "peak RSS MiB"
    print(
        f"| {'network':<9} | {'dtype':<5} | {'train img/s':>11} | {'infer img/s':>11} | {mem + ' train':>18} "
        f"| {mem + ' infer':>18} | {'train extra MiB':>15} |"
    )
    print(f"|{'-' * 11}|{'-' * 7}|{'-' * 13}|{'-' * 13}|{'-' * 20}|{'-' * 20}|{'-' * 17}|")
    results: dict[tuple[str, str], dict] = {}
    for label, factory, n_attn in networks:
        for dtype in args.dtypes:
            cfg = {"label": label, "factory": factory, "n_attn": n_attn, "dtype": dtype, "batch": batch,
                   "size": args.size, "iters": iters, "warmup": warmup, "device": args.device,
                   "threads": args.threads}
            r = _measure(cfg)
            results[(label, dtype)] = r
            print(
                f"| {label:<9} | {dtype:<5} | {r['train_img_s']:>11.2f} | {r['infer_img_s']:>11.2f} "
                f"| {r['train_peak_mib']:>18.0f} | {r['infer_peak_mib']:>18.0f} | {r['train_extra_mib']:>15.0f} |",
                flush=True,
            )

    print("\nCost of the non-local blocks relative to the baseline (same run; time = 1 / images per second)")
    print(
        f"| {'network':<9} | {'dtype':<5} | {'train time':>10} | {'infer time':>10} | {'train peak mem':>14} "
        f"| {'MACs':>7} | {'params':>7} |"
    )
    print(f"|{'-' * 11}|{'-' * 7}|{'-' * 12}|{'-' * 12}|{'-' * 16}|{'-' * 9}|{'-' * 9}|")
    for label, _, n_attn in networks:
        base_label = label.split(" ")[0]
        if n_attn == 0:
            continue
        for dtype in args.dtypes:
            r, b = results.get((label, dtype)), results.get((base_label, dtype))
            if r is None or b is None:
                continue
            print(
                f"| {label:<9} | {dtype:<5} | {b['train_img_s'] / r['train_img_s']:>9.2f}x "
                f"| {b['infer_img_s'] / r['infer_img_s']:>9.2f}x "
                f"| {r['train_peak_mib'] - b['train_peak_mib']:>+10.0f} MiB "
                f"| {complexity[label][1] / complexity[base_label][1]:>6.2f}x "
                f"| {complexity[label][0] / complexity[base_label][0]:>6.2f}x |"
            )
    print(f"\ntotal benchmark time {time.perf_counter() - t_start:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"complexity": {k: {"params": p, "macs": m} for k, (p, m) in complexity.items()},
                 "speed": [results[k] for k in results]},
                f,
                indent=2,
            )


if __name__ == "__main__":
    main()
