# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The 3-class chest X-ray task (normal / pneumonia / COVID-19, ``../shared/data/cxr``): plain vs MAG-SD.

Trains each arm with the bundle (``train.yaml`` + ``stl_m.yaml`` + ``cpu.yaml``: R-18 +5 ATTN, 128 px, batch 32,
bf16, SGD lr 0.01, the STL-M stage's chest X-ray augmentation and its seeded 10 % val split of the train rows for
checkpoint selection by val AUC; without / with ``configs/mag_sd.yaml``, same seed and epochs), then scores the best
checkpoint of each on the manifest's test split: accuracy, macro-F1, per-class F1 and one-vs-rest AUC, each with a
95 % bootstrap interval over test images, and the paired bootstrap difference MAG-SD - plain. Writes
``<out>/results.json`` and each arm's ``<out>/<arm>/test_predictions.csv``; a rerun resumes or reuses the runs.

The data's known source artefact (PROVENANCE.md): COVID-19 images come from papers and web uploads, the
normal/pneumonia bulk from NIH ChestX-ray8, so a classifier can tell COVID-19 by source; the COVID-19 numbers
measure that as much as disease. ``results.json`` also reports the metrics on the test images of the sources that
hold more than one class (cohen, actmed, fig1), which the source alone does not separate.

.. code-block:: bash

    OMP_NUM_THREADS=1 python scripts/cxr_mag_sd.py --epochs 6 --out runs/cxr_mag_sd
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
CONFIGS = os.path.join(REPO, "bundle", "configs")


def train(arm: str, args: argparse.Namespace) -> float:
    run_dir = os.path.join(args.out, arm)
    names = ["train.yaml", "stl_m.yaml", "cpu.yaml"] + (["mag_sd.yaml"] if arm == "mag_sd" else [])
    files = json.dumps([os.path.join(CONFIGS, c) for c in names])
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files,
           "--bundle_root", os.path.join(REPO, "bundle"), "--n_attn", str(args.n_attn), "--epochs", str(args.epochs),
           "--run_dir", run_dir, "--num_workers", str(args.num_workers),
           "--seed", str(args.seed)]
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    with open(os.path.join(args.out, f"{arm}_train.log"), "a") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env)
    return time.perf_counter() - t0


def predict(arm: str, args: argparse.Namespace):
    import numpy as np
    import torch
    from monai.bundle import ConfigParser

    ckpt = os.path.join(args.out, arm, "models", "model.pt")
    parser = ConfigParser()
    parser.read_config([os.path.join(CONFIGS, c) for c in ("train.yaml", "stl_m.yaml", "evaluate.yaml")])
    parser.update({
        "bundle_root": os.path.join(REPO, "bundle"), "eval_ckpt": ckpt, "num_workers": args.num_workers,
        "run_dir": os.path.join(args.out, arm), "amp": True, "batch_size": 32,
        "validate#datalist": "$mstl_monai.data.cxr_datalist(@dataset_dir, 'test')",
    })
    parser.parse()
    net = parser.get_parsed_content("network")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    loader = parser.get_parsed_content("validate#dataloader")
    datalist = parser.get_parsed_content("validate#datalist")
    probs, labels = [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for batch in loader:
            x = batch["image"]
            x = x.as_tensor() if hasattr(x, "as_tensor") else x
            probs.append(torch.softmax(net(x).float(), dim=1).numpy())
            labels.append(np.asarray(batch["label"]).reshape(-1))
    return [d["image"] for d in datalist], np.concatenate(labels), np.concatenate(probs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=15, help="per arm (the CPU recipe's STL-M has 15)")
    ap.add_argument("--n_attn", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--num_workers", type=int, default=0)
    ap.add_argument("--n_bootstrap", type=int, default=1000)
    ap.add_argument("--arms", nargs="+", default=["plain", "mag_sd"])
    ap.add_argument("--out", default=os.path.join(REPO, "runs", "cxr_mag_sd"))
    args = ap.parse_args()
    args.out = os.path.abspath(args.out)
    os.makedirs(args.out, exist_ok=True)
    sys.path.insert(0, REPO)
    from mstl_monai.data.datalists import CXR_CLASSES
    from mstl_monai.metrics.multiclass import bootstrap_multiclass_metrics, paired_bootstrap_multiclass

    names = list(CXR_CLASSES)
    results: dict = {"setting": vars(args), "classes": names, "arms": {}}
    preds = {}
    for arm in args.arms:
        seconds = train(arm, args)
        files, y, p = predict(arm, args)
        preds[arm] = (files, y, p)
        with open(os.path.join(args.out, arm, "test_predictions.csv"), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["file", "label"] + [f"prob_{c}" for c in names])
            for fi, yi, pi in zip(files, y, p):
                rel = os.path.relpath(fi, os.path.dirname(os.path.dirname(fi)))
                w.writerow([rel, int(yi)] + [f"{v:.6f}" for v in pi])
        sources = [os.path.basename(fi).split("__")[0] for fi in files]
        mixed = np.array([s != "nih" for s in sources])  # file names: <label>/<source>__<stem>.png
        results["arms"][arm] = {
            "train_seconds_this_call": round(seconds, 1),
            "test": bootstrap_multiclass_metrics(y, p, names, args.n_bootstrap, args.seed),
            "test_non_nih": bootstrap_multiclass_metrics(y[mixed], p[mixed], names, args.n_bootstrap, args.seed),
        }
        m = results["arms"][arm]["test"]
        print(f"{arm:>7}: " + ", ".join(
            f"{k} {v['value']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for k, v in m.items()
            if isinstance(v, dict) and (k in ("accuracy", "macro_f1") or k.startswith("auc_"))), flush=True)
    if "plain" in preds and "mag_sd" in preds:
        (_, y, pa), (_, _, pb) = preds["plain"], preds["mag_sd"]
        d = paired_bootstrap_multiclass(y, pa, pb, names, args.n_bootstrap, args.seed)
        results["mag_sd_minus_plain"] = d
        print("MAG-SD - plain: " + ", ".join(
            f"{k} {v['difference']:+.3f} [{v['ci_low']:+.3f}, {v['ci_high']:+.3f}]" for k, v in d.items()
            if isinstance(v, dict) and (k in ("accuracy", "macro_f1") or k.startswith("auc_"))))
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"results in {os.path.join(args.out, 'results.json')}")


import numpy as np  # noqa: E402  (used in main after the repo path is set)

if __name__ == "__main__":
    main()
