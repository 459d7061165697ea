# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Speed of one SSTL-M training step for ours / moco / simclr, and what the lobe Generator costs.

Everything is measured in one run, on the same backbone, batch and real COVID19-CT slices, with the training
transforms of ``bundle/configs/sstl_m.yaml`` (read from the config, so the benchmark times what the stage runs):

- images/s of one training step (forward of both branches, Eq. 6, backward, SGD step) per method, on a batch
  prepared in advance (the model alone);
- the region branch: ``ours`` minus ``moco`` step time, against the cost of five extra forward/backward passes of
  the backbone on one batch of crops each (the target: no more than that) and against one pass on all ``5 B`` crops;
- the lobe Generator per batch (locate + 5 crops + resize, in the main process) and the whole random transform
  chain per batch (Generator + two MoCo v2 views + normalisation), each as a share of the ``ours`` step;
- the data-loading stall: ``ours`` steps fed by the stage's ``DataLoader`` with ``--num-workers`` prefetching
  workers, against the same steps on the prepared batch.

.. code-block:: bash

    python scripts/benchmark_sstl.py                      # CPU-scale recipe: ResNet-18 +5 ATTNs, 128 px, batch 32
    python scripts/benchmark_sstl.py --quick              # fewer iterations
    python scripts/benchmark_sstl.py --device cuda        # same on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "bundle" / "configs" / "sstl_m.yaml"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_time(fn, iters: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _parser(args: argparse.Namespace, method: str):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIG))
    parser.update(
        {
            "bundle_root": str(REPO / "bundle"),
            "data_root": str(args.data_root),
            "backbone": args.backbone,
            "n_attn": args.n_attn,
            "image_size": args.image_size,
            "resize_size": args.resize_size,
            "region_size": args.region_size,
            "batch_size": args.batch,
            "num_workers": args.num_workers,
            "method": method,
            "queue_size": args.queue_size,
            "amp": args.amp,
            "device": f"$torch.device('{args.device}')",
            "use_luna16": False,
            "run_probes": False,
        }
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="resnet18")
    ap.add_argument("--n-attn", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--resize-size", type=int, default=146)
    ap.add_argument("--region-size", type=int, default=64)
    ap.add_argument("--queue-size", type=int, default=384)
    ap.add_argument("--iters", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--num-workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads of the main process (0: torch's default)")
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="float32 instead of bf16 autocast")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=os.environ.get("MSTL_DATA_ROOT", str(REPO.parent / "shared" / "data")))
    ap.add_argument("--quick", action="store_true", help="3 iterations, 1 warm-up")
    ap.add_argument("--json", default=None, help="also write the numbers to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.iters, args.warmup = 3, 1
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    covid = Path(args.data_root) / "covid-ct"
    if not covid.is_dir():
        print(f"COVID19-CT folder {covid} not found (set --data-root or MSTL_DATA_ROOT)", file=sys.stderr)
        return 2

    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose
    from monai.utils import set_determinism

    from mstl_monai.losses import SSTLLoss
    from mstl_monai.networks.nets import SSTL_METHODS
    from mstl_monai.inferers import AutocastInferer

    set_determinism(seed=0)
    print(
        f"SSTL-M step benchmark: {args.backbone} n_attn={args.n_attn}, batch {args.batch}, image {args.image_size} px, "
        f"lobe crops {args.region_size} px, {'bf16 autocast' if args.amp else 'fp32'}, device {device}, "
        f"torch threads {torch.get_num_threads()}, {args.num_workers} loader workers, "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
        flush=True,
    )

    # ------------------------------------------------------------ data: the stage's own transforms, real slices
    base = _parser(args, "ours")
    load = Compose(base.get_parsed_content("load_transforms"))
    random_part = Compose(
        base.get_parsed_content("train#lobe_generator")
        + base.get_parsed_content("train#view_augmentation")
        + base.get_parsed_content("train#finalize_transforms")
    )
    generator = base.get_parsed_content("train#lobe_generator")[0]
    random_part.set_random_state(seed=0)
    datalist = base.get_parsed_content("train#datalist")[: 4 * args.batch]
    t0 = time.perf_counter()
    cached = [load(d) for d in datalist]
    load_s = (time.perf_counter() - t0) / len(cached)
    batch_items = cached[: args.batch]

    def generator_batch():
        for d in batch_items:
            generator(dict(d))

    def transforms_batch():
        return [random_part(dict(d)) for d in batch_items]

    gen_s = _median_time(generator_batch, args.iters, 1, torch.device("cpu"))
    tr_s = _median_time(transforms_batch, max(2, args.iters // 2), 1, torch.device("cpu"))
    from monai.data.utils import list_data_collate

    batch = list_data_collate(transforms_batch())
    n_fallback = int(torch.as_tensor(batch["regions_fallback"]).sum())

    # ------------------------------------------------------------ model step per method on the prepared batch
    inferer = AutocastInferer(enabled=args.amp)
    loss_fn = SSTLLoss()
    v1, v2 = batch["view1"].to(device), batch["view2"].to(device)
    regions, labels = batch["regions"].to(device), batch["regions_labels"].to(device).long()
    results: dict = {"config": vars(args), "load_decode_resize_s_per_image": load_s}
    step_s: dict[str, float] = {}
    nets = {}
    for method in SSTL_METHODS:
        torch.manual_seed(0)
        net = _parser(args, method).get_parsed_content("network")
        net.train()
        opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
        use_regions = net.uses_regions

        def step(net=net, opt=opt, use_regions=use_regions):
            opt.zero_grad(set_to_none=True)
            out = inferer(v1, net, v2, regions if use_regions else None)
            region_labels = labels if use_regions else None
            loss = loss_fn(out["cons_logits"], out["cons_labels"], out.get("region_logits"), region_labels)
            loss.backward()
            opt.step()

        step_s[method] = _median_time(step, args.iters, args.warmup, device)
        nets[method] = (net, opt, step)
        ms, ips = step_s[method] * 1000, args.batch / step_s[method]
        print(f"  {method:7s} step {ms:8.1f} ms  {ips:7.1f} images/s", flush=True)

    # ------------------------------------------------------------ the region branch against 5 extra passes
    net_ours = nets["ours"][0]
    bb, head = net_ours.backbone, net_ours.region_head
    one_lobe = regions[:, 0]
    all_lobes = regions.reshape(-1, *regions.shape[2:])

    def region_pass(x):
        def run():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                logits = head(bb.forward_head(bb.forward_features(x), pre_logits=True))
            logits.float().sum().backward()

        return run

    one_pass_s = _median_time(region_pass(one_lobe), args.iters, args.warmup, device)
    batched_s = _median_time(region_pass(all_lobes), args.iters, args.warmup, device)
    branch_s = step_s["ours"] - step_s["moco"]
    five_s = 5 * one_pass_s

    # ------------------------------------------------------------ data-loading stall with prefetching workers
    ds = Dataset(cached[: 4 * args.batch], transform=random_part)
    loader = DataLoader(ds, batch_size=args.batch, shuffle=True, drop_last=True, num_workers=args.num_workers)
    net, opt, _ = nets["ours"]
    n_loader_steps = 0
    t_loader = 0.0
    for epoch in range(2):
        it = iter(loader)
        first = next(it)  # worker start-up is not a steady-state stall
        t0 = time.perf_counter()
        for b in [first] + list(_take(it, 3)):
            opt.zero_grad(set_to_none=True)
            out = inferer(b["view1"].to(device), net, b["view2"].to(device), b["regions"].to(device))
            region_labels = b["regions_labels"].to(device).long()
            loss_fn(out["cons_logits"], out["cons_labels"], out["region_logits"], region_labels).backward()
            opt.step()
            _sync(device)
            n_loader_steps += 1
        t_loader += time.perf_counter() - t0
        del it
    fed_s = t_loader / n_loader_steps
    stall_s = max(0.0, fed_s - step_s["ours"])

    results.update(
        {
            "step_s": step_s,
            "images_per_s": {m: args.batch / s for m, s in step_s.items()},
            "region_branch_s": branch_s,
            "one_region_pass_s": one_pass_s,
            "five_region_passes_s": five_s,
            "one_batched_region_pass_s": batched_s,
            "generator_s_per_batch": gen_s,
            "random_transforms_s_per_batch": tr_s,
            "generator_share_of_ours_step": gen_s / step_s["ours"],
            "transforms_share_of_ours_step": tr_s / step_s["ours"],
            "fallback_in_batch": n_fallback,
            "loader_fed_step_s": fed_s,
            "loader_stall_s": stall_s,
        }
    )
    b = args.batch
    print()
    print("| method | step (ms) | images/s |")
    print("|---|---:|---:|")
    for m in SSTL_METHODS:
        print(f"| {m} | {step_s[m] * 1000:.1f} | {b / step_s[m]:.1f} |")
    print()
    print(f"region branch (ours - moco):              {branch_s * 1000:8.1f} ms per step")
    print(f"5 extra fwd/bwd passes (one lobe each):   {five_s * 1000:8.1f} ms  "
          f"(one pass {one_pass_s * 1000:.1f} ms on {b} crops)")
    print(f"1 batched fwd/bwd pass on all {5 * b} crops: {batched_s * 1000:8.1f} ms")
    ok = branch_s <= five_s
    print(f"region branch <= five extra passes:       {'yes' if ok else 'NO'} ({branch_s / five_s:.2f}x)")
    print()
    ours_s = step_s["ours"]
    print(f"decode + resize (cached once):            {load_s * 1000:8.2f} ms per image")
    print(f"lobe Generator per batch of {b}:            {gen_s * 1000:8.1f} ms"
          f" = {100 * gen_s / ours_s:.1f}% of the ours step"
          f" ({gen_s / b * 1000:.2f} ms per image; {n_fallback}/{b} fell back)")
    print(f"all random transforms per batch:          {tr_s * 1000:8.1f} ms"
          f" = {100 * tr_s / ours_s:.1f}% of the ours step"
          " (Generator + 2 MoCo v2 views + normalise)")
    print(f"ours step fed by the DataLoader ({args.num_workers} workers): {fed_s * 1000:8.1f} ms"
          f" vs {ours_s * 1000:.1f} ms on a prepared batch:"
          f" stall {stall_s * 1000:.1f} ms ({100 * stall_s / ours_s:.1f}%)")
    keeps_up = tr_s / max(args.num_workers, 1) <= step_s["ours"]
    print(f"workers keep up (transforms / workers <= step): {'yes' if keeps_up else 'NO'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _take(it, n):
    for _ in range(n):
        try:
            yield next(it)
        except StopIteration:
            return


if __name__ == "__main__":
    sys.exit(main())
