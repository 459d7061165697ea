# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""LEEP of a source model on a target data set (the paper's Table 6).

.. code-block:: bash

    # COVIDx 3-way head of an STL-M checkpoint, scored on the COVID19-CT training split
    python -m mstl_monai.metrics leep --ckpt runs/stl_m/models/model.pt --num-source-classes 3 \\
        --backbone resnet18 --n-attn 5 --image-size 128 --resize-size 146 --target-dir ../shared/data/covid-ct
    # ImageNet 1000-way head of a torchvision checkpoint
    python -m mstl_monai.metrics leep --ckpt resnet50-0676ba61.pth --num-source-classes 1000 ...
"""

from __future__ import annotations

import sys

import numpy as np
import torch

__all__ = ["source_probabilities", "leep_of_checkpoint"]


def source_probabilities(
    net: torch.nn.Module, datalist: list[dict], image_size: int = 224, resize_size: int = 256, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs of ``net``'s own (source) head on every image of ``datalist``, with the target labels.

    Images get the bundle's evaluation preprocessing (load, resize, pad, centre crop, normalise).
    """
    from monai.data import DataLoader, Dataset
    from monai.transforms import CenterSpatialCropd, Compose, NormalizeIntensityd, Resized, SpatialPadd

    from mstl_monai.transforms import LoadCTSliced

    tf = Compose(
        [
            LoadCTSliced(keys="image"),
            Resized(keys="image", spatial_size=resize_size, size_mode="longest", mode="area"),
            SpatialPadd(keys="image", spatial_size=(resize_size, resize_size)),
            CenterSpatialCropd(keys="image", roi_size=(image_size, image_size)),
            NormalizeIntensityd(keys="image", subtrahend=0.449, divisor=0.226),
        ]
    )
    loader = DataLoader(Dataset([{"image": d["image"], "label": d["label"]} for d in datalist], tf), batch_size=batch_size)
    device = next(net.parameters()).device
    net.eval()
    probs, labels = [], []
    with torch.no_grad():
        for batch in loader:
            x = torch.as_tensor(batch["image"]).float().to(device)
            probs.append(torch.softmax(net(x).float(), dim=1).cpu().numpy())
            labels.append(torch.as_tensor(batch["label"]).cpu().numpy())
    return np.concatenate(probs).astype(np.float64), np.concatenate(labels)


def leep_of_checkpoint(
    ckpt: str,
    num_source_classes: int,
    datalist: list[dict],
    backbone: str = "resnet50",
    n_attn: int = 0,
    in_channels: int = 1,
    image_size: int = 224,
    resize_size: int = 256,
) -> float:
    """Build the source network with its ``num_source_classes``-way head, load ``ckpt`` whole, return LEEP."""
    from mstl_monai.networks import build_network, load_pretrained
    from mstl_monai.metrics import compute_leep

    net = build_network(backbone, n_attn=n_attn, n_input_channels=in_channels, num_classes=num_source_classes)
    report = load_pretrained(net, ckpt, exclude_prefixes=())
    missing_head = [k for k in (report or {}).get("new", []) if k.startswith("fc.")]
    if report is None or missing_head:
        raise ValueError(
            f"checkpoint {ckpt} has no {num_source_classes}-way source head (fc): LEEP needs the source model's own"
            " classifier."
        )
    probs, labels = source_probabilities(net, datalist, image_size, resize_size)
    return compute_leep(probs, labels)



if __name__ == "__main__":  # the old command line, one release; the package's own is metrics/__main__.py
    import runpy

    print(f"python -m {__spec__.name} is deprecated: use python -m mstl_monai.metrics leep", file=sys.stderr)
    sys.argv[1:1] = ["leep"]
    runpy.run_module("mstl_monai.metrics", run_name="__main__", alter_sys=True)
