# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The shipped classifier's test figures: metrics with CIs at 0.5 and at each stored operating point, and the
expected calibration error of the network's own and of the calibrated probabilities.

Evaluate the checkpoint on the test split first (evaluate applies the stored temperature), then:

    cd bundle && ../.venv/bin/python -m monai.bundle run \
        --config_file "['configs/train.yaml','configs/evaluate.yaml']" --eval_ckpt models/model.pt --output_dir ../runs/shipped_eval
    cd .. && .venv/bin/python scripts/model_card.py --ckpt bundle/models/model.pt \
        --predictions runs/shipped_eval/predictions.csv --out results/cpu_scale/shipped_model.json

The operating points and the temperature were chosen on the val split by the finetune stage and are read from the
checkpoint's settings file; the test split is only scored here.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mstl_monai.metrics import (  # noqa: E402
    apply_temperature,
    bootstrap_classification_metrics,
    expected_calibration_error,
    read_predictions_csv,
    write_metrics_json,
)
from mstl_monai.networks.sidecar import info_path, read_checkpoint_info  # noqa: E402

SHOWN = ("accuracy", "auc", "sensitivity", "specificity")


def check_predictions_match(ckpt: Path, info: dict, predictions: Path, class_names: list[str]) -> None:
    """Refuse predictions that another checkpoint wrote: their class names, or their ``threshold`` column (evaluate
    writes the threshold it decided at, one of the checkpoint's stored ones), differ from ``ckpt``'s settings file.
    Files of earlier releases have no threshold column: only the class names can be checked (said on stdout)."""
    stored_names = info.get("class_names")
    if stored_names and list(stored_names) != list(class_names):
        raise ValueError(f"{predictions} has classes {class_names}, {ckpt}.json {list(stored_names)}: another model's predictions?")
    with open(predictions, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows or "threshold" not in rows[0]:
        print(f"note: {predictions} has no threshold column (an earlier release's file): only its class names were "
              f"checked against {ckpt}.json")
        return
    written = {r["threshold"] for r in rows}
    stored = [info.get("decision_threshold"), *(info.get("operating_points") or {}).values(), 0.5]
    stored = [float(t) for t in stored if t is not None]
    for t in written:
        try:
            value = float(t)
        except ValueError:
            raise ValueError(f"{predictions}: threshold {t!r} is not a number.") from None
        if not any(abs(value - u) <= 1e-5 for u in stored):
            raise ValueError(
                f"{predictions} was decided at threshold {t}, which is none of {ckpt}.json's stored thresholds "
                f"{sorted(set(round(u, 6) for u in stored))}: another checkpoint's predictions?"
            )


def card(ckpt: Path, predictions: Path, n_bootstrap: int = 1000) -> dict:
    info = read_checkpoint_info(ckpt)
    if info is None:
        raise ValueError(f"{ckpt}.json is missing: the operating points and temperature are read from it.")
    names, y, probs, class_names = read_predictions_csv(predictions)
    if len(class_names) != 2:
        raise ValueError(f"{predictions}: {len(class_names)} classes; this card is for a binary classifier.")
    check_predictions_match(ckpt, info, predictions, class_names)
    temperature = float(info.get("temperature") or 1.0)
    calibrated = probs[:, 1]
    raw = apply_temperature(calibrated, 1.0 / temperature)  # undo softmax(z / T): softmax(log p * T)
    points = {"0.5": 0.5, **{k: float(v) for k, v in (info.get("operating_points") or {}).items() if v is not None}}
    out = {
        "checkpoint": str(ckpt),
        "predictions": str(predictions),
        "n": int(len(y)),
        "temperature": temperature,
        # read_checkpoint_info fills an absent temperature with 1.0: ask the file whether it records one
        "calibrated_by_temperature": json.loads(info_path(ckpt).read_text()).get("temperature") is not None,
        "operating_points": {},
        "ece": {
            "network_output": expected_calibration_error(y, raw),
            "calibrated": expected_calibration_error(y, calibrated),
        },
        "val_calibration": info.get("calibration"),
    }
    for name, t in points.items():
        m = bootstrap_classification_metrics(y, calibrated, n_bootstrap=n_bootstrap, threshold=t)
        out["operating_points"][name] = {"threshold": t, **{k: m[k] for k in SHOWN}}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--ckpt", required=True, help="the checkpoint whose settings file holds the operating points")
    ap.add_argument("--predictions", required=True, help="evaluate's predictions.csv for that checkpoint")
    ap.add_argument("--out", required=True, help="the JSON file to write")
    ap.add_argument("--n_bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)
    try:
        result = card(Path(args.ckpt), Path(args.predictions), args.n_bootstrap)
    except (FileNotFoundError, ValueError) as e:
        print(f"model_card: {e}", file=sys.stderr)
        return 2
    write_metrics_json(args.out, result)
    for name, m in result["operating_points"].items():
        shown = ", ".join(f"{k} {100 * m[k]['value']:.1f} [{100 * m[k]['ci_low']:.1f}, {100 * m[k]['ci_high']:.1f}]" for k in SHOWN)
        print(f"{name} (threshold {m['threshold']:.4f}): {shown}")
    e = result["ece"]
    if result["calibrated_by_temperature"]:
        print(f"ECE on test: network output {e['network_output']:.3f}, calibrated (T = {result['temperature']:.3f}) {e['calibrated']:.3f}")
    else:
        print(f"ECE on test: {e['network_output']:.3f} (the checkpoint has no temperature: uncalibrated)")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    raise SystemExit(main())
