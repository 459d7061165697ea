# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""What a stage was trained with: the settings recorded in its ``DONE.json`` (and ``SETTINGS.json`` while it runs),
and how they differ from the settings a chain asks for now.

A stage's record holds its bundle config files and every setting it ran with (``common``, the stage's
``stage_defaults``, the chain's and the stage's overrides, resolved; paths relative to the output root), and the
same for each stage upstream of it (the training stages before it in the chain) with the ``id`` of the run that
trained that stage. A stage is done for a chain only when its ``DONE.json`` holds exactly the record the chain asks
for now: a ``DONE.json`` without a record (written by an older version) never counts.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mstl_monai.pipeline.plan import _differences, portable_settings
from mstl_monai.pipeline.publish import write_text_atomic

__all__ = ["DONE", "SETTINGS", "NO_RECORD", "stage_records", "with_ids", "record_differences", "read_json", "write_json"]

#: the file a finished stage leaves in its folder (record, seconds, checkpoint, run id)
DONE = "DONE.json"
#: the record a stage writes when it starts (an interrupted stage resumes only for the same record)
SETTINGS = "SETTINGS.json"
NO_RECORD = "no settings recorded (made by an older version of mstl-pipeline)"


def _own(step: dict, out_root: Path) -> dict:
    return {
        "stage": step["stage"],
        "config": [Path(f).name for f in step.get("config_files", [])],
        "settings": portable_settings(step.get("overrides", {}), out_root),
    }


def stage_records(steps: list[dict], out_root: str | os.PathLike) -> list[dict]:
    """For each step of a planned chain, the record its ``DONE.json`` must hold (without the upstream ``id``\\s,
    which :func:`with_ids` adds): ``{"stage", "config", "settings", "upstream": [{"stage", "config", "settings"}]}``.

    The upstream of a stage are the training stages before it (an ``evaluate`` is nobody's upstream).
    """
    out_root = Path(out_root)
    records, upstream = [], []
    for step in steps:
        own = _own(step, out_root)
        records.append(dict(own, upstream=[dict(u) for u in upstream]))
        if step["stage"] != "evaluate":
            upstream.append(own)
    return records


def with_ids(record: dict, ids: list[str | None]) -> dict:
    """``record`` with the ``id`` of each upstream stage's run (``ids``: the training stages before it, in order)."""
    return dict(record, upstream=[dict(u, id=i) for u, i in zip(record["upstream"], ids)])


def record_differences(recorded: dict | None, expected: dict) -> list[str]:
    """What differs between the record of a ``DONE.json``/``SETTINGS.json`` and the one a chain asks for, as
    ``key old -> new`` (upstream settings as ``<stage>.key``); empty when they are the same."""
    if not recorded or not isinstance(recorded.get("settings"), dict):
        return [NO_RECORD]
    diffs = _differences(recorded["settings"], expected["settings"])
    if recorded.get("config") != expected["config"]:
        diffs.append(f"config files {recorded.get('config')} -> {expected['config']}")
    old_up, new_up = recorded.get("upstream") or [], expected["upstream"]
    if [u.get("stage") for u in old_up] != [u["stage"] for u in new_up]:
        return diffs + [f"upstream stages {[u.get('stage') for u in old_up]} -> {[u['stage'] for u in new_up]}"]
    for old, new in zip(old_up, new_up):
        up = _differences(old.get("settings") or {}, new["settings"])
        diffs += [f"{new['stage']}.{d}" for d in up]
        if old.get("config") != new["config"]:
            diffs.append(f"{new['stage']}.config files {old.get('config')} -> {new['config']}")
        if not up and old.get("id") != new.get("id"):
            diffs.append(f"{new['stage']} was trained again since")
    return diffs


def read_json(path: str | os.PathLike) -> dict | None:
    """A JSON object file; ``None`` when it is missing or unreadable (e.g. cut short)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write a JSON file atomically (through a temporary file and a rename)."""
    write_text_atomic(path, json.dumps(data, indent=2))
