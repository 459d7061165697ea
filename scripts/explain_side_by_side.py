# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""One figure: the same CT slices explained by several finetuned models, side by side (a README figure).

A ResNet gets Grad-CAM for the COVID class (and its non-local attention map when it has ATTN blocks); a ViT gets its
attention rollout (Abnar & Zuidema 2020; Grad-CAM does not apply to its tokens). Each model reads its own network,
input size and preprocessing from the checkpoint (``model.pt.json``; ``--image-size``/``--resize-size`` for an old
checkpoint without one), exactly as ``python -m mstl_monai.visualize.explain`` does; the title of each panel gives the
model's p(COVID).

.. code-block:: bash

    python scripts/explain_side_by_side.py --ckpt R18=runs/.../finetune/models/model.pt ViT=runs/.../model.pt \\
        --input slice1.png slice2.png --output results/cpu_scale/explain_side_by_side.png
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def _model(path: str, image_size: int | None, resize_size: int | None):
    from mstl_monai.networks.checkpoint import load_network

    return load_network(path, image_size=image_size, resize_size=resize_size)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", nargs="+", required=True, help="LABEL=model.pt, one per model (column)")
    p.add_argument("--input", nargs="+", required=True, help="CT slices (rows)")
    p.add_argument("--output", required=True, help="the PNG to write")
    p.add_argument("--image-size", type=int, default=None, help="only for checkpoints without model.pt.json")
    p.add_argument("--resize-size", type=int, default=None, help="only for checkpoints without model.pt.json")
    p.add_argument("--dpi", type=int, default=72, help="figure resolution (72: small enough to keep in git)")
    a = p.parse_args(argv)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mstl_monai.utils.io import atomic_write
    from mstl_monai.visualize import attention_heatmap, attention_rollout, grad_cam
    from mstl_monai.visualize.explain import build_preprocessing
    from mstl_monai.visualize.overlay import overlay

    models = []
    for spec in a.ckpt:
        if "=" not in spec:
            raise SystemExit(f"--ckpt {spec!r}: write LABEL=path/to/model.pt")
        label, path = spec.split("=", 1)
        if not Path(path).is_file():
            raise SystemExit(f"checkpoint {path} does not exist")
        models.append((label, *_model(path, a.image_size, a.resize_size)))
    cols = 1 + sum(1 + bool(getattr(n, "attention_blocks", {})) for _, n, _ in models)
    fig = Figure(figsize=(2.6 * cols, 2.8 * len(a.input)))
    FigureCanvasAgg(fig)
    for i, f in enumerate(a.input):
        col = 0
        for label, net, s in models:
            display, normalize = build_preprocessing(s["image_size"], s["resize_size"], s["normalize"])
            img = torch.as_tensor(display(f)).float()
            x = normalize(img.clone())[None]
            with torch.no_grad():
                prob = float(torch.softmax(net(x).float(), 1)[0, 1])
            if col == 0:
                ax = fig.add_subplot(len(a.input), cols, i * cols + 1)
                ax.imshow(img[0].numpy(), cmap="gray")
                ax.set_title(Path(f).name[:28], fontsize=7)
                ax.axis("off")
                col = 1
            if getattr(net, "attention_layers", None):  # a ViT
                maps = [("rollout", attention_rollout(net, x)[0, 0].numpy())]
            else:
                maps = [("Grad-CAM", grad_cam(net, x, class_idx=1)[0, 0].numpy())]
                if getattr(net, "attention_blocks", {}):
                    maps.append(("ATTN", attention_heatmap(net, x)[0, 0].numpy()))
            for name, m in maps:
                ax = fig.add_subplot(len(a.input), cols, i * cols + col + 1)
                ax.imshow(overlay(img[0].numpy(), m, alpha=0.4))
                ax.set_title(f"{label} {name}\np(COVID) = {prob:.2f}", fontsize=7)
                ax.axis("off")
                col += 1
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=a.dpi)
    with atomic_write(a.output, "wb") as fh:
        fh.write(buf.getvalue())
    print(f"wrote {a.output} ({len(a.input)} slices x {len(models)} models)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
