# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Running a chain: its stages in order as bundle processes, finished stages skipped, result files published."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from mstl_monai.pipeline.done import (
    DONE,
    NO_RECORD,
    SETTINGS,
    read_json,
    record_differences,
    stage_records,
    with_ids,
    write_json,
)
from mstl_monai.pipeline.config import STAGES
from mstl_monai.pipeline.lock import StageLock, StageLockedError, live_locks_under
from mstl_monai.pipeline.plan import plan_chain, portable_settings
from mstl_monai.pipeline.publish import recover, write_folder

__all__ = [
    "ADDED_STAGE_DEFAULTS",
    "SPEC_VERSION",
    "StageProgress",
    "chain_record",
    "chain_spec",
    "results_match",
    "results_up_to_date",
    "run_chain",
    "run_dir_results",
]


#: bundle settings added after results were first recorded, with the value those results were made with: a saved
#: chain.json without the key matches a config that states this value (e.g. a grid run before the guarded
#: checkpoint selection existed, pinned to ``selection_min_class_fraction: 0.0``)
ADDED_STAGE_DEFAULTS: dict[str, dict[str, Any]] = {"finetune": {"selection_min_class_fraction": 0.0}}
#: written into each results/<chain>/chain.json: version 2 has ADDED_STAGE_DEFAULTS' settings, version 3 also the
#: config's ``pretrained`` and every stage's resolved settings (``resolved``)
SPEC_VERSION = 3
#: stage switches that became override files: an older record's ``{stage: finetune, overrides: {mag_sd: true}}``
#: is the chain ``{stage: finetune, config: [train.yaml, mag_sd.yaml]}`` (the same settings, merged from the file)
SWITCH_FILES: dict[str, str] = {"mag_sd": "mag_sd.yaml"}


def _out_root(cfg: dict, repo_root: str | os.PathLike) -> Path:
    return (Path(repo_root).resolve() / cfg["output_root"]).resolve()


def chain_spec(cfg: dict, chain: dict, repo_root: str | os.PathLike = ".") -> list[tuple[str, dict]]:
    """What a chain computes, independent of where the repository lies: each stage with its resolved settings
    (``common``, ``stage_defaults``, the chain's and the stage's overrides), paths made relative to the output root
    (so a fresh clone elsewhere recognises results made here)."""
    out_root = _out_root(cfg, repo_root)
    steps = plan_chain(cfg, chain, repo_root)
    spec = []
    for step in steps:
        settings = portable_settings(step["overrides"], out_root)
        files = [Path(f).name for f in step["config_files"]]
        if files != STAGES[step["stage"]][0]:  # override files merged beyond the stage's own (mag_sd.yaml)
            settings["config_file"] = files
        spec.append((step["stage"], settings))
    return spec


def _switches_to_files(chain: dict) -> dict:
    """``chain`` with the stage switches of :data:`SWITCH_FILES` given as the override files that replaced them."""
    stages = []
    for st in chain["stages"]:
        if isinstance(st, dict):
            overrides = dict(st.get("overrides") or {})
            files = [f for k, f in SWITCH_FILES.items() if overrides.pop(k, False) is True]
            if files:
                st = dict(st, overrides=overrides, config=list(st.get("config", STAGES[st["stage"]][0])) + files)
        stages.append(st)
    return dict(chain, stages=stages)


def chain_record(cfg: dict, chain: dict, repo_root: str | os.PathLike = ".") -> dict:
    """The ``chain.json`` of a chain's result folder: the chain, the config's ``common``, ``stage_defaults`` and
    ``pretrained``, and each stage's resolved settings (``resolved``: what :func:`results_match` compares)."""
    return {
        "chain": chain,
        "common": cfg.get("common", {}),
        "stage_defaults": cfg.get("stage_defaults", {}),
        "pretrained": cfg.get("pretrained"),
        "spec_version": SPEC_VERSION,
        "resolved": [{"stage": stage, "settings": ov} for stage, ov in chain_spec(cfg, chain, repo_root)],
    }


def _plain(x: Any) -> Any:
    return json.loads(json.dumps(x))


