# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""How a finetuned model holds up when the images look as if they came from elsewhere (other scanners,
windows and image sources), measured on a COVID19-CT split with synthetic shifts.

Each checkpoint is scored on the split as the bundle's evaluation sees it (lung window, resize to the checkpoint's
size, centre crop, its normalisation, its flip TTA setting), then with one shift applied to every centre
crop: another window or contrast (gamma 0.5 / 2.0, a narrowed window), scanner noise, a coarser source (down to a
third and back), blur, a scanner's full field of view (the slice shrunk to 0.75x on air: lungs as small as on the
real series and LUNA16 slices). The shifts lie outside the ranges ``robust_augmentation`` trains with, so a model trained
with it is not tested on its own augmentation. It prints AUC [95% bootstrap CI], sensitivity and specificity at the
checkpoint's decision threshold per shift, and the AUC drop from the clean images; ``--json`` keeps them.

Held-out sources (other hospitals' CT) are the real test; this is the measurable proxy. Choose on ``--split val``.

.. code-block:: bash

    python scripts/robustness_check.py --ckpt runs/.../finetune/models/model.pt runs/.../finetune-robust_augmentation=True/models/model.pt --split val
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from mstl_monai.utils.io import atomic_write, check_output_path  # noqa: E402

#: name -> function of a (1, H, W) image in [0, 1] and a numpy Generator
SHIFTS = {
    "clean": lambda x, g: x,
    "gamma 0.5 (brighter window)": lambda x, g: x.clamp(0, 1) ** 0.5,
    "gamma 2.0 (darker window)": lambda x, g: x.clamp(0, 1) ** 2.0,
    "narrow window": lambda x, g: ((x - 0.2) / 0.6).clamp(0, 1),
    "noise sd 0.08": lambda x, g: (x + torch.from_numpy(g.normal(0, 0.08, x.shape)).to(x.dtype)).clamp(0, 1),
    "low resolution 1/3": lambda x, g: torch.nn.functional.interpolate(
        torch.nn.functional.interpolate(x[None], scale_factor=1 / 3, mode="area"), size=x.shape[-2:], mode="bilinear",
        align_corners=False)[0],
    "blur sigma 2": lambda x, g: _BLUR(x),
    # COVID19-CT's slices are cropped figures (lung box median 55 % of the slice); a scanner's full field of view shows
    # the lungs smaller (30-38 % on the real series and LUNA16 slices): the same slice shrunk to 0.75x on air
    "zoom out 0.75 (full field of view)": lambda x, g: _zoom_out(x, 0.75),
}


def _zoom_out(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``x`` (1, H, W) shrunk by ``factor`` and centred on air (0 in the lung window)."""
    small = torch.nn.functional.interpolate(x[None], scale_factor=factor, mode="area")[0]
    out = torch.zeros_like(x)
    h, w = small.shape[-2:]
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    out[..., top:top + h, left:left + w] = small
    return out


def _blur_transform():
    from monai.transforms import GaussianSmooth

    return GaussianSmooth(sigma=2.0)


_BLUR = _blur_transform()


def score(ckpt: str, split: str, data_root: Path, batch_size: int = 32, n_bootstrap: int = 500, **fallback) -> dict:
    from mstl_monai.data import covid_ct_datalist
    from mstl_monai.inferers import AutocastInferer, FlipTTAInferer
    from mstl_monai.networks.checkpoint import load_network
    from mstl_monai.metrics import bootstrap_classification_metrics
    from mstl_monai.visualize.explain import build_preprocessing

    net, s = load_network(ckpt, **fallback)
    thr = s.get("decision_threshold") or 0.5
    # the threshold was chosen on calibrated probabilities: apply the stored temperature as inference does
    temperature = float(s.get("temperature") or 1.0)
    # the bundle's evaluation preprocessing: lung window, resize, pad, centre crop ([0, 1]), then normalise
    display, normalize = build_preprocessing(s["image_size"], s["resize_size"], s["normalize"])
    inferer = FlipTTAInferer(AutocastInferer(enabled=True), enabled=bool(s.get("tta")))
    items = covid_ct_datalist(data_root / "covid-ct", split)
    base = [torch.as_tensor(display(it["image"]), dtype=torch.float32) for it in items]
    y = np.array([it["label"] for it in items])
    out = {"checkpoint": ckpt, "split": split, "n": len(items), "threshold": thr, "temperature": temperature,
           "tta": bool(s.get("tta")), "shifts": {}}
    for name, fn in SHIFTS.items():
        g = np.random.default_rng(0)
        imgs = torch.stack([torch.as_tensor(normalize(fn(x, g))) for x in base])
        probs = []
        with torch.inference_mode():
            for i in range(0, len(imgs), batch_size):
                probs.append(torch.softmax(inferer(imgs[i:i + batch_size], net).float() / temperature, 1)[:, 1])
        p = torch.cat(probs).numpy()
        m = bootstrap_classification_metrics(y, p, n_bootstrap=n_bootstrap, seed=0, threshold=thr)
        out["shifts"][name] = {k: m[k] for k in ("auc", "sensitivity", "specificity", "accuracy")}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", nargs="+", required=True, help="finetuned model.pt files (with their model.pt.json)")
    p.add_argument("--split", default="val", choices=["train", "val", "test"])
    p.add_argument("--data_root", default=os.environ.get("MSTL_DATA_ROOT", str(Path(__file__).resolve().parents[2] / "shared" / "data")))
    p.add_argument("--n_bootstrap", type=int, default=500)
    p.add_argument("--json", default=None)
    p.add_argument("--image_size", type=int, default=None, help="only for a checkpoint without model.pt.json")
    p.add_argument("--resize_size", type=int, default=None, help="only for a checkpoint without model.pt.json")
    a = p.parse_args(argv)
    # every argument checked before the first checkpoint is scored (minutes): one line each (exit 2)
    if a.n_bootstrap < 1:
        p.error(f"--n_bootstrap must be >= 1, got {a.n_bootstrap}")
    for name in ("image_size", "resize_size"):
        if getattr(a, name) is not None and getattr(a, name) < 8:
            p.error(f"--{name} must be >= 8 pixels, got {getattr(a, name)}")
    missing = [ck for ck in a.ckpt if not Path(ck).is_file()]
    if missing:
        p.error(f"checkpoint(s) not found: {', '.join(missing)}")
    if not (Path(a.data_root) / "covid-ct").is_dir():
        p.error(f"--data_root {a.data_root!r} holds no covid-ct folder")
    if a.json:
        try:
            check_output_path(a.json, "--json")
        except ValueError as e:
            p.error(str(e))
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    results = []
    for ck in a.ckpt:
        results.append(score(ck, a.split, Path(a.data_root), n_bootstrap=a.n_bootstrap, image_size=a.image_size,
                             resize_size=a.resize_size))
    for r in results:
        print(f"\n{r['checkpoint']} on {r['split']} ({r['n']} images, threshold {r['threshold']:.3f}, temperature {r['temperature']:.3f}, TTA {r['tta']})")
        print("| shift | AUC [95% CI] | ΔAUC | sensitivity | specificity |")
        print("|---|---|---|---|---|")
        clean = r["shifts"]["clean"]["auc"]["value"]
        for name, m in r["shifts"].items():
            auc = m["auc"]
            print(f"| {name} | {100 * auc['value']:.1f} [{100 * auc['ci_low']:.1f}, {100 * auc['ci_high']:.1f}] | "
                  f"{100 * (auc['value'] - clean):+.1f} | {100 * m['sensitivity']['value']:.1f} | {100 * m['specificity']['value']:.1f} |")
        shifted = [m["auc"]["value"] for name, m in r["shifts"].items() if name != "clean"]
        r["mean_shifted_auc"], r["worst_shifted_auc"] = float(np.mean(shifted)), float(min(shifted))
        print(f"mean AUC over the {len(shifted)} shifts {100 * r['mean_shifted_auc']:.1f}, worst {100 * r['worst_shifted_auc']:.1f}")
    if a.json:
        with atomic_write(a.json) as f:
            f.write(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
