# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Explain a trained classifier: Grad-CAM and attention overlays (the paper's Fig. 4) and a localisation check.
For a ViT backbone the attention column is the attention rollout (Abnar & Zuidema 2020) and Grad-CAM is left out.

.. code-block:: bash

    python -m mstl_monai.visualize.explain --ckpt runs/finetune/models/model.pt --input slice.png more_slices/ \\
        --output-dir explain/   # network and input size from the checkpoint (model.pt.json)

For every readable input it writes ``<name>_explain.png`` (slice | Grad-CAM overlay | attention overlay) and a row
of ``localization.csv``: the share of each heat map's mass inside the lung box found by the lobe Generator, and
the share of the image that box covers (a map that ignores the lungs scores about the latter). ``summary.json``
holds the means. Unreadable files are reported and skipped.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

__all__ = ["build_preprocessing", "explain_files", "main"]

logger = logging.getLogger(__name__)


def build_preprocessing(image_size: int = 224, resize_size: int = 256, normalize: Mapping[str, float] | None = None):
    """The inference preprocessing of the bundle, split in two: ``display`` ([0, 1] crop) and ``normalize``.

    Args:
        image_size: the crop (the checkpoint's ``image_size``).
        resize_size: the longest-side resize before the crop (its ``resize_size``).
        normalize: ``{"subtrahend", "divisor"}``, the checkpoint's ``normalize`` (default:
            :data:`~mstl_monai.networks.sidecar.NORMALIZE`).
    """
    from monai.transforms import CenterSpatialCrop, Compose, NormalizeIntensity, Resize, SpatialPad

    from mstl_monai.networks.sidecar import NORMALIZE
    from mstl_monai.transforms import LoadCTSlice

    display = Compose(
        [
            LoadCTSlice(),
            Resize(spatial_size=resize_size, size_mode="longest", mode="area"),
            SpatialPad(spatial_size=(resize_size, resize_size)),
            CenterSpatialCrop(roi_size=(image_size, image_size)),
        ]
    )
    norm = dict(normalize or NORMALIZE)
    normalize = NormalizeIntensity(subtrahend=float(norm["subtrahend"]), divisor=float(norm["divisor"]))
    return display, normalize


