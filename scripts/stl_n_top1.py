#!/usr/bin/env python
"""Top-1 / top-5 accuracy of an STL-N checkpoint on its natural-image folder's held-out images (Table 1).

The network and the evaluation preprocessing come from the bundle's own ``train.yaml`` + ``stl_n.yaml`` (so they are
the ones the stage trained with); the images are the folder's ``val/`` split (``natural_image_datalist(..., 'test')``),
never used to choose the checkpoint. Writes ``--out`` (JSON) with 95 % bootstrap intervals.

    python scripts/stl_n_top1.py --ckpt runs/cpu_scale/resnet18_attn0/stl_n/models/model.pt \\
        --backbone resnet18 --n_attn 0 --image_size 64 --resize_size 72 --out results/cpu_scale/stl_n_r18_base.json
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


def trained_epochs(ckpt: Path) -> int | None:
    """The epochs its run trained: the last ``checkpoint_epoch=<n>.pt`` beside the checkpoint (None without one)."""
    found = [int(m.group(1)) for p in ckpt.parent.glob("checkpoint_epoch=*.pt") if (m := re.fullmatch(r"checkpoint_epoch=(\d+)\.pt", p.name))]
    return max(found) if found else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", required=True)
    p.add_argument("--backbone", default="resnet18")
    p.add_argument("--n_attn", type=int, default=0)
    p.add_argument("--image_size", type=int, default=64)
    p.add_argument("--resize_size", type=int, default=72)
    p.add_argument("--dataset_dir", default=None, help="natural-image folder (default: the bundle's, Tiny ImageNet)")
    p.add_argument("--batch_size", type=int, default=128)
    p.add_argument("--n_bootstrap", type=int, default=1000)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    from monai.bundle import ConfigParser
    from monai.data import DataLoader, Dataset

    from mstl_monai.metrics import bootstrap_topk_accuracy
    from mstl_monai.networks import load_stage_checkpoint

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundle/configs/train.yaml"), str(REPO / "bundle/configs/stl_n.yaml")])
    parser["bundle_root"] = str(REPO / "bundle")
    for k in ("backbone", "n_attn", "image_size", "resize_size"):
        parser[k] = getattr(a, k)
    if a.dataset_dir:
        parser["dataset_dir"] = a.dataset_dir
    parser["device"] = "$torch.device('cpu')"
    parser.parse()
    dataset_dir = parser.get_parsed_content("dataset_dir")
    from mstl_monai.data import natural_image_datalist

    data = natural_image_datalist(dataset_dir, "test")
    net = parser.get_parsed_content("network_def")
    report = load_stage_checkpoint(net, a.ckpt, exclude_prefixes=())
    if "fc.weight" not in report["loaded"]:
        raise SystemExit(f"{a.ckpt}: its head does not fit {len(parser.get_parsed_content('class_names'))} classes.")
    transform = parser.get_parsed_content("validate#preprocessing")
    loader = DataLoader(Dataset(data, transform), batch_size=a.batch_size, num_workers=0)
    scores, labels = [], []
    t0 = time.time()
    net.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for batch in loader:
            scores.append(torch.softmax(net(batch["image"]).float(), 1).numpy())
            labels.append(np.asarray(batch["label"]).reshape(-1))
    s, y = np.concatenate(scores), np.concatenate(labels)
    res = bootstrap_topk_accuracy(y, s, ks=(1, 5), n_bootstrap=a.n_bootstrap)
    out = {
        "checkpoint": str(a.ckpt),
        "dataset_dir": str(dataset_dir),
        "split": "val/ (held out; not used for checkpoint choice)",
        "n": int(len(y)),
        "n_classes": int(s.shape[1]),
        "chance_top1": 1.0 / s.shape[1],
        "backbone": a.backbone,
        "n_attn": a.n_attn,
        "image_size": a.image_size,
        "epochs": trained_epochs(Path(a.ckpt)),
        **res,
        "seconds": round(time.time() - t0, 1),
    }
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        from mstl_monai.utils.io import atomic_write

        with atomic_write(a.out) as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