def results_match(folder: str | os.PathLike, cfg: dict, chain: dict, repo_root: str | os.PathLike = ".") -> bool:
    """Whether the result folder ``folder`` holds the metrics of exactly this chain: ``metrics.json`` exists and every
    stage's resolved settings saved beside it in ``chain.json`` are the ones the chain asks for now.

    ``chain.json`` files of version 3 hold the resolved settings; older ones hold the chain, ``common`` and
    ``stage_defaults``, resolved here as the chain is now (their config had no ``pretrained`` of its own: they did
    not save it; settings added since are taken at :data:`ADDED_STAGE_DEFAULTS`' values).
    """
    folder = Path(folder)
    old = read_json(folder / "chain.json")
    if not (folder / "metrics.json").is_file() or old is None:
        return False
    try:
        if isinstance(old.get("resolved"), list):
            recorded = [[s["stage"], s["settings"]] for s in old["resolved"]]
        else:
            old_defaults = {k: dict(v) for k, v in (old.get("stage_defaults") or {}).items()}
            if old.get("spec_version", 1) < 2:  # settings that did not exist when the results were made
                for stage, added in ADDED_STAGE_DEFAULTS.items():
                    for k, v in added.items():
                        old_defaults.setdefault(stage, {}).setdefault(k, v)
            old_cfg = dict(cfg, common=old.get("common", {}), stage_defaults=old_defaults)
            old_cfg["pretrained"] = old.get("pretrained")
            recorded = [[st, ov] for st, ov in chain_spec(old_cfg, _switches_to_files(old["chain"]), repo_root)]
        return _plain(recorded) == _plain([[st, ov] for st, ov in chain_spec(cfg, chain, repo_root)])
    except (ValueError, KeyError, TypeError, AttributeError):
        return False


def results_up_to_date(cfg: dict, chain: dict, repo_root: str | os.PathLike = ".") -> bool:
    """Whether ``<results_dir>/<chain>/`` (kept in git) holds the metrics of exactly this chain, so that it need not
    run again (:func:`results_match`)."""
    return results_match(Path(repo_root) / cfg["results_dir"] / chain["name"], cfg, chain, repo_root)


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
    """Run the stages of one chain in order; skip those done for these settings; return a summary row per stage.

    A stage is done when its ``DONE.json`` records exactly the settings the chain asks for now, its upstream stages'
    included (:mod:`mstl_monai.pipeline.done`). Otherwise it trains, saying which settings differ; a folder made
    with other settings is first moved aside to ``<stage>.old-<time>`` (with the stages below it), so nothing
    resumes from it. A stage trains under its lock (:class:`~mstl_monai.pipeline.lock.StageLock`): a second run
    is refused with :class:`~mstl_monai.pipeline.lock.StageLockedError`.

    The chain's result files go to :func:`run_dir_results` ``/<chain>/``, and with ``publish`` also to
    ``<results_dir>/<chain>/`` (kept in git), each folder replaced as a whole (:func:`~mstl_monai.pipeline.publish.
    write_folder`). A chain whose published results were made with the same settings is skipped as a whole, even
    where ``runs/`` is empty (a fresh clone): a grid can be completed over several sessions. ``rerun`` turns that
    off (stages done in ``runs/`` for these settings are still skipped). ``tracking`` (``"mlflow"``) records each
    stage it runs as a run of the chain's MLflow experiment (:func:`~mstl_monai.pipeline.plan_chain`).
    """
    steps = plan_chain(cfg, chain, repo_root, tracking=tracking)
    records = stage_records(steps, _out_root(cfg, repo_root))
    published = Path(repo_root) / cfg["results_dir"] / chain["name"]
    local = run_dir_results(cfg, repo_root) / chain["name"]
    targets = [local] + ([published] if publish else [])
    for target in (local, published):  # what a killed publish left
        for line in recover(target, dry_run=dry_run):
            print(f"[{chain['name']}] {line}", flush=True)
    if not rerun and results_up_to_date(cfg, chain, repo_root):
        return _published_rows(cfg, chain, repo_root, steps, records, targets, published, dry_run)
    rows: list[dict] = []
    ids: list[str | None] = []  # the runs of the training stages so far
    for i, (step, record) in enumerate(zip(steps, records), 1):
        tag = f"[{chain['name']} {i}/{len(steps)} {step['stage']}]"
        trained = False
        expected = with_ids(record, ids)
        info, diffs = _done(step, expected)
        if info is None and dry_run:
            pending = [u["stage"] for u in expected["upstream"] if u["id"] is None]
            if pending:  # its DONE.json names the upstream run it started from, which would be replaced
                diffs = [f"{pending[-1]} would be trained first"] if (Path(step["dir"]) / DONE).exists() else []
            if diffs:
                print(f"{tag} {_mismatch(step, diffs)}: would train it again", flush=True)
            print(f"{tag} {' '.join(shlex.quote(c) for c in step['cmd'])}", flush=True)
        elif info is None:
            info = _train(step, expected, diffs, tag, chain)
            trained = True
        else:
            print(f"{tag} already done in {info.get('seconds', 0):.0f}s: skipped", flush=True)
        if step["stage"] != "evaluate":
            ids.append(info.get("id") if info else None)
        if info is not None:
            rows.append(dict(_row(step, info, chain), trained=trained))
    if not dry_run:
        _write_results(cfg, chain, repo_root, steps, rows, targets)
    return rows


