# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Running a chain: its stages in order as bundle processes, finished stages skipped, result files published."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from mstl_monai.pipeline.plan import plan_chain

__all__ = [
    "ADDED_STAGE_DEFAULTS",
    "SPEC_VERSION",
    "StageProgress",
    "chain_spec",
    "results_up_to_date",
    "run_chain",
    "run_dir_results",
]


def _done_file(step: dict) -> Path:
    return Path(step["dir"]) / "DONE.json"


_PATH_KEYS = ("run_dir", "pretrained", "data_root")

#: bundle settings added after results were first recorded, with the value those results were made with: a saved
#: chain.json without the key matches a config that states this value (e.g. a grid run before the guarded
#: checkpoint selection existed, pinned to ``selection_min_class_fraction: 0.0``)
ADDED_STAGE_DEFAULTS: dict[str, dict[str, Any]] = {"finetune": {"selection_min_class_fraction": 0.0}}
#: written into each results/<chain>/chain.json; records older than this lack ADDED_STAGE_DEFAULTS' settings
SPEC_VERSION = 2


def chain_spec(cfg: dict, chain: dict, repo_root: str | os.PathLike = ".") -> list[tuple[str, dict]]:
    """What a chain computes, independent of where the repository lies: each stage with its settings, paths
    made relative to the output root (so a fresh clone elsewhere recognises results made here)."""
    out_root = (Path(repo_root).resolve() / cfg["output_root"]).resolve()
    spec = []
    for step in plan_chain(cfg, chain, repo_root):
        ov = {}
        for k, v in step["overrides"].items():
            if k in _PATH_KEYS and isinstance(v, str) and v:
                p = Path(v)
                v = os.path.relpath(p, out_root) if p.is_relative_to(out_root) else p.name
            ov[k] = v
        spec.append((step["stage"], ov))
    return spec


def results_up_to_date(cfg: dict, chain: dict, repo_root: str | os.PathLike = ".") -> bool:
    """Whether ``<results_dir>/<chain>/`` (kept in git) holds the metrics of exactly this chain, so that it need not
    run again: ``metrics.json`` exists and the settings saved beside it in ``chain.json`` plan the same stages."""
    results_dir = Path(repo_root) / cfg["results_dir"] / chain["name"]
    saved = results_dir / "chain.json"
    if not (results_dir / "metrics.json").is_file() or not saved.is_file():
        return False
    try:
        old = json.loads(saved.read_text())
        old_defaults = {k: dict(v) for k, v in (old.get("stage_defaults") or {}).items()}
        if old.get("spec_version", 1) < SPEC_VERSION:  # settings that did not exist when the results were made
            for stage, added in ADDED_STAGE_DEFAULTS.items():
                for k, v in added.items():
                    old_defaults.setdefault(stage, {}).setdefault(k, v)
        old_cfg = dict(cfg, common=old.get("common", {}), stage_defaults=old_defaults)
        return chain_spec(old_cfg, old["chain"], repo_root) == chain_spec(cfg, chain, repo_root)
    except (ValueError, KeyError, TypeError):
        return False


def run_dir_results(cfg: dict, repo_root: str | os.PathLike = ".") -> Path:
    """Where a run writes its chains' result files: ``<output_root>/results`` (the run folder, not kept in git)."""
    return Path(repo_root) / cfg["output_root"] / "results"


