# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Speed of the boundary map and of the lobe Generator, measured in one run on the same inputs.

1. ``BoundaryMap`` on a batch of 32 uint8 label images of 512x512 (air / body / lung labels made from real
   LUNA16 slices when ``--data-root`` has them, otherwise from the synthetic phantom) against
   ``skimage.segmentation.find_boundaries(connectivity=2, mode="thick")`` image by image and against a literal
   per-pixel sliding-window reference (timed on ``--literal-images`` images and scaled to the batch); all three
   outputs are compared pixel for pixel.
2. The whole Generator (locate + 5 crops + resize to 224) per image against decoding the same PNG (bytes already
   in memory, PIL decode to a numpy array), with its numba kernels (``functional_jit``) and, in the same rounds, with
   their numpy/ATen versions (``MSTL_MONAI_NO_JIT=1``); the lung boxes of both are compared.

Times are medians of ``--repeats`` runs; for the Generator and the decode also this thread's CPU time (the steadier
measure on a machine shared with other work, where waiting for a core adds to the wall time). With a GPU the boundary map and the Generator are also timed there.
``--json`` writes the measured times and ratios (and the machine they were measured on) to a file.

Usage::

    python scripts/benchmark_generator.py --data-root ../shared/data [--json results/benchmarks/generator_cpu.json]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from skimage.segmentation import find_boundaries

from mstl_monai.transforms import BoundaryMap, LungLobeGenerator, QuantizeLung, sliding_window_boundary_map
from mstl_monai.transforms.lobe.functional import cpu_single_thread, jit_kernels, jit_switch

REPO = Path(__file__).resolve().parents[1]


def timeit(fn, repeats: int, sync: bool = False) -> float:
    """Median wall time of ``fn()`` in seconds (one warm-up call first)."""
    fn()
    if sync:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        if sync:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def wall_and_cpu(fn) -> tuple[float, float]:
    """Wall time and this thread's CPU time of one ``fn()`` in seconds (one warm-up call first). On a machine shared
    with other work the CPU time is the steadier measure: waiting for a core does not count in it."""
    fn()
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    return time.perf_counter() - w0, time.thread_time() - c0


def png_inputs(root: Path, n: int) -> tuple[list[bytes], str]:
    """The bytes of ``n`` 512x512 PNG slices (LUNA16) or phantom PNGs written to memory."""
    files = sorted((root / "luna16" / "images").glob("*.png"))[:n] if root.is_dir() else []
    if len(files) == n:
        return [f.read_bytes() for f in files], f"LUNA16 slices from {root / 'luna16'}"
    from mstl_monai.data import make_lung_phantom

    blobs = []
    for i in range(n):
        img, _ = make_lung_phantom(size=512, seed=i, ggo=i % 2 == 1)
        buf = io.BytesIO()
        Image.fromarray((img * 255).round().astype(np.uint8)).save(buf, format="PNG")
        blobs.append(buf.getvalue())
    return blobs, "synthetic lung phantoms (no real data found)"


