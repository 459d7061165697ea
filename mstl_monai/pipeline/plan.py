# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Pipeline plans: each stage of a chain as its bundle command, output folder and the checkpoint it passes on, and
every stage's settings checked against its bundle config files before anything runs."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from collections.abc import Sequence
from typing import Any

from mstl_monai.pipeline.config import STAGES, _did_you_mean
from mstl_monai.utils.names import ATTN_COUNTS, BACKBONES, SSTL_METHODS

__all__ = ["plan_chain", "check_chains", "folder_conflicts", "portable_settings"]

#: settings that hold paths: recorded relative to the output root (or as a file name), so that a copy of the
#: repository elsewhere recognises what was made here
PATH_KEYS = ("run_dir", "output_dir", "pretrained", "data_root")


def _fmt(v: Any) -> str:
    """Format an override for the bundle CLI (python-fire parses Python literals)."""
    if isinstance(v, str):
        return v
    return repr(v)


def _stage_id(stage: str, st_overrides: dict, extra_configs: Sequence[str] = ()) -> str:
    """Folder name of a stage: its name, the override files it merges beyond its own configs (``finetune+mag_sd``
    for ``config: [train.yaml, mag_sd.yaml]``), then its own overrides, ``key=value`` (``sstl_m-moco`` for the
    SSTL-M method; e.g. ``finetune-label_smoothing=0.1``), so two stages with other settings never share a folder."""
    name = "+".join([stage] + [Path(f).stem for f in extra_configs])
    if not st_overrides:
        return name
    parts = [str(v) if k == "method" else f"{k}={v}" for k, v in sorted(st_overrides.items())]
    return name + "-" + "-".join(p.replace("/", "_").replace(" ", "") for p in parts)


def plan_chain(
    cfg: dict, chain: dict, repo_root: str | os.PathLike = ".", tracking: str | None = None
) -> list[dict]:
    """Return, for each stage of ``chain``, its command line, output folder and the checkpoint it passes on.

    Stage folders are shared between chains with the same network and the same earlier stages:
    ``<output_root>/<backbone>_attn<n>/[imagenet/]stl_m/sstl_m-ours/finetune``, so a grid trains each prefix once.

    ``tracking`` (e.g. ``"mlflow"``) is passed to each stage as MONAI's ``--tracking``, with one store for the run
    folder (``<output_root>/mlruns.db``, artifacts in ``<output_root>/mlruns/``), the chain as the experiment and the
    stage as the run: a chain is one MLflow experiment with a run per stage it trains.
    """
    repo_root = Path(repo_root).resolve()
    bundle_dir = (repo_root / cfg["bundle_dir"]).resolve()
    out_root = (repo_root / cfg["output_root"]).resolve()
    common = dict(cfg.get("common", {}))
    net_cfg = dict(common, **chain.get("overrides", {}))
    folder = out_root / f"{net_cfg.get('backbone', 'resnet50')}_attn{net_cfg.get('n_attn', 0)}"
    if net_cfg.get("seed") not in (None, 0, "0"):  # another seed trains every stage again; seed 0 keeps its folders
        folder = folder.with_name(f"{folder.name}_seed{net_cfg['seed']}")
    steps: list[dict] = []
    previous_ckpt: str | None = chain.get("pretrained") or cfg.get("pretrained") or None
    if previous_ckpt:
        previous_ckpt = str((repo_root / previous_ckpt).resolve()) if not os.path.isabs(previous_ckpt) else previous_ckpt
        folder = folder / ("init-" + Path(previous_ckpt).stem)
    finetune_dir: Path | None = None
    finetune_overrides: dict[str, Any] = {}
    for st in chain["stages"]:
        st = {"stage": st} if isinstance(st, str) else dict(st)
        stage = st["stage"]
        files, out_ckpt = STAGES[stage]
        overrides: dict[str, Any] = {}
        overrides.update(common)
        overrides.update(cfg.get("stage_defaults", {}).get(stage, {}))
        overrides.update(chain.get("overrides", {}))
        overrides.update(st.get("overrides", {}))
        if stage == "evaluate":
            if finetune_dir is None:
                raise ValueError(f"chain {chain['name']}: 'evaluate' needs a 'finetune' stage before it.")
            # eval_<split>, plus the values of the stage's other overrides (e.g. eval_val-True for {tta: true})
            # the input size the finetune trained at (a finetune stage override, e.g. image_size 192), not the chain's
            for k in ("image_size", "resize_size"):
                if k in finetune_overrides:
                    overrides[k] = finetune_overrides[k]
            own = {k: v for k, v in st.get("overrides", {}).items() if k != "test_split"}
            stage_dir = finetune_dir / _stage_id(f"eval_{overrides.get('test_split', 'test')}", own)
            overrides["run_dir"] = str(finetune_dir)
            overrides["output_dir"] = str(stage_dir)
        else:
            extra = [f for f in st.get("config", files) if f not in files]
            folder = folder / _stage_id(stage, st.get("overrides", {}), extra)
            stage_dir = folder
            overrides["run_dir"] = str(stage_dir)
            overrides["pretrained"] = previous_ckpt or ""
        if cfg.get("data_root"):
            overrides["data_root"] = str((repo_root / cfg["data_root"]).resolve())
        config_files = [str(bundle_dir / "configs" / f) for f in st.get("config", files)]
        cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(config_files)]
        cmd += ["--bundle_root", str(bundle_dir), "--meta_file", str(bundle_dir / "configs" / "metadata.json")]
        cmd += ["--logging_file", str(bundle_dir / "configs" / "logging.conf")]
        for k, v in overrides.items():
            cmd += [f"--{k}", _fmt(v)]
        if tracking:
            cmd += ["--tracking", str(tracking), "--experiment_name", chain["name"], "--run_name", stage]
            if tracking == "mlflow":
                cmd += ["--tracking_uri", f"sqlite:///{out_root / 'mlruns.db'}"]
        step = {"chain": chain["name"], "stage": stage, "dir": str(stage_dir), "cmd": cmd, "overrides": overrides}
        step["config_files"] = config_files
        if stage == "evaluate":
            step["metrics"] = str(stage_dir / "metrics.json")
        if out_ckpt is not None:
            previous_ckpt = str(stage_dir / out_ckpt)
            step["checkpoint"] = previous_ckpt
        if stage == "finetune":
            finetune_dir = stage_dir
            finetune_overrides = dict(overrides)
        steps.append(step)
    return steps