def explain_files(
    net: torch.nn.Module,
    files: list[str],
    output_dir: str,
    image_size: int = 224,
    resize_size: int = 256,
    class_idx: int | None = 1,
    class_names: tuple[str, ...] = ("non-COVID", "COVID"),
    figures: bool = True,
    normalize: Mapping[str, float] | None = None,
) -> dict:
    """Write explanation figures and the localisation table for ``files``; return the summary (``normalize``: the
    checkpoint's intensity normalisation, see :func:`build_preprocessing`)."""
    from mstl_monai.transforms import LungLobeGenerator
    from mstl_monai.visualize import (
        attention_heatmap,
        attention_rollout,
        box_area_fraction,
        grad_cam,
        mag_sd_heatmap,
        save_explanation_figure,
    )

    os.makedirs(output_dir, exist_ok=True)
    display, normalize = build_preprocessing(image_size, resize_size, normalize)
    locate = LungLobeGenerator(spatial_size=8)
    device = next(net.parameters()).device
    has_attn = bool(getattr(net, "attention_blocks", {}))
    # a ViT: attention rollout in the attention column (its token maps are no conv maps for Grad-CAM)
    is_vit = bool(getattr(net, "attention_layers", None))
    # MAG-SD: its multiscale attention maps in the attention column, Grad-CAM on its last feature map
    mag_sd = callable(getattr(net, "forward_with_maps", None))
    method = "rollout" if is_vit else ("mag_sd" if mag_sd else ("attn" if has_attn else "none"))
    net.eval()
    rows, skipped = [], []
    for f in files:
        try:
            img = display(f)
        except Exception as e:  # report and continue
            skipped.append((f, f"{type(e).__name__}: {e}"))
            logger.warning(f"skipping {f}: {e}")
            continue
        img = torch.as_tensor(img).float()
        x = normalize(img.clone())[None].to(device)
        with torch.no_grad():
            prob = torch.softmax(net(x).float(), 1)[0].cpu().numpy()
        cam_layer = getattr(net, "cam_layer", "layer4")
        cam = None if is_vit else grad_cam(net, x, class_idx=class_idx, target_layers=cam_layer)[0, 0].cpu().numpy()
        if is_vit:
            attn = attention_rollout(net, x)[0, 0].cpu().numpy()
        elif mag_sd:
            attn = mag_sd_heatmap(net, x)[0, 0].cpu().numpy()
        else:
            attn = attention_heatmap(net, x)[0, 0].cpu().numpy() if has_attn else None
        lobes = locate(img)
        box = [int(v) for v in lobes.lung_box.tolist()]
        row = {
            "file": f,
            "p_" + class_names[1]: float(prob[1]),
            "lung_box": " ".join(map(str, box)),
            "lung_fallback": bool(lobes.fallback),
            "box_area_fraction": box_area_fraction(box, img.shape[-2:]),
            "gradcam_mass_in_lung_box": _mass(cam, box),
            "attention_mass_in_lung_box": _mass(attn, box),
            "attention_method": method,
        }
        rows.append(row)
        if figures:
            title = f"{Path(f).name}: p({class_names[1]}) = {prob[1]:.2f}"
            save_explanation_figure(
                os.path.join(output_dir, f"{Path(f).stem}_explain.png"),
                img[0].numpy(),
                cam,
                attn,
                title=title,
                attention_label={"rollout": "attention rollout", "mag_sd": "MAG-SD attention"}.get(
                    method, "attention (ATTN)"
                ),
            )
    if not rows:
        raise ValueError(f"none of the {len(files)} inputs could be read.")
    with open(os.path.join(output_dir, "localization.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    ok = [r for r in rows if not r["lung_fallback"]]

    def mean(key: str) -> float | None:
        vals = [r[key] for r in ok if not np.isnan(r[key])]
        return float(np.mean(vals)) if vals else None

    summary = {
        "n_images": len(rows),
        "n_lung_found": len(ok),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "n_zero_gradcam": None if is_vit else int(sum(np.isnan(r["gradcam_mass_in_lung_box"]) for r in rows)),
        "mean_box_area_fraction": mean("box_area_fraction"),
        "mean_gradcam_mass_in_lung_box": mean("gradcam_mass_in_lung_box"),
        "mean_attention_mass_in_lung_box": mean("attention_mass_in_lung_box"),
        "class_idx": class_idx,
        "attention_method": method,
    }
    for method in ("gradcam", "attention"):
        summary[f"{method}_excess_over_box"] = _excess_over_box(ok, f"{method}_mass_in_lung_box")
    with open(os.path.join(output_dir, "summary.json"), "w") as fh:
        json.dump(summary, fh, indent=2)
    return summary


def _excess_over_box(rows: list[dict], key: str, n_bootstrap: int = 2000, seed: int = 0) -> dict | None:
    """Mean over images of (map mass in the lung box - box share of the image), with a 95% bootstrap CI.

    Positive: the map favours the lungs beyond what their area gives; about 0: a map blind to the lungs.
    """
    diff = np.array([r[key] - r["box_area_fraction"] for r in rows if not np.isnan(r[key])])
    if not diff.size:
        return None
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(n_bootstrap, diff.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return {"mean": float(diff.mean()), "ci_low": float(lo), "ci_high": float(hi), "n": int(diff.size)}


def _mass(heatmap: np.ndarray | None, box: list[int]) -> float:
    """Share of the map's mass in the box; NaN for no map or an all-zero map (Grad-CAM's ReLU can zero it)."""
    from mstl_monai.visualize import heatmap_mass_in_box

    if heatmap is None or float(np.sum(heatmap)) <= 0.0:
        return float("nan")
    return heatmap_mass_in_box(heatmap, box)


def main(argv: list[str] | None = None) -> int:
    from mstl_monai.networks.checkpoint import load_network  # the checkpoint says what it is (its settings file)

    p = argparse.ArgumentParser(description="Grad-CAM / attention overlays and a lung localisation check.", allow_abbrev=False)
    p.add_argument("--ckpt", required=True, help="finetuned checkpoint (models/model.pt)")
    p.add_argument("--backbone", default=None, help="default: the checkpoint's (model.pt.json or its weights)")
    p.add_argument("--n-attn", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--in-channels", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's (224 without model.pt.json)")
    p.add_argument("--resize-size", type=int, default=None, help="default: the checkpoint's (256 without model.pt.json)")
    p.add_argument("--class-idx", type=int, default=1, help="class explained by Grad-CAM (default 1 = COVID)")
    p.add_argument("--input", nargs="+", required=True, help="files and/or folders")
    p.add_argument("--max-files", type=int, default=0, help="use only the first N files (0: all)")
    p.add_argument("--no-figures", action="store_true", help="write only the localisation table")
    p.add_argument("--output-dir", required=True)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    # the checkpoint says what it is; a given setting that contradicts its weights or settings file is an error
    net, s = load_network(
        a.ckpt, backbone=a.backbone, n_attn=a.n_attn, in_channels=a.in_channels, num_classes=a.num_classes,
        image_size=a.image_size, resize_size=a.resize_size,
    )
    from mstl_monai.data.utils import collect_files

    files = collect_files(a.input)
    if a.max_files:
        files = files[: a.max_files]
    summary = explain_files(
        net, files, a.output_dir, s["image_size"], s["resize_size"], class_idx=a.class_idx,
        class_names=tuple(s["class_names"]), figures=not a.no_figures, normalize=s["normalize"],
    )
    print(json.dumps({k: v for k, v in summary.items() if k != "skipped"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
