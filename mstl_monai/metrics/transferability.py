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
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["source_probabilities", "leep_of_checkpoint"]


def source_probabilities(
    net: torch.nn.Module,
    datalist: list[dict],
    image_size: int = 224,
    resize_size: int = 256,
    batch_size: int = 32,
    normalize: Mapping[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Softmax outputs of ``net``'s own (source) head on every image of ``datalist``, with the target labels.

    Images get the bundle's evaluation preprocessing (load, resize, pad, centre crop, normalise with ``normalize``,
    the checkpoint's ``{"subtrahend", "divisor"}``; default :data:`~mstl_monai.networks.sidecar.NORMALIZE`).
    """
    from monai.data import DataLoader, Dataset
    from monai.transforms import CenterSpatialCropd, Compose, NormalizeIntensityd, Resized, SpatialPadd

    from mstl_monai.networks.sidecar import NORMALIZE
    from mstl_monai.transforms import LoadCTSliced

    norm = dict(normalize or NORMALIZE)
    tf = Compose(
        [
            LoadCTSliced(keys="image"),
            Resized(keys="image", spatial_size=resize_size, size_mode="longest", mode="area"),
            SpatialPadd(keys="image", spatial_size=(resize_size, resize_size)),
            CenterSpatialCropd(keys="image", roi_size=(image_size, image_size)),
            NormalizeIntensityd(keys="image", subtrahend=float(norm["subtrahend"]), divisor=float(norm["divisor"])),
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
    backbone: str | None = None,
    n_attn: int | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
    resize_size: int | None = None,
) -> float:
    """Build the source network with its ``num_source_classes``-way head, load ``ckpt`` whole, return LEEP.

    A checkpoint of this package (with its settings file) is read by
    :func:`~mstl_monai.networks.checkpoint.load_network` (the given settings are checked against it, and its input
    size and normalisation are used); weights from elsewhere (a torchvision file) are adapted by
    :func:`~mstl_monai.networks.weights.load_pretrained` and get the given settings (default: resnet50, no ATTN,
    one input channel, 224/256) and the default normalisation.
    """
    from mstl_monai.metrics import compute_leep
    from mstl_monai.networks import build_network, load_pretrained
    from mstl_monai.networks.checkpoint import load_network
    from mstl_monai.networks.sidecar import read_checkpoint_info

    normalize = None
    if read_checkpoint_info(ckpt) is not None:
        net, settings = load_network(
            ckpt, backbone=backbone, n_attn=n_attn, in_channels=in_channels, num_classes=num_source_classes,
            image_size=image_size, resize_size=resize_size,
        )
        image_size, resize_size, normalize = settings["image_size"], settings["resize_size"], settings["normalize"]
    else:
        image_size, resize_size = image_size or 224, resize_size or 256
        net = build_network(
            backbone or "resnet50", n_attn=n_attn or 0, n_input_channels=in_channels or 1, num_classes=num_source_classes
        )
        report = load_pretrained(net, ckpt, exclude_prefixes=())
        missing_head = [k for k in (report or {}).get("new", []) if k.startswith("fc.")]
        if report is None or missing_head:
            raise ValueError(
                f"checkpoint {ckpt} has no {num_source_classes}-way source head (fc): LEEP needs the source model's"
                " own classifier."
            )
    probs, labels = source_probabilities(net, datalist, image_size, resize_size, normalize=normalize)
    return compute_leep(probs, labels)



if __name__ == "__main__":  # the old command line, one release; the package's own is metrics/__main__.py
    import runpy

    print(f"python -m {__spec__.name} is deprecated: use python -m mstl_monai.metrics leep", file=sys.stderr)
    sys.argv[1:1] = ["leep"]
    runpy.run_module("mstl_monai.metrics", run_name="__main__", alter_sys=True)