_MISSING = object()


def portable_settings(overrides: dict, out_root: str | os.PathLike) -> dict:
    """A stage's settings independent of where the repository lies: the paths of :data:`PATH_KEYS` relative to
    ``out_root`` (a path outside it: its file name)."""
    out_root = Path(out_root)
    out = {}
    for k, v in overrides.items():
        if k in PATH_KEYS and isinstance(v, str) and v:
            p = Path(v)
            v = os.path.relpath(p, out_root) if p.is_relative_to(out_root) else p.name
        out[k] = v
    return out


def _differences(a: dict, b: dict, sep: str = "->") -> list[str]:
    """``key a-value -> b-value`` for each key whose value differs (``(not set)`` where a side lacks it)."""
    show = {k: (_fmt(a[k]) if k in a else "(not set)", _fmt(b[k]) if k in b else "(not set)") for k in set(a) | set(b)}
    return [f"{k} {x} {sep} {y}" for k, (x, y) in sorted(show.items()) if a.get(k, _MISSING) != b.get(k, _MISSING)]


def folder_conflicts(cfg: dict, chains: list[dict], repo_root: str | os.PathLike = ".") -> list[str]:
    """Stage folders that two of ``chains`` would train with other settings: one line per pair of chains, naming
    the first such folder and the differing settings (empty: every folder has one set of settings).

    A stage folder is named from the network, the seed and the stages with their own overrides; a chain override
    other than those (e.g. ``learning_rate``) or another stage default would otherwise make two chains take turns
    training one folder, or one take the other's results.
    """
    out_root = (Path(repo_root).resolve() / cfg["output_root"]).resolve()
    seen: dict[str, tuple[str, dict]] = {}
    lines: list[str] = []
    for chain in chains:
        for step in plan_chain(cfg, chain, repo_root):
            mine = portable_settings(step["overrides"], out_root)
            mine["config_file"] = [Path(f).name for f in step["config_files"]]
            first, theirs = seen.setdefault(step["dir"], (chain["name"], mine))
            if theirs != mine:
                where = os.path.relpath(step["dir"], Path(repo_root).resolve())
                lines.append(
                    f"chains {first} and {chain['name']} would train the same stage folder {where} with other settings "
                    f"({', '.join(_differences(theirs, mine, 'vs'))}): give the stage its own overrides (they name its "
                    "folder) or run one of them with another output_root"
                )
                break
    return lines


def _value_problem(key: str, value: Any) -> str | None:
    """What the bundle would reject in a setting the runner knows the values of (checked before anything runs)."""
    if key == "n_attn" and (isinstance(value, bool) or value not in ATTN_COUNTS):
        return f"n_attn must be one of {list(ATTN_COUNTS)} (non-local blocks the networks take), got {value!r}"
    if key == "backbone" and str(value).lower().replace("attentive_", "").replace("-", "") not in BACKBONES:
        return f"unknown backbone {value!r}{_did_you_mean(value, BACKBONES)}; use one of {list(BACKBONES)}"
    if key == "method" and value not in SSTL_METHODS:
        return f"unknown SSTL-M method {value!r}{_did_you_mean(value, SSTL_METHODS)}; use one of {list(SSTL_METHODS)}"
    return None


def check_chains(cfg: dict, chains: list[dict], repo_root: str | os.PathLike = ".") -> list[str]:
    """Check every stage's settings of ``chains`` against the bundle config files it runs, before anything runs.

    A setting the stage's config files do not define (``n_atn``), or whose value they or the networks rule out
    (``n_attn: five``, ``n_attn: 3``, ``backbone: resnet19``), is a problem, and so are two chains that would train
    one stage folder with other settings (:func:`folder_conflicts`). Returns one line per distinct problem, naming
    the chains and stages it affects (empty: all fits).
    """
    from mstl_monai.utils.settings import load_config_tree, override_problems

    found: dict[str, list[str]] = {}
    trees: dict[tuple[str, ...], dict] = {}
    for chain in chains:
        for step in plan_chain(cfg, chain, repo_root):
            files = tuple(step["config_files"])
            values = {k: _value_problem(k, v) for k, v in step["overrides"].items()}
            problems = [p for p in values.values() if p]
            try:
                if files not in trees:
                    trees[files] = load_config_tree(files)
                rest = {k: v for k, v in step["overrides"].items() if not values[k]}
                problems += override_problems(rest, trees[files], f"{Path(cfg['bundle_dir']).name}/configs")
            except (FileNotFoundError, ValueError) as e:
                problems.append(str(e))
            for problem in problems:
                found.setdefault(problem, []).append(f"{chain['name']}/{step['stage']}")
    lines = []
    for problem, where in found.items():
        shown = ", ".join(where[:3]) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
        lines.append(f"{problem} (in {shown})")
    return lines + folder_conflicts(cfg, chains, repo_root)
