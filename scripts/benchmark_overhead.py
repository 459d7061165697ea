# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""What the framework costs: the bundle's own finetune trainer against a bare PyTorch loop, and the data pipeline.

In one process and one run:

1. **Step**: ``train#trainer`` exactly as ``train.yaml`` (+ ``cpu.yaml`` by default) builds it, parsed by MONAI's
   ``ConfigParser`` — the bundle's ``SupervisedTrainer`` with its network, optimiser, loss, AMP inferer
   (``AutocastInferer``), postprocessing, key metric and every train handler except ``ValidationHandler`` (validation
   is not the training step; it is disabled in the config before parsing) — with its data loader replaced by
   in-memory batches, against a bare loop (``zero_grad / autocast forward / float32 loss / backward / step``) on a
   copy of the same network, the same optimiser settings and autocast, and the same batches. The two alternate in
   rounds (A B A B ...) so that a busy machine slows both alike; the ratio is trainer images/s / bare images/s
   (goal >= 0.95).
2. **Data**: images/s that ``train#dataloader`` (the bundle's ``CacheDataset`` over the COVID19-CT train slices: load,
   resize and pad cached once, then the recipe's random augmentation in ``num_workers`` workers) delivers alone,
   against the step's images/s: a ratio below 1 means the loaders would stall the step.

    python scripts/benchmark_overhead.py                       # CPU recipe: R-18 +5 ATTN, 128 px, batch 32, bf16
    python scripts/benchmark_overhead.py --no-cpu --device cuda --batches 20    # the paper's recipe on a GPU
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def _parser(cpu: bool, overrides: dict, batches: list):
    """The bundle's finetune config (train.yaml [+ cpu.yaml]) with ``overrides``, its ``ValidationHandler``
    disabled and its trainer reading ``batches`` (a config global) instead of ``train#dataloader``."""
    from monai.bundle import ConfigParser

    p = ConfigParser(globals={"bench_batches": batches})
    files = [REPO / "bundle/configs/train.yaml"] + ([REPO / "bundle/configs/cpu.yaml"] if cpu else [])
    p.read_config([str(f) for f in files])
    p["bundle_root"] = str(REPO / "bundle")
    for k, v in overrides.items():
        p[k] = v
    found = [i for i, h in enumerate(p["train#handlers"]) if h.get("_target_", "").endswith("ValidationHandler")]
    if len(found) != 1:
        raise RuntimeError(f"expected one ValidationHandler in train#handlers, found {len(found)}")
    p[f"train#handlers#{found[0]}#_disabled_"] = True
    p["train#trainer#train_data_loader"] = "$bench_batches"
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-cpu", dest="cpu", action="store_false", help="the paper's recipe instead of cpu.yaml's")
    ap.add_argument("--batches", type=int, default=6, help="in-memory batches per round")
    ap.add_argument("--rounds", type=int, default=4, help="alternating rounds of each loop (after one warm-up each)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-attn", dest="n_attn", type=int, default=5, help="non-local blocks (the CPU chain's +5 ATTN)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-epochs", type=int, default=1, help="passes over the train loader for the data throughput")
    ap.add_argument("--json", default=None, help="also write the numbers to this file")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from monai.bundle import ConfigParser

    raw = ConfigParser()  # the recipe's batch and image size, to make the in-memory batches
    raw.read_config([str(REPO / "bundle/configs/train.yaml")] + ([str(REPO / "bundle/configs/cpu.yaml")] if a.cpu else []))
    bs, size = raw.get_parsed_content("batch_size"), raw.get_parsed_content("image_size")
    g = torch.Generator().manual_seed(0)
    batches = [
        {"image": torch.rand(bs, 1, size, size, generator=g), "label": torch.randint(0, 2, (bs,), generator=g)}
        for _ in range(a.batches)
    ]
    tmp = tempfile.mkdtemp(prefix="mstl_overhead_")
    overrides = {"device": f"$torch.device('{a.device}')", "n_attn": a.n_attn, "run_dir": tmp, "progress": False}
    p = _parser(a.cpu, overrides, batches)
    device = torch.device(a.device)
    amp, amp_dtype = bool(p.get_parsed_content("amp")), p.get_parsed_content("amp_dtype")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(amp_dtype), torch.bfloat16)

    # A: the bundle's trainer (train#trainer), reading the in-memory batches
    trainer = p.get_parsed_content("train#trainer")
    net = trainer.network
    def _name(h) -> str:  # a handler object (bound method or callable instance) by class, a function by name
        owner = getattr(h, "__self__", None)
        if owner is None and not hasattr(h, "__qualname__"):
            owner = h
        return type(owner).__name__ if owner is not None else h.__qualname__.split(".<locals>.")[-1]

    handlers = sorted({_name(h) for ev in trainer._event_handlers.values() for h, *_ in ev})
    # B: a bare loop on a copy of the same network and optimiser settings
    bare = copy.deepcopy(net).to(device)
    opt_b = torch.optim.SGD(
        bare.parameters(),
        lr=p.get_parsed_content("learning_rate"),
        momentum=p.get_parsed_content("momentum"),
        weight_decay=p.get_parsed_content("weight_decay"),
    )
    loss_fn = torch.nn.CrossEntropyLoss()

    def run_trainer() -> float:
        trainer.state.max_epochs = trainer.state.epoch + 1  # one more pass over the batches
        t = time.perf_counter()
        trainer.run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def run_bare() -> float:
        bare.train()
        t = time.perf_counter()
        for b in batches:
            x, y = b["image"].to(device), b["label"].to(device)
            opt_b.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype, enabled=amp):
                out = bare(x)
            loss = loss_fn(out.float(), y)
            loss.backward()
            opt_b.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    run_trainer(), run_bare()  # warm-up
    t_a, t_b = [], []
    for _ in range(a.rounds):
        t_a.append(run_trainer())
        t_b.append(run_bare())
    n = bs * a.batches
    ips_a, ips_b = n * a.rounds / sum(t_a), n * a.rounds / sum(t_b)
    round_ratios = sorted(b / t for t, b in zip(t_a, t_b))  # per A-B pair: a load change between pairs cancels
    median_ratio = float(np.median(round_ratios))

    # the NonFiniteGuard's per-step gradient check (total norm of every gradient, one sync), on the trainer's last
    # gradients: its share of the trainer's step
    guard = next((h.__self__ for ev in trainer._event_handlers.values() for h, *_ in ev
                  if getattr(h, "__name__", "") == "check_gradients"), None)
    guard_ms = None
    if guard is not None:
        reps, t = 20, time.perf_counter()
        for _ in range(reps):
            guard.check_gradients(trainer)
        if device.type == "cuda":
            torch.cuda.synchronize()
        guard_ms = 1000 * (time.perf_counter() - t) / reps
    step_ms = 1000 * sum(t_a) / (a.rounds * a.batches)

    # the data pipeline alone
    t0 = time.perf_counter()
    _ = len(p.get_parsed_content("train#dataset"))  # the cache (decode + resize + pad) is filled when it is built
    t_cache = time.perf_counter() - t0
    loader = p.get_parsed_content("train#dataloader")
    seen, t = 0, time.perf_counter()
    for _ in range(a.data_epochs):
        for b in loader:
            seen += len(b["image"])
    ips_data = seen / (time.perf_counter() - t)
    out = {
        "recipe": "cpu.yaml" if a.cpu else "paper (train.yaml defaults)",
        "device": a.device,
        "threads": a.threads,
        "batch_size": bs,
        "image_size": size,
        "amp": amp,
        "n_attn": a.n_attn,
        "trainer_handlers": handlers,
        "bundle_trainer_images_per_s": round(ips_a, 2),
        "bare_loop_images_per_s": round(ips_b, 2),
        "trainer_over_bare": round(ips_a / ips_b, 3),
        "trainer_over_bare_per_round_median": round(median_ratio, 3),
        "trainer_over_bare_per_round": [round(r, 3) for r in round_ratios],
        "round_seconds_trainer": [round(x, 2) for x in t_a],
        "round_seconds_bare": [round(x, 2) for x in t_b],
        "trainer_step_ms": round(step_ms, 1),
        "guard_gradient_check_ms": None if guard_ms is None else round(guard_ms, 2),
        "guard_share_of_step": None if guard_ms is None else round(guard_ms / step_ms, 4),
        "num_workers": p.get_parsed_content("num_workers"),
        "cache_fill_seconds": round(t_cache, 1),
        "data_images_per_s": round(ips_data, 1),
        "data_over_step": round(ips_data / ips_a, 2),
    }
    print(json.dumps(out, indent=2))
    verdict = "meets" if out["trainer_over_bare"] >= 0.95 else "misses"
    print(
        f"bundle trainer {ips_a:.1f} img/s vs bare loop {ips_b:.1f} img/s: ratio {ips_a / ips_b:.3f} ({verdict} the 0.95 goal;"
        f" median of the {a.rounds} paired rounds {median_ratio:.3f});"
        f" loaders deliver {ips_data:.0f} img/s = {ips_data / ips_a:.1f}x the step's need"
        + (" (data stall!)" if ips_data < ips_a else "")
        + ("" if guard_ms is None else
           f"; NonFiniteGuard's gradient check {guard_ms:.1f} ms = {100 * guard_ms / step_ms:.1f}% of a trainer step")
    )
    if a.json:
        from mstl_monai.utils.io import atomic_write

        with atomic_write(a.json) as f:
            f.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
