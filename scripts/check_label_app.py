#!/usr/bin/env python
"""Serve a finetuned checkpoint through the MONAI Label app and check it answers like the bundle's evaluation.

    python scripts/check_label_app.py --checkpoint runs/cpu_scale/resnet18_attn5/stl_m/finetune/models/model.pt \\
        --predictions runs/cpu_scale/resnet18_attn5/stl_m/finetune/eval_test/predictions.csv --image-size 128 --resize-size 146

Builds an app folder and a datastore holding the images named in ``predictions.csv`` (COVID19-CT test slices),
starts the server from the label environment on 127.0.0.1, asks ``/infer`` for every image, and prints the largest
difference between the served COVID probability and the bundle's, the agreement of the predicted classes, the
accuracy of the served answers, and the latency per request. Also times one Grad-CAM heat map request.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from mstl_monai.label.client import serve  # noqa: E402

MODEL = "mstl_covid_classification"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--predictions", required=True, help="predictions.csv written by evaluate.yaml")
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "covid-ct"))
    p.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's own (its settings file)")
    p.add_argument("--resize-size", type=int, default=None, help="default: the checkpoint's own (its settings file)")
    p.add_argument("--python", default=str(REPO / ".venv-label" / "bin" / "python"))
    p.add_argument("--limit", type=int, default=0, help="only the first N images (0: all)")
    a = p.parse_args(argv)
    rows = list(csv.DictReader(open(a.predictions)))
    if a.limit:
        rows = rows[: a.limit]
    from mstl_monai.data import covid_ct_datalist

    # predictions.csv names files as the official split lists them; the datalist knows where they are
    files = {(Path(d["image"]).stem, int(d["label"])): Path(d["image"]) for d in covid_ct_datalist(a.data, "test")}
    with tempfile.TemporaryDirectory() as tmp:
        studies = Path(tmp, "studies")
        studies.mkdir()
        ids = {}
        for i, r in enumerate(rows):
            src = files[(Path(r.get("file") or r["name"]).stem, int(r["label"]))]  # evaluate.yaml's columns, or earlier ones
            image_id = f"img{i:04d}"
            os.symlink(src, studies / f"{image_id}{src.suffix.lower()}")
            ids[image_id] = r
        app = Path(tmp, "app")
        sizes = [f for flag, v in (("--image-size", a.image_size), ("--resize-size", a.resize_size)) if v for f in (flag, str(v))]
        subprocess.run([a.python, "-m", "mstl_monai.label", "init", "--app-dir", str(app), "--checkpoint", a.checkpoint, *sizes],
                       check=True, cwd=REPO)
        t0 = time.time()
        with serve(app, studies, python=a.python, log_file=Path(tmp, "server.log")) as c:
            print(f"server up in {time.time() - t0:.1f}s", flush=True)
            diffs, agree, correct, lat = [], 0, 0, []
            for image_id, r in ids.items():
                t = time.time()
                code, res = c.json("POST", f"/infer/{MODEL}?image={image_id}&output=json")
                lat.append(time.time() - t)
                if code != 200:
                    raise SystemExit(f"{image_id} ({r['name']}): HTTP {code} {res}")
                served = res["class_probabilities"]["covid"]
                diffs.append(abs(served - float(r["prob_COVID"])))
                pred = int(served > res["class_probabilities"]["non-covid"])
                agree += pred == int(r["pred"])
                correct += pred == int(r["label"])
            t = time.time()
            code, body, _ = c.call("POST", f"/infer/{MODEL}?image={next(iter(ids))}&output=image", fields={"params": '{"heatmap": "gradcam"}'})
            heat_s = time.time() - t
            n = len(ids)
            out = {
                "images": n,
                "max_abs_diff_prob_covid": max(diffs),
                "mean_abs_diff_prob_covid": sum(diffs) / n,
                "class_agreement": agree / n,
                "served_accuracy": correct / n,
                "median_latency_s": sorted(lat)[n // 2],
                "gradcam_request_s": heat_s,
                "gradcam_status": code,
            }
            print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
