"""A stand-in for ``python -m monai.bundle run`` in the pipeline tests: takes the stage command's ``--key value``
settings, writes what the real stage writes (``models/model.pt``; for an evaluation, ``evaluate.yaml`` among the
config files, ``metrics.json`` and ``predictions.csv``, the accuracy computed from the settings) and prints the
settings as MONAI's input summary does.

``FAKE_STAGE_SLEEP`` (seconds) keeps a stage running (two processes at once); ``FAKE_STAGE_FAIL`` (a stage's
``run_dir`` or ``output_dir`` suffix) makes that stage exit 1. :func:`fake_bundle` patches the pipeline to run it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from unittest import mock

FAKE = str(Path(__file__).resolve())


def _settings(argv: list[str]) -> dict[str, str]:
    out, key = {}, None
    for a in argv:
        if a.startswith("--"):
            key = a[2:]
            out[key] = ""
        elif key is not None:
            out[key] = a
            key = None
    return out


def accuracy(settings: dict) -> float:
    """The fake evaluation's accuracy: differs whenever the finetune's epochs or learning rate do."""
    return round(0.5 + 0.01 * float(settings.get("epochs", 0)) + float(settings.get("learning_rate", 0)), 6)


def _main(argv: list[str]) -> int:
    s = _settings(argv)
    evaluating = "evaluate.yaml" in s.get("config_file", "")
    for k, v in s.items():  # like MONAI's "--- input summary of monai.bundle.scripts.run ---"
        print(f"> {k}: {v}", flush=True)
    time.sleep(float(os.environ.get("FAKE_STAGE_SLEEP", "0")))
    where = s.get("output_dir") if evaluating else s.get("run_dir")
    fail = os.environ.get("FAKE_STAGE_FAIL")
    if fail and where and where.endswith(fail):
        print("RuntimeError: the fake stage was told to fail", flush=True)
        return 1
    if evaluating:
        out = Path(s["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        trained = json.loads((Path(s["run_dir"]) / "models" / "model.pt").read_text())
        acc = accuracy(trained)
        metrics = {"accuracy": {"value": acc, "ci_low": acc - 0.05, "ci_high": acc + 0.05}, "n": 4}
        # as the real report: the metrics at 0.5 at the top, those at the checkpoint's threshold under at_threshold
        metrics["decision_threshold"] = {"value": 0.4375, "source": "checkpoint"}
        metrics["at_threshold"] = {"accuracy": {"value": acc + 0.02, "ci_low": acc - 0.03, "ci_high": acc + 0.07}, "n": 4}
        print(f"evaluation on 4 test images: test accuracy {acc:.3f} (threshold 0.5); report in {out}", flush=True)
        (out / "metrics.json").write_text(json.dumps(metrics))
        (out / "predictions.csv").write_text(f"image,label,prob_covid\nx.png,1,{acc}\n")
    else:
        models = Path(s["run_dir"]) / "models"
        models.mkdir(parents=True, exist_ok=True)
        (models / "model.pt").write_text(json.dumps(s))
        if "method" in s:
            (Path(s["run_dir"]) / "probe.json").write_text(json.dumps({"knn_top1": 0.5}))
    print("Trainer - INFO - Epoch[1] Complete", flush=True)
    return 0


@contextlib.contextmanager
def fake_bundle():
    """Run every stage of :func:`mstl_monai.pipeline.run_chain` with this script instead of the bundle."""
    from mstl_monai.pipeline import run as run_mod

    real = run_mod.plan_chain

    def plan(*args, **kwargs):
        steps = real(*args, **kwargs)
        for step in steps:
            assert step["cmd"][1:3] == ["-m", "monai.bundle"], step["cmd"]
            step["cmd"] = [sys.executable, FAKE] + step["cmd"][4:]
        return steps

    with mock.patch.object(run_mod, "plan_chain", plan):
        yield


def run_main(argv: list[str]) -> int:
    """``mstl-pipeline`` with the fake bundle (for a second process in the tests)."""
    from mstl_monai.pipeline import main

    with fake_bundle():
        return main(argv)


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