def _done(step: dict, expected: dict) -> tuple[dict | None, list[str]]:
    """``(DONE.json, [])`` when the stage is done for ``expected``; else ``(None, what differs)`` (``[]``: not done)."""
    done = read_json(Path(step["dir"]) / DONE)
    if done is None:
        return None, []
    diffs = record_differences(done, expected)
    return (None, diffs) if diffs else (done, [])


def _mismatch(step: dict, diffs: list[str], what: str = "DONE.json") -> str:
    """``<dir> was trained with other settings (epochs 2 -> 3, ...)``, or that its record has no settings."""
    if diffs == [NO_RECORD]:
        return f"{step['dir']}: its {what} has {NO_RECORD}"
    done = "was trained" if what == "DONE.json" else "holds an unfinished run"
    return f"{step['dir']} {done} with other settings ({', '.join(diffs)})"


def _row(step: dict, info: dict, chain: dict) -> dict:
    """The summary row of a done stage (a shared stage counts for this chain too), with the metrics of an evaluate."""
    row = {"chain": chain["name"], "stage": step["stage"], "seconds": info.get("seconds", 0), "dir": step["dir"]}
    if "checkpoint" in info:
        row["checkpoint"] = info["checkpoint"]
    if "metrics" in step and Path(step["metrics"]).is_file():
        row["metrics"] = json.loads(Path(step["metrics"]).read_text())
    return row


def _published_rows(cfg, chain, repo_root, steps, records, targets, published, dry_run) -> list[dict]:
    """The rows of a chain whose published results are up to date; the result folders are refreshed from ``runs/``
    only where every stage there is done for these settings."""
    name = chain["name"]
    print(f"[{name}] results for these settings are in {published}: skipped (--rerun to train again)", flush=True)
    ids: list[str | None] = []
    infos = []
    for step, record in zip(steps, records):
        info, _ = _done(step, with_ids(record, ids))
        if info is None:
            break
        infos.append(info)
        if step["stage"] != "evaluate":
            ids.append(info.get("id"))
    if len(infos) == len(steps):
        rows = [_row(step, info, chain) for step, info in zip(steps, infos)]
        rows[-1]["published"] = str(published / "metrics.json")
        if not dry_run:
            _write_results(cfg, chain, repo_root, steps, rows, targets)
        return rows
    metrics = json.loads((published / "metrics.json").read_text())
    timing = read_json(published / "timing.json") or {}
    rows = []
    for step in steps:
        row = {"chain": chain["name"], "stage": step["stage"], "seconds": timing.get(step["stage"]) or 0}
        if step["stage"] == "evaluate":
            row.update(metrics=metrics, published=str(published / "metrics.json"))
        rows.append(row)
    return rows


