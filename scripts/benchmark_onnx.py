# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""onnxruntime against PyTorch on the CPU, in one run: output parity and slices/s of the slice classifier.

For each network (default: the main job's ResNet-18 + 5 non-local blocks and ViT-Tiny/16, both at 128 px; or
``--ckpt``): export to ONNX (dynamic batch), run the first ``--slices`` COVID19-CT test slices (half COVID, half
not; preprocessed as the bundle does) through PyTorch (float32) and onnxruntime, print the largest absolute
differences, then time both over those slices in batches of ``--batch-size`` with one thread each
(``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, onnxruntime ``intra_op_num_threads=1``). The timed passes
alternate between the runtimes (so a change in the machine's load hits both), and slices/s is the median over
passes. PyTorch is timed in float32 (the same arithmetic as onnxruntime) and as the scan pipeline runs it (bf16
autocast where the CPU has AMX/AVX512-BF16, else float32). Untrained networks have the non-local blocks'
output scale set (they are the identity at initialisation), so the attention is part of what is compared.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_onnx.py [--ckpt model.pt] [--slices 32] [--passes 5]

Result: ``results/benchmarks/onnx_cpu_<size>px.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NETWORKS = {"r18_attn5": ("resnet18", 5), "vit_tiny": ("vit_tiny", 0)}


def _untrained(backbone: str, n_attn: int, size: int):
    import torch

    from mstl_monai.networks import build_network

    torch.manual_seed(0)
    net = build_network(backbone, n_attn=n_attn, n_input_channels=1, num_classes=2, img_size=size).eval()
    for block in net.attn.values() if hasattr(net, "attn") else []:
        torch.nn.init.normal_(block.out_norm.weight, std=0.5)
        torch.nn.init.normal_(block.out_norm.bias, std=0.1)
    return net


def _time_pass(fn, x, batch: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, x.shape[0], batch):
        fn(x[i : i + batch])
    return x.shape[0] / (time.perf_counter() - t0)


def measure(name: str, net, settings: dict, x, batch: int, passes: int, tmp: Path) -> dict:
    """Parity and slices/s of one network (see the module docstring)."""
    import torch

    from mstl_monai.deploy import OnnxClassifier, export_onnx, max_abs_diff
    from mstl_monai.inferers import autocast_helps

    t0 = time.perf_counter()
    path = export_onnx(net, tmp / f"{name}.onnx", settings["image_size"], settings.get("in_channels", 1))
    export_s = time.perf_counter() - t0
    ort_net = OnnxClassifier(path, threads=1)
    diff = max_abs_diff(net, ort_net, x)
    amp = autocast_helps("cpu")

    def torch_fp32(b):
        with torch.inference_mode():
            net(b)

    def torch_scan(b):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            net(b)

    runners = {"onnxruntime": ort_net, "pytorch_fp32": torch_fp32, "pytorch_as_scan": torch_scan}
    for fn in runners.values():  # warm-up
        _time_pass(fn, x[:batch], batch)
    speed: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(passes):
        for key, fn in runners.items():
            speed[key].append(_time_pass(fn, x, batch))
    med = {k: statistics.median(v) for k, v in speed.items()}
    return {
        "network": name,
        "backbone": settings["backbone"],
        "n_attn": settings.get("n_attn", 0),
        "image_size": settings["image_size"],
        "onnx_file_mib": round(path.stat().st_size / 2**20, 2),
        "export_s": round(export_s, 2),
        "parity": diff,
        "slices_per_s": {k: round(v, 2) for k, v in med.items()},
        "slices_per_s_all_passes": {k: [round(s, 2) for s in v] for k, v in speed.items()},
        "pytorch_as_scan_autocast": "bf16" if amp else "off",
        "ratio_onnxruntime_to_pytorch_fp32": round(med["onnxruntime"] / med["pytorch_fp32"], 3),
        "ratio_onnxruntime_to_pytorch_as_scan": round(med["onnxruntime"] / med["pytorch_as_scan"], 3),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=list(NETWORKS))
    ap.add_argument("--ckpt", default=None, help="benchmark this checkpoint instead (settings from its model.pt.json)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--resize-size", type=int, default=146)
    ap.add_argument("--slices", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--passes", type=int, default=5)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "covid-ct"))
    ap.add_argument("--output", default=None, help="JSON result (default results/benchmarks/onnx_cpu_<size>px.json)")
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "scripts"))

    import onnxruntime
    import torch

    from export_onnx import test_slice_paths
    from mstl_monai.deploy import load_slices
    from mstl_monai.metrics.io import write_metrics_json

    torch.set_num_threads(1)
    paths = test_slice_paths(args.data, args.slices)
    jobs = []
    if args.ckpt:
        from mstl_monai.networks.checkpoint import load_network

        net, s = load_network(args.ckpt)
        jobs.append((Path(args.ckpt).stem, net, s, s["resize_size"]))
    else:
        for key in args.networks:
            backbone, n_attn = NETWORKS[key]
            s = {"backbone": backbone, "n_attn": n_attn, "image_size": args.image_size, "in_channels": 1}
            jobs.append((key, _untrained(backbone, n_attn, args.image_size), s, args.resize_size))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    print(f"onnxruntime {onnxruntime.__version__} vs torch {torch.__version__} on the CPU ({platform.processor() or platform.machine()}), "
          f"1 thread each, {len(paths)} COVID19-CT test slices, batch {args.batch_size}, {args.passes} alternating passes; "
          f"load average at start {load if load is None else round(load, 1)}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="mstl-onnx-bench-") as tmp:
        for name, net, s, resize in jobs:
            x = load_slices(paths, s["image_size"], resize, s.get("normalize"))
            r = measure(name, net, s, x, args.batch_size, args.passes, Path(tmp))
            rows.append(r)
            p, v = r["parity"], r["slices_per_s"]
            print(f"{name:<10} {s['image_size']} px: max |logit diff| {p['logits']:.2e} (probability {p['probabilities']:.2e}, "
                  f"argmax agrees {p['argmax_agree']}) | slices/s onnxruntime {v['onnxruntime']:.1f}, PyTorch fp32 "
                  f"{v['pytorch_fp32']:.1f}, PyTorch as the scan runs ({r['pytorch_as_scan_autocast']}) {v['pytorch_as_scan']:.1f} "
                  f"| ratio onnxruntime/PyTorch fp32 {r['ratio_onnxruntime_to_pytorch_fp32']:.2f}x, "
                  f"/as scan {r['ratio_onnxruntime_to_pytorch_as_scan']:.2f}x", flush=True)
    out = Path(args.output or REPO / "results" / "benchmarks" / f"onnx_cpu_{jobs[0][2]['image_size']}px.json")
    write_metrics_json(out, {
        "script": "scripts/benchmark_onnx.py",
        "argv": sys.argv[1:],
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "cpu": platform.processor() or platform.machine(),
        "threads": 1,
        "load_average_at_start": load,
        "slices": [os.path.basename(p) for p in paths],
        "batch_size": args.batch_size,
        "passes": args.passes,
        "results": rows,
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
