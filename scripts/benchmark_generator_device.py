# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Where the lobe Generator should run, measured in one run on the same real slices.

For each recipe (the CPU recipe: slices resized to 146 px, lobe crops of 64 px, batch 32, 128 px views; paper
scale: 256 px slices, 224 px crops, batch 256, 224 px views) it times, per batch:

1. the Generator in the data-loader workers: ``RandLungLobeGenerator`` image by image on one thread (what the
   workers spend per batch, summed over them);
2. the Generator batched on ``--device``: ``BatchLungLobeGenerator`` on the whole batch (same boxes);
3. one SSTL-M step (MoCo v2 + region branch, ResNet-18, bf16 autocast, SGD) on ``--device``, to give the
   Generator's share of the step. On CPU the paper-scale step is timed at ``--paper-step-batch`` images and scaled
   linearly to the batch (said in the output); on a GPU at the full batch.

It prints the ratios: per-image / batched cost, and each one's share of (step + Generator). Times are medians of
``--repeats`` runs after one warm-up.

Usage::

    python scripts/benchmark_generator_device.py [--device cuda] [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]

RECIPES = {  # name: (resize_size, region_size, batch, image_size)
    "cpu recipe": (146, 64, 32, 128),
    "paper scale": (256, 224, 256, 224),
}


def timeit(fn, repeats: int, device: torch.device) -> float:
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def load_slices(root: Path, resize: int, n: int) -> torch.Tensor:
    """``n`` real SSTL-M training slices (COVID19-CT train + LUNA16, cycled) as the loader gives them."""
    from monai.transforms import Compose, Resized, SpatialPadd

    from mstl_monai.data import sstl_datalist
    from mstl_monai.transforms import LoadCTSliced

    items = sstl_datalist(root / "covid-ct", use_luna16=True, luna16_dir=root / "luna16")
    items = items[:: max(1, len(items) // n)][:n]
    tf = Compose(
        [
            LoadCTSliced(keys="image"),
            Resized(keys="image", spatial_size=resize, size_mode="longest", mode="area"),
            SpatialPadd(keys="image", spatial_size=[resize, resize]),
        ]
    )
    imgs = [tf(dict(d))["image"].as_tensor() for d in items]
    return torch.stack([imgs[i % len(imgs)] for i in range(n)])


def sstl_step(device: torch.device, batch: int, image_size: int, region_size: int, n_attn: int):
    """A closure running one SSTL-M training step on random views and crops of the given sizes."""
    from mstl_monai.losses import SSTLLoss
    from mstl_monai.networks import build_network
    from mstl_monai.networks.nets import SSTLNetwork

    torch.manual_seed(0)
    backbone = build_network("resnet18", n_attn=n_attn, n_input_channels=1, num_classes=2)
    net = SSTLNetwork(backbone, method="ours", queue_size=max(384, 2 * batch)).to(device)
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    loss_fn = SSTLLoss()
    v1 = torch.randn(batch, 1, image_size, image_size, device=device)
    v2 = torch.randn(batch, 1, image_size, image_size, device=device)
    regions = torch.randn(batch, 5, 1, region_size, region_size, device=device)

    def step():
        net.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = net(v1, v2, regions)
        loss = loss_fn(out["cons_logits"], out["cons_labels"], out["region_logits"].float())
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--n-attn", type=int, default=5, help="non-local blocks of the ResNet-18 (CPU chains: 5)")
    p.add_argument("--paper-step-batch", type=int, default=8, help="CPU only: batch the paper-scale step is timed at")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated subset of: " + ", ".join(RECIPES))
    args = p.parse_args(argv)
    device = torch.device(args.device)

    from mstl_monai.transforms import BatchLungLobeGenerator, RandLungLobeGenerator

    print(
        f"torch {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
        + f", {torch.get_num_threads()} intra-op threads; real slices from {args.data_root}"
    )
    for name in args.recipes.split(","):
        resize, region, batch, image_size = RECIPES[name.strip()]
        imgs = load_slices(args.data_root, resize, batch)
        per_image = RandLungLobeGenerator(spatial_size=region, jitter=0.1).set_random_state(0)
        batched = BatchLungLobeGenerator(spatial_size=region, jitter=0.1).set_random_state(0)
        imgs_dev = imgs.to(device)
        cpu = torch.device("cpu")
        t_img = timeit(lambda: [per_image(im) for im in imgs], args.repeats, cpu)
        t_dev = timeit(lambda: batched(imgs_dev), args.repeats, device)
        det = BatchLungLobeGenerator(spatial_size=region)(imgs_dev)
        ref = [RandLungLobeGenerator(spatial_size=region, jitter=0.0)(im) for im in imgs]
        same = all(torch.equal(det.boxes[i].cpu(), r.boxes) for i, r in enumerate(ref))
        step_batch = batch if device.type != "cpu" or name.strip() != "paper scale" else args.paper_step_batch
        t_step = timeit(sstl_step(device, step_batch, image_size, region, args.n_attn), args.repeats, device)
        t_step *= batch / step_batch
        note = f" (timed at batch {step_batch}, scaled x{batch / step_batch:g})" if step_batch != batch else ""
        print(f"\n{name}: {resize} px slices -> 5 crops of {region} px, batch {batch}, {image_size} px views")
        print(f"  Generator per image (workers, 1 thread)  {t_img * 1e3:10.1f} ms/batch  ({t_img / batch * 1e3:.2f} ms/image)")
        print(f"  Generator batched on {str(device):4s}              {t_dev * 1e3:10.1f} ms/batch  (boxes identical: {same})")
        print(f"  -> per-image / batched                   {t_img / t_dev:10.2f}x")
        print(f"  SSTL-M step on {str(device):4s} (R-18 +{args.n_attn} ATTN)     {t_step * 1e3:10.1f} ms/batch{note}")
        print(f"  Generator share of step + Generator: per image {t_img / (t_step + t_img):6.1%}, batched {t_dev / (t_step + t_dev):6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