def _train(step: dict, expected: dict, diffs: list[str], tag: str, chain: dict) -> dict:
    """Train one stage under its lock; write its ``DONE.json``; return it."""
    lock = StageLock(step["dir"]).acquire()
    try:
        done, _ = _done(step, expected)
        if done is not None:  # another run finished it meanwhile
            print(f"{tag} done meanwhile by another run: skipped", flush=True)
            return done
        if diffs:
            print(f"{tag} {_mismatch(step, diffs)}: training it again", flush=True)
        stage_dir = Path(step["dir"])
        _set_aside_other_settings(stage_dir, expected, tag, step, already_said=bool(diffs))
        stage_dir.mkdir(parents=True, exist_ok=True)
        write_json(stage_dir / SETTINGS, expected)
        seconds = _run_stage(step, tag)
        info = {"chain": chain["name"], "stage": step["stage"], "seconds": round(seconds, 1)}
        if "checkpoint" in step:
            info["checkpoint"] = step["checkpoint"]
        info.update(id=uuid.uuid4().hex, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        info.update({k: v for k, v in expected.items() if k != "stage"})
        write_json(stage_dir / DONE, info)
        return info
    finally:
        lock.release()


def _set_aside_other_settings(stage_dir: Path, expected: dict, tag: str, step: dict, already_said: bool) -> None:
    """Move a stage folder made with other settings (or by an older version) to ``<stage>.old-<time>``, the stages
    below it included, so that the bundle does not resume from its checkpoints; an unfinished run of these very
    settings stays (it resumes)."""
    if not stage_dir.is_dir() or not any(stage_dir.iterdir()):
        return
    if not already_said:
        if (stage_dir / DONE).exists():
            reason = f"{stage_dir}: its DONE.json cannot be read"
        else:
            diffs = record_differences(read_json(stage_dir / SETTINGS), expected)
            if not diffs:
                return
            reason = _mismatch(step, diffs, "unfinished run")
        print(f"{tag} {reason}: starting it over", flush=True)
    held = live_locks_under(stage_dir)
    if held:
        raise StageLockedError(f"cannot move {stage_dir} aside (made with other settings): {held[0]}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = stage_dir.with_name(f"{stage_dir.name}.old-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = stage_dir.with_name(f"{stage_dir.name}.old-{stamp}-{n}")
    os.rename(stage_dir, aside)
    print(f"{tag} the folder of the other settings is kept as {aside} (delete it when no longer needed)", flush=True)


def _run_stage(step: dict, tag: str) -> float:
    """Run a stage's bundle command, its output in ``stage.log``; its duration in seconds.

    Raises:
        RuntimeError: it failed (naming the last error line of its log) or wrote no checkpoint.
    """
    print(f"{tag} {' '.join(shlex.quote(c) for c in step['cmd'])}", flush=True)
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
    if "checkpoint" in step and not Path(step["checkpoint"]).is_file():
        raise RuntimeError(f"{tag} finished but wrote no checkpoint {step['checkpoint']}; log: {log_path}")
    return seconds


def _write_results(cfg: dict, chain: dict, repo_root, steps: list[dict], rows: list[dict], targets: list[Path]) -> None:
    """Write the chain's result folder (``chain.json``, ``timing.json``, the last evaluation's ``metrics.json`` and
    ``predictions.csv``, the SSTL-M probe) to each of ``targets``, each replaced as a whole."""
    files: dict[str, Any] = {}
    for step in steps:
        probe = Path(step["dir"]) / "probe.json"
        if step["stage"] == "sstl_m" and probe.is_file():
            files["sstl_m_probe.json"] = probe
        if "metrics" in step and Path(step["metrics"]).is_file():
            files["metrics.json"] = Path(step["metrics"])
            preds = Path(step["metrics"]).with_name("predictions.csv")
            files.pop("predictions.csv", None)
            if preds.is_file():
                files["predictions.csv"] = preds
    files["chain.json"] = json.dumps(chain_record(cfg, chain, repo_root), indent=2)
    files["timing.json"] = json.dumps({r["stage"]: r.get("seconds") for r in rows}, indent=2)
    for target in targets:
        kept = write_folder(target, files)
        if kept:
            print(f"[{chain['name']}] kept {', '.join(kept)} in {target} (not written by mstl-pipeline: made from the "
                  "results before these)", flush=True)


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