def decode(blob: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as im:
        return np.asarray(im.convert("L") if im.mode not in ("L", "I;16", "I") else im)


def with_kernels(enabled: bool, fn):
    """``fn()`` with the Generator's numba kernels on or off (:func:`jit_switch`)."""
    with jit_switch(enabled):
        return fn()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--literal-images", type=int, default=1, help="images the literal reference is timed on")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="write the measured times and ratios here (JSON)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    blobs, source = png_inputs(args.data_root, args.batch)
    # the slices as LoadCTSlice gives them (8-bit gray -> [0, 1] float32, (1, H, W)), decoded from memory
    imgs = [torch.as_tensor(decode(blob).astype(np.float32) / 255.0)[None] for blob in blobs]
    labels = torch.stack([QuantizeLung()(im) for im in imgs])  # (B, 1, 512, 512) uint8
    b, _, h, w = labels.shape
    print(f"inputs: {b} label maps {h}x{w} uint8 from {source}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} intra-op threads (the transforms run their CPU ops on one)")

    # ---- 1. boundary map -----------------------------------------------------------------------------------------
    bm = BoundaryMap()
    lab_np = labels[:, 0].numpy()
    ours = bm(labels)
    sk = np.stack([find_boundaries(a, connectivity=2, mode="thick") for a in lab_np])
    if not np.array_equal(ours[:, 0].numpy(), sk):
        raise RuntimeError("BoundaryMap differs from skimage.find_boundaries")
    t_ours = timeit(lambda: bm(labels), args.repeats)
    t_sk = timeit(lambda: [find_boundaries(a, connectivity=2, mode="thick") for a in lab_np], max(1, args.repeats // 2))
    k = max(1, min(args.literal_images, b))
    t0 = time.perf_counter()
    lit = [sliding_window_boundary_map(lab_np[i]).numpy() for i in range(k)]
    t_lit = (time.perf_counter() - t0) / k * b
    if not all(np.array_equal(lit[i], sk[i]) for i in range(k)):
        raise RuntimeError("the literal sliding-window reference differs from skimage.find_boundaries")
    print(f"\nboundary map, batch of {b} x {h}x{w} uint8 (outputs identical pixel for pixel):")
    print(f"  BoundaryMap (torch, CPU)       {t_ours * 1e3:9.2f} ms")
    print(f"  skimage find_boundaries         {t_sk * 1e3:9.2f} ms   -> BoundaryMap is {t_sk / t_ours:6.1f}x faster")
    print(
        f"  literal per-pixel 3x3 window    {t_lit * 1e3:9.0f} ms   -> BoundaryMap is {t_lit / t_ours:6.0f}x faster"
        f"  (timed on {k} image(s), scaled to {b})"
    )

    # ---- 2. the Generator against PNG decoding --------------------------------------------------------------------
    gen = LungLobeGenerator(spatial_size=224)
    # the first call in this process: numba loads the compiled kernels from its cache (or compiles them once)
    t0 = time.perf_counter()
    kernels = with_kernels(True, lambda: jit_kernels() is not None and gen(imgs[0]) is not None)
    t_first = time.perf_counter() - t0
    print(f"\nfirst Generator call (imports numba, loads or compiles the kernels): {t_first:.2f} s")
    if not kernels:
        print("\nnumba is not available: both Generator rows below run the numpy/ATen versions")
    # interleaved rounds, so that all sides see the same machine load; medians over the rounds
    t_dec, t_gen, t_np, t_loc, c_dec, c_gen, c_np = [], [], [], [], [], [], []
    for _ in range(args.repeats + 1):
        rounds = (
            (t_dec, c_dec, lambda: [decode(x) for x in blobs]),
            (t_gen, c_gen, lambda: with_kernels(True, lambda: [gen(im) for im in imgs])),
            (t_np, c_np, lambda: with_kernels(False, lambda: [gen(im) for im in imgs])),
        )
        for wall, cpu, fn in rounds:
            tw, tc = wall_and_cpu(fn)
            wall.append(tw / b)
            cpu.append(tc / b)
        with cpu_single_thread():
            t_loc.append(with_kernels(True, lambda: timeit(lambda: [gen.locate(im) for im in imgs], 1)) / b)
    t_dec, t_gen, t_np, t_loc, c_dec, c_gen, c_np = (
        statistics.median(v[1:]) for v in (t_dec, t_gen, t_np, t_loc, c_dec, c_gen, c_np)
    )
    fast = with_kernels(True, lambda: [gen(im) for im in imgs])
    slow = with_kernels(False, lambda: [gen(im) for im in imgs])
    same_boxes = all(torch.equal(a.boxes, c.boxes) and a.fallback == c.fallback for a, c in zip(fast, slow))
    crop_diff = max(float((a.regions - c.regions).abs().max()) for a, c in zip(fast, slow))
    fallbacks = sum(r.fallback for r in fast)
    print(f"\nGenerator per {h}x{w} image (locate + 5 crops + resize to 224), {fallbacks}/{b} fell back:")
    print(f"  PNG decode (PIL, from memory)   {t_dec * 1e3:9.3f} ms")
    print(f"  LungLobeGenerator               {t_gen * 1e3:9.3f} ms   -> {t_gen / t_dec:5.2f}x the decode cost")
    print(f"    of which locate               {t_loc * 1e3:9.3f} ms")
    print(f"  ... numpy/ATen versions         {t_np * 1e3:9.3f} ms   -> {t_np / t_dec:5.2f}x the decode cost"
          f"   (same lung boxes: {same_boxes}; crops differ by at most {crop_diff:.1e})")
    print(f"  CPU time (this thread): decode {c_dec * 1e3:.3f} ms, Generator {c_gen * 1e3:.3f} ms"
          f"   -> {c_gen / c_dec:5.2f}x the decode cost (numpy/ATen versions {c_np / c_dec:5.2f}x)")
    result = {
        "inputs": source,
        "images": b,
        "image_size": [h, w],
        "torch": torch.__version__,
        "machine": {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None},
        "boundary_map_ms": {"BoundaryMap": t_ours * 1e3, "skimage": t_sk * 1e3, "literal": t_lit * 1e3},
        "numba_kernels": kernels,
        "first_call_s": t_first,
        "generator_per_image_ms": {"png_decode": t_dec * 1e3, "generator": t_gen * 1e3, "locate": t_loc * 1e3,
                                   "generator_numpy_aten": t_np * 1e3},
        "generator_over_decode": t_gen / t_dec,
        "generator_numpy_aten_over_decode": t_np / t_dec,
        "cpu_time_per_image_ms": {"png_decode": c_dec * 1e3, "generator": c_gen * 1e3,
                                  "generator_numpy_aten": c_np * 1e3},
        "generator_over_decode_cpu_time": c_gen / c_dec,
        "generator_numpy_aten_over_decode_cpu_time": c_np / c_dec,
        "same_lung_boxes_numpy_aten": bool(same_boxes),
        "max_crop_difference_numpy_aten": crop_diff,
        "fallbacks": int(fallbacks),
    }

    # ---- GPU ------------------------------------------------------------------------------------------------------
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        lab_g = labels.to(dev)
        out_g = bm(lab_g)
        same = torch.equal(out_g.cpu(), ours)
        t_g = timeit(lambda: bm(lab_g), args.repeats, sync=True)
        imgs_g = [im.to(dev) for im in imgs]
        boxes_same = all(torch.equal(gen(a).boxes.cpu(), gen(c).boxes) for a, c in zip(imgs_g, imgs))
        t_gg = timeit(lambda: [gen(im) for im in imgs_g], args.repeats, sync=True) / b
        print(f"\nGPU ({torch.cuda.get_device_name(dev)}):")
        print(f"  BoundaryMap batch               {t_g * 1e3:9.3f} ms   (identical to CPU: {same})")
        print(f"  LungLobeGenerator per image     {t_gg * 1e3:9.3f} ms   (same boxes as CPU: {boxes_same})")
        result["gpu"] = {"device": torch.cuda.get_device_name(dev), "boundary_map_ms": t_g * 1e3,
                         "generator_per_image_ms": t_gg * 1e3, "same_as_cpu": bool(same and boxes_same)}
    else:
        print("\nGPU: none available")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(args.json.suffix + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.json)  # written whole or not at all
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
