# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Throughput of scan-level inference on CPU: slices/s and seconds per scan, stage by stage.

Scans: the real 30-slice DICOM series (``../shared/data/ct-series/lung-pet-ct-dx-A0002``), the same series as a
NIfTI volume, and a synthetic 300-slice NIfTI volume made from it (HU linearly interpolated along z to a 10x
finer spacing, 0.8 mm instead of 8 mm). The classifier is ``--ckpt`` with the network and input size its
``model.pt.json`` gives (as ``configs/inference_scan.yaml`` reads it), or without ``--ckpt`` a network with random
weights (the time does not depend on the weights): by default ResNet-50 at 224 px, the paper's; the main job's model
is ``--backbone resnet18 --n-attn 5 --image-size 128 --resize-size 146``.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_scan.py [--ckpt model.pt | --backbone resnet50 ...] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def _upsample_z(vol, affine, n: int):
    """Linear interpolation of a (X, Y, Z) volume to ``n`` slices over the same z extent."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(vol)[None, None]
    out = F.interpolate(t, size=(vol.shape[0], vol.shape[1], n), mode="trilinear", align_corners=True)[0, 0].numpy()
    aff = affine.copy()
    aff[:3, 2] *= (vol.shape[2] - 1) / (n - 1)
    return np.round(out).astype(np.int16), aff


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/ct-series/lung-pet-ct-dx-A0002"))
    ap.add_argument("--backbone", default=None, help="default: the checkpoint's, else resnet50")
    ap.add_argument("--n-attn", type=int, default=None, help="default: the checkpoint's, else 0")
    ap.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's, else 224")
    ap.add_argument("--resize-size", type=int, default=None, help="default: the checkpoint's, else 256")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--ckpt", default=None, help="a classifier checkpoint (its model.pt.json gives the settings)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--slices", type=int, default=300, help="slices of the synthetic volume")
    ap.add_argument("--compare-fp32", action="store_true", help="also time the 30-slice series without autocast")
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))

    import nibabel as nib
    import torch
    from monai.transforms import CenterSpatialCrop, Compose, NormalizeIntensity, Resize, SpatialPad

    from mstl_monai.data import read_dicom_series_hu
    from mstl_monai.engines import ScanClassifier, autocast_helps, build_network, load_classifier_weights, lung_fractions
    from mstl_monai.engines import check_checkpoint_settings, checkpoint_network, select_lung_slices
    from mstl_monai.transforms import LoadCTSeries

    torch.set_num_threads(args.threads)
    given = {"backbone": args.backbone, "n_attn": args.n_attn, "image_size": args.image_size, "resize_size": args.resize_size}
    if args.ckpt:  # the checkpoint's settings; a contradicting option is an error naming both values
        settings = check_checkpoint_settings(args.ckpt, **given)
        net = checkpoint_network(args.ckpt, settings["backbone"], settings["n_attn"], n_input_channels=settings["in_channels"],
                                 num_classes=settings["num_classes"], img_size=settings["image_size"],
                                 num_layers=settings.get("num_layers"), patch_size=settings.get("patch_size"))
        net = load_classifier_weights(net, args.ckpt)
    else:
        settings = {k: v for k, v in given.items() if v is not None}
        settings = {"backbone": "resnet50", "n_attn": 0, "image_size": 224, "resize_size": 256, **settings}
        net = build_network(settings["backbone"], n_attn=settings["n_attn"], n_input_channels=1, num_classes=2).eval()
    args.backbone, args.n_attn, args.image_size, args.resize_size = (
        settings[k] for k in ("backbone", "n_attn", "image_size", "resize_size")
    )
    pre = Compose(
        [
            Resize(spatial_size=args.resize_size, size_mode="longest", mode="area"),
            SpatialPad(spatial_size=(args.resize_size, args.resize_size)),
            CenterSpatialCrop(roi_size=(args.image_size, args.image_size)),
            NormalizeIntensity(subtrahend=0.449, divisor=0.226),
        ]
    )
    series = Path(args.series)
    tmp = Path(tempfile.mkdtemp(prefix="mstl-bench-scan-"))
    vol, aff = read_dicom_series_hu(series)
    nib.save(nib.Nifti1Image(vol.astype("int16"), aff), str(tmp / "series30.nii.gz"))
    big, big_aff = _upsample_z(vol, aff, args.slices)
    nib.save(nib.Nifti1Image(big, big_aff), str(tmp / f"synthetic{args.slices}.nii.gz"))

    print(
        f"scan-level inference on CPU: {args.backbone} n_attn={args.n_attn} at {args.image_size} px, batch "
        f"{args.batch_size}, {torch.get_num_threads()} thread(s), torch {torch.__version__}, bf16 autocast "
        f"{'on (AMX/AVX512-BF16)' if autocast_helps('cpu') else 'off (no bf16 instructions)'}"
    )
    header = f"{'scan':<26}{'slices':>7}{'used':>6}{'read s':>8}{'lung s':>8}{'classify s':>11}{'slices/s':>9}{'gradcam s':>10}{'total s':>9}{'slices/s':>9}"
    print(header)
    print(" " * 56 + "(classifier)" + " " * 19 + "(whole scan)")
    runs = [("DICOM series (30)", str(series), "auto"), ("NIfTI (30)", str(tmp / "series30.nii.gz"), "auto")]
    if args.compare_fp32:
        runs.append(("NIfTI (30), fp32", str(tmp / "series30.nii.gz"), False))
    runs.append((f"synthetic NIfTI ({args.slices})", str(tmp / f"synthetic{args.slices}.nii.gz"), "auto"))
    for name, path, amp in runs:
        clf = ScanClassifier(net, pre, batch_size=args.batch_size, amp=amp, n_top=3)
        t0 = time.perf_counter()
        stack = LoadCTSeries()(path)
        t1 = time.perf_counter()
        fr, found = lung_fractions(stack.as_tensor())
        used = select_lung_slices(fr, found)
        t2 = time.perf_counter()
        idx = used.nonzero()[0].tolist()
        probs = clf.slice_probabilities(stack, idx)
        t3 = time.perf_counter()
        top = [idx[i] for i in probs.argsort()[::-1][:3]]
        clf.heatmaps(stack, top)
        t4 = time.perf_counter()
        n = stack.shape[0]
        print(
            f"{name:<26}{n:>7}{len(idx):>6}{t1 - t0:>8.2f}{t2 - t1:>8.2f}{t3 - t2:>11.2f}{len(idx) / (t3 - t2):>9.2f}"
            f"{t4 - t3:>10.2f}{t4 - t0:>9.2f}{n / (t4 - t0):>9.2f}"
        )
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