def run_chain(
    cfg: dict,
    chain: dict,
    repo_root: str | os.PathLike = ".",
    dry_run: bool = False,
    rerun: bool = False,
    publish: bool = False,
    tracking: str | None = None,
) -> list[dict]:
    """Run the stages of one chain in order; skip finished ones; return a summary row per stage.

    The chain's result files go to :func:`run_dir_results` ``/<chain>/``, and with ``publish`` also to
    ``<results_dir>/<chain>/`` (kept in git). A chain whose published results were made with the same settings is
    skipped as a whole, even where ``runs/`` is empty (a fresh clone): a grid can be completed over several sessions.
    ``rerun`` turns that off (stages with ``DONE.json`` in ``runs/`` are still skipped). ``tracking`` (``"mlflow"``)
    records each stage it runs as a run of the chain's MLflow experiment (:func:`~mstl_monai.pipeline.plan_chain`).
    """
    rows = []
    steps = plan_chain(cfg, chain, repo_root, tracking=tracking)
    published = Path(repo_root) / cfg["results_dir"] / chain["name"]
    targets = [run_dir_results(cfg, repo_root) / chain["name"]] + ([published] if publish else [])
    if not rerun and results_up_to_date(cfg, chain, repo_root):
        metrics = json.loads((published / "metrics.json").read_text())
        timing_file = published / "timing.json"
        timing = json.loads(timing_file.read_text()) if timing_file.is_file() else {}
        print(f"[{chain['name']}] results for these settings are in {published}: skipped (--rerun to train again)", flush=True)
        for step in steps:
            if not dry_run and _done_file(step).is_file():  # runs/ here too: refresh the result files from it
                _publish(step, chain, cfg, targets)
            row = {"chain": chain["name"], "stage": step["stage"], "seconds": timing.get(step["stage"]) or 0}
            if step["stage"] == "evaluate":
                row["metrics"] = metrics
            rows.append(row)
        return rows
    for i, step in enumerate(steps, 1):
        tag = f"[{chain['name']} {i}/{len(steps)} {step['stage']}]"
        done = _done_file(step)
        if done.is_file():
            info = dict(json.loads(done.read_text()), chain=chain["name"])  # a shared stage counts for this chain too
            print(f"{tag} already done in {info.get('seconds', 0):.0f}s: skipped", flush=True)
            if not dry_run:  # keep the result files in step with runs/ (e.g. a stage finished by an older version)
                info.update(_publish(step, chain, cfg, targets))
            rows.append(info)
            continue
        print(f"{tag} {' '.join(shlex.quote(c) for c in step['cmd'])}", flush=True)
        if dry_run:
            continue
        Path(step["dir"]).mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        log_path = Path(step["dir"]) / "stage.log"
        progress = StageProgress(tag, _cmd_epochs(step["cmd"]), t0)
        with open(log_path, "a", buffering=1) as log:
            proc = subprocess.Popen(step["cmd"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if _worth_printing(line):
                    sys.stdout.write(f"{tag} {line}")
                    sys.stdout.flush()
                progress.update(line)
            rc = proc.wait()
        seconds = time.time() - t0
        print(f"{tag} finished in {_hms(seconds)} (exit code {rc}); log: {log_path}", flush=True)
        if rc != 0:
            cause = _last_error(log_path)
            raise RuntimeError(f"{tag} failed with exit code {rc} after {seconds:.0f}s{cause}; log: {log_path}")
        info = {"chain": chain["name"], "stage": step["stage"], "seconds": round(seconds, 1)}
        if "checkpoint" in step:
            if not Path(step["checkpoint"]).is_file():
                raise RuntimeError(f"{tag} finished but wrote no checkpoint {step['checkpoint']}; log: {log_path}")
            info["checkpoint"] = step["checkpoint"]
        info.update(_publish(step, chain, cfg, targets))
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, done)
        rows.append(info)
    if not dry_run:
        timing = {r["stage"]: r.get("seconds") for r in rows}
        for target in targets:
            target.mkdir(parents=True, exist_ok=True)
            (target / "timing.json").write_text(json.dumps(timing, indent=2))
    return rows


def _publish(step: dict, chain: dict, cfg: dict, targets: list[Path]) -> dict:
    """Copy a finished stage's small result files into each of ``targets``; return ``{"metrics": ...}`` for evaluate."""
    out: dict = {}
    probe = Path(step["dir"]) / "probe.json"
    for results_dir in targets:
        if step["stage"] == "sstl_m" and probe.is_file():
            results_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(probe, results_dir / "sstl_m_probe.json")
        if "metrics" in step and Path(step["metrics"]).is_file():
            out["metrics"] = json.loads(Path(step["metrics"]).read_text())
            results_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(step["metrics"], results_dir / "metrics.json")
            preds = Path(step["metrics"]).with_name("predictions.csv")
            if preds.is_file():
                shutil.copy(preds, results_dir / "predictions.csv")
            (results_dir / "chain.json").write_text(
                json.dumps(
                    {"chain": chain, "common": cfg.get("common", {}), "stage_defaults": cfg.get("stage_defaults", {}), "spec_version": SPEC_VERSION},
                    indent=2,
                )
            )
    return out


_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)\b.*$")


def _last_error(log_path: Path, tail: int = 65536) -> str:
    """``": <the last exception line of the log>"`` (a traceback's last line, e.g. a NonFiniteError), or ``""``."""
    with open(log_path, "rb") as f:
        f.seek(max(f.seek(0, os.SEEK_END) - tail, 0))
        lines = f.read().decode("utf-8", "replace").splitlines()
    found = [ln.strip() for ln in lines if _ERROR_LINE.match(ln.strip())]
    return f": {found[-1]}" if found else ""


def _hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _cmd_epochs(cmd: list[str]) -> int | None:
    """The ``--epochs N`` of a stage's command (``None`` when it has none, e.g. evaluate)."""
    for flag, value in zip(cmd, cmd[1:]):
        if flag == "--epochs":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class StageProgress:
    """Per-epoch progress of a running stage, read from its trainer's ``Epoch[k] Complete`` log lines: prints
    ``epoch k/N, elapsed, ETA`` (the ETA is the mean time per finished epoch times the epochs left; a resumed stage
    counts from its first epoch in this run). Works in logs and terminals alike (one line per epoch)."""

    _EPOCH = re.compile(r"Trainer - INFO - Epoch\[(\d+)\] Complete")

    def __init__(self, tag: str, epochs: int | None, t0: float, out=None) -> None:
        self.tag, self.epochs, self.t0, self.out = tag, epochs, t0, out
        self.first: int | None = None

    def update(self, line: str, now: float | None = None) -> str | None:
        m = self._EPOCH.search(line)
        if not m or not self.epochs:
            return None
        k = int(m.group(1))
        self.first = k if self.first is None else self.first
        elapsed = (time.time() if now is None else now) - self.t0
        done_here = k - self.first + 1
        eta = elapsed / done_here * max(self.epochs - k, 0)
        msg = f"{self.tag} epoch {k}/{self.epochs}, elapsed {_hms(elapsed)}, ETA {_hms(eta)}"
        out = self.out or sys.stdout
        out.write(msg + "\n")
        out.flush()
        return msg


def _worth_printing(line: str) -> bool:
    keys = ("Epoch[", "Key metric", "best", "evaluation on", "loaded", "resumed", "Error", "error", "Traceback")
    return any(k in line for k in keys) and "Iter[" not in line
