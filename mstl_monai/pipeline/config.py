# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Pipeline configs: read and check a pipeline YAML, expand its ``grid`` and ``seeds`` into chains."""

from __future__ import annotations

import copy
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml

from mstl_monai.utils.names import ATTN_COUNTS, SSTL_METHODS

__all__ = [
    "STAGES",
    "GRID_STAGES",
    "load_pipeline_config",
    "expand_grid",
    "expand_seeds",
    "parse_stage_set",
    "grid_chain_name",
    "skipped_lines",
]

#: stage name -> (config files relative to the bundle's configs/, output checkpoint relative to the stage dir); every
#: stage runs its configs' ``run`` workflow
STAGES: dict[str, tuple[list[str], str | None]] = {
    "stl_n": (["train.yaml", "stl_n.yaml"], "models/model.pt"),
    "stl_m": (["train.yaml", "stl_m.yaml"], "models/model.pt"),
    "sstl_m": (["sstl_m.yaml"], "models/model.pt"),
    "finetune": (["train.yaml"], "models/model.pt"),
    "evaluate": (["train.yaml", "evaluate.yaml"], None),
}


#: keys a pipeline config, a chain and a chain's stage entry may hold
_CONFIG_KEYS = (
    "bundle_dir", "output_root", "results_dir", "data_root", "pretrained", "common", "stage_defaults", "grid", "chains",
    "seeds",
)
_CHAIN_KEYS = ("name", "stages", "overrides", "pretrained")
_STEP_KEYS = ("stage", "overrides", "config")
#: transfer stages a grid stage set may hold, in chain order, and their part of the chain name
GRID_STAGES = {"stl_n": "stln", "stl_m": "stlm", "sstl_m": "sstl"}
_GRID_KEYS = ("backbones", "n_attn", "stage_sets", "methods", "stl_n")
_STL_N_UNAVAILABLE = "marked unavailable in the grid (no natural-image data or ImageNet checkpoint)"


def parse_stage_set(stage_set: Any) -> tuple[str, ...]:
    """Parse a grid stage set: ``"none"`` -> ``()``, ``"stl_n+stl_m+sstl_m"`` -> ``("stl_n", "stl_m", "sstl_m")``.

    Raises:
        ValueError: naming the stage set, when it is not ``none`` or stages of ``GRID_STAGES`` joined by ``+`` in
            that order, each at most once.
    """
    order = list(GRID_STAGES)
    usage = f"use 'none' or stages of {order} joined by '+' in that order, each once (e.g. 'stl_m+sstl_m')"
    if not isinstance(stage_set, str) or not stage_set.strip():
        raise ValueError(f"bad stage set {stage_set!r}: {usage}.")
    if stage_set.strip() == "none":
        return ()
    parts = tuple(p.strip() for p in stage_set.split("+"))
    bad = [p for p in parts if p not in GRID_STAGES]
    if bad:
        raise ValueError(f"bad stage set {stage_set!r}: unknown stage(s) {bad}; {usage}.")
    if len(set(parts)) != len(parts) or list(parts) != sorted(parts, key=order.index):
        raise ValueError(f"bad stage set {stage_set!r}: stages repeated or out of order; {usage}.")
    return parts


def grid_chain_name(backbone: str, n_attn: int, stages: tuple[str, ...] | list[str], method: str | None = None) -> str:
    """Chain name of a grid cell, ``{bb}_{variant}_{stages}``: e.g. ``r50_attn5_stln_stlm_sstl_moco``."""
    m = re.fullmatch(r"resnet(\d+)", backbone)
    bb = f"r{m.group(1)}" if m else backbone
    variant = "base" if int(n_attn) == 0 else f"attn{int(n_attn)}"
    parts = [GRID_STAGES[st] + (f"_{method}" if st == "sstl_m" else "") for st in stages]
    return f"{bb}_{variant}_{'_'.join(parts) or 'scratch'}"


def _as_list(v: Any) -> list:
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _parse_stl_n(spec: Any, backbones: list[str]) -> tuple[str, Any]:
    """``grid.stl_n`` -> ``("unavailable", reason)``, ``("pretrained", {backbone: file})`` or ``("stage", entry)``."""
    usage = (
        "use 'unavailable', {unavailable: REASON}, {pretrained: FILE}, {pretrained: {BACKBONE: FILE}} or {stage: stl_n}"
    )
    if spec == "unavailable":
        return "unavailable", _STL_N_UNAVAILABLE
    if isinstance(spec, dict) and len(spec) == 1 and "unavailable" in spec:
        return "unavailable", str(spec["unavailable"] or _STL_N_UNAVAILABLE)
    if isinstance(spec, dict) and len(spec) == 1 and "pretrained" in spec:
        files = spec["pretrained"]
        if isinstance(files, str) and files:
            return "pretrained", dict.fromkeys(backbones, files)
        if isinstance(files, dict):
            missing = [bb for bb in backbones if not files.get(bb)]
            if missing:
                raise ValueError(f"stl_n: no pretrained file for backbone(s) {missing} in {files}.")
            return "pretrained", {bb: files[bb] for bb in backbones}
        raise ValueError(f"stl_n: 'pretrained' must be a file or a mapping backbone -> file, got {files!r}.")
    if isinstance(spec, dict) and spec.get("stage") == "stl_n" and set(spec) <= {"stage", "overrides", "config"}:
        return "stage", ("stl_n" if len(spec) == 1 else dict(spec))
    raise ValueError(f"bad stl_n {spec!r}: {usage}.")


def expand_grid(grid: dict) -> tuple[list[dict], list[dict]]:
    """Expand one ``grid:`` section (see the module docstring) into chains.

    Returns:
        ``(chains, skipped)``: the chains in the order backbones x n_attn x stage_sets x methods, and, for the cells
        not generated because STL-N is unavailable, ``{"name": chain name, "reason": why}``.

    Raises:
        ValueError: on an unknown or missing key, a bad stage set (named), an unknown SSTL-M method or a bad ``stl_n``.
    """
    if not isinstance(grid, dict):
        raise ValueError(f"a grid must be a mapping with keys {list(_GRID_KEYS)}, got {grid!r}.")
    unknown = sorted(set(grid) - set(_GRID_KEYS))
    if unknown:
        raise ValueError(f"unknown grid key(s) {unknown}; use {list(_GRID_KEYS)}.")
    missing = [k for k in ("backbones", "n_attn", "stage_sets") if not grid.get(k) and grid.get(k) != 0]
    if missing:
        raise ValueError(f"the grid needs {missing} (non-empty).")
    backbones = [str(b) for b in _as_list(grid["backbones"])]
    n_attns = _as_list(grid["n_attn"])
    for n in n_attns:
        if isinstance(n, bool) or n not in ATTN_COUNTS:
            raise ValueError(f"grid n_attn must hold non-local block counts of {list(ATTN_COUNTS)}, got {n!r}.")
    sets = [parse_stage_set(s) for s in _as_list(grid["stage_sets"])]
    methods = _as_list(grid.get("methods") or ["ours"])
    bad = [m for m in methods if m not in SSTL_METHODS]
    if bad:
        raise ValueError(f"unknown SSTL-M method(s) {bad} in the grid; use {list(SSTL_METHODS)}.")
    stl_n_mode, stl_n = None, None
    if grid.get("stl_n") is not None:
        stl_n_mode, stl_n = _parse_stl_n(grid["stl_n"], backbones)
    elif any("stl_n" in st for st in sets):
        raise ValueError(
            "stage sets with stl_n need 'stl_n:' in the grid (unavailable, {pretrained: FILE} or {stage: stl_n})."
        )
    chains: list[dict] = []
    skipped: list[dict] = []
    seen: set[str] = set()
    for bb in backbones:
        for n in n_attns:
            for stages in sets:
                for method in methods if "sstl_m" in stages else [None]:
                    name = grid_chain_name(bb, n, stages, method)
                    if name in seen:
                        continue
                    seen.add(name)
                    chain: dict[str, Any] = {"name": name}
                    steps: list[Any] = []
                    if "stl_n" in stages:
                        if stl_n_mode == "unavailable":
                            skipped.append({"name": name, "reason": stl_n})
                            continue
                        if stl_n_mode == "pretrained":
                            chain["pretrained"] = stl_n[bb]
                        else:
                            steps.append(stl_n if isinstance(stl_n, str) else copy.deepcopy(stl_n))
                    if "stl_m" in stages:
                        steps.append("stl_m")
                    if "sstl_m" in stages:
                        steps.append({"stage": "sstl_m", "overrides": {"method": method}})
                    chain["overrides"] = {"backbone": bb, "n_attn": n}
                    chain["stages"] = steps + ["finetune", "evaluate"]
                    chains.append(chain)
    return chains, skipped


def expand_seeds(chains: list[dict], seeds: Any) -> list[dict]:
    """Each chain once per seed: seed 0 as written, seed ``k`` as ``<name>_s<k>`` with the override ``seed: k``.

    A chain whose own overrides set ``seed`` is kept once, as written.

    Raises:
        ValueError: ``seeds`` is not a non-empty list of distinct non-negative integers.
    """
    seeds = _as_list(seeds)
    if not seeds or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"'seeds' must be a list of distinct non-negative integers, e.g. [0, 1, 2], got {seeds!r}.")
    out: list[dict] = []
    for chain in chains:
        if not isinstance(chain, dict) or "seed" in (chain.get("overrides") or {}):
            out.append(chain)
            continue
        for k in seeds:
            if k == 0:
                out.append(chain)
                continue
            c = copy.deepcopy(chain)
            c["name"] = f"{chain.get('name')}_s{k}"
            c["overrides"] = dict(c.get("overrides") or {}, seed=k)
            out.append(c)
    return out


def load_pipeline_config(path: str | os.PathLike) -> dict:
    """Read and check a pipeline YAML (see ``configs/cpu_scale.yaml``); expand its ``grid`` into ``cfg["chains"]``.

    The STL-N cells a grid could not generate are listed in ``cfg["_grid_skipped"]`` (``{"name", "reason"}`` each).

    A config is code, like a bundle config: the YAML itself is read safely, but every setting is handed to the
    bundle, where a value starting with ``$`` is evaluated as Python (``loss: "$torch.nn.CrossEntropyLoss()"``, or
    anything else Python can do, with the rights of the user running it). Run only configs you trust.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: naming the file and the key, for a malformed config, grid or chain.
        KeyError: a chain without ``name`` or ``stages``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline config {str(path)!r} does not exist.")
    try:
        with open(path, encoding="utf-8") as f:
            cfg = yaml.safe_load(f)
    except (UnicodeDecodeError, yaml.YAMLError) as e:
        why = " ".join(str(e).split())
        raise ValueError(f"pipeline config {str(path)!r} is not a YAML text file ({why}).") from None
    if not isinstance(cfg, dict) or not (cfg.get("chains") or cfg.get("grid")):
        raise ValueError(
            f"pipeline config {path} must be a mapping with a non-empty 'chains' list and/or a 'grid' section."
        )
    chains = cfg.get("chains") or []
    if not isinstance(chains, list):
        raise ValueError(f"pipeline config {path}: 'chains' must be a list, got {type(chains).__name__}.")
    skipped: list[dict] = []
    names = {c.get("name") for c in chains if isinstance(c, dict)}
    for grid in _as_list(cfg.get("grid") or []):
        try:
            generated, skip = expand_grid(grid)
        except ValueError as e:
            raise ValueError(f"pipeline config {path}, grid: {e}") from e
        for chain in generated:
            if chain["name"] not in names:
                names.add(chain["name"])
                chains.append(chain)
        skipped += [s for s in skip if s["name"] not in names and s not in skipped]
    if cfg.get("seeds") is not None:
        try:
            chains = expand_seeds(chains, cfg["seeds"])
        except ValueError as e:
            raise ValueError(f"pipeline config {path}: {e}") from None
    cfg["chains"] = chains
    cfg["_grid_skipped"] = skipped
    _check_keys(cfg, _CONFIG_KEYS, f"pipeline config {path}", "key")
    for name in ("common", "stage_defaults"):
        if not isinstance(cfg.get(name) or {}, dict):
            raise ValueError(f"pipeline config {path}: {name!r} must be a mapping of settings, got {cfg[name]!r}.")
    _check_keys(cfg.get("stage_defaults") or {}, STAGES, f"pipeline config {path}, stage_defaults", "stage")
    for chain in cfg["chains"]:
        if not isinstance(chain, dict) or "name" not in chain or "stages" not in chain:
            raise KeyError(f"pipeline config {path}: every chain needs 'name' and 'stages', got {chain}")
        where = f"pipeline config {path}, chain {chain['name']}"
        _check_keys(chain, _CHAIN_KEYS, where, "key")
        if not isinstance(chain["stages"], list) or not chain["stages"]:
            raise ValueError(
                f"{where}: 'stages' must be a list of stages, e.g. [finetune, evaluate], got {chain['stages']!r}."
            )
        if not isinstance(chain.get("overrides") or {}, dict):
            raise ValueError(f"{where}: 'overrides' must be a mapping of settings, got {chain['overrides']!r}.")
        for st in chain["stages"]:
            if isinstance(st, dict):
                _check_keys(st, _STEP_KEYS, where + ", stage entry", "key")
                if not isinstance(st.get("overrides") or {}, dict):
                    raise ValueError(f"{where}: a stage's 'overrides' must be a mapping of settings, got {st['overrides']!r}.")
            elif not isinstance(st, str):
                raise ValueError(f"{where}: a stage is a name or {{stage: NAME, overrides: {{...}}}}, got {st!r}.")
            stage = st if isinstance(st, str) else st.get("stage")
            if stage not in STAGES:
                raise ValueError(f"{where}: unknown stage {stage!r}{_did_you_mean(stage, STAGES)}; use {list(STAGES)}.")
    cfg.setdefault("bundle_dir", "bundle")
    cfg.setdefault("output_root", f"runs/{path.stem}")
    cfg.setdefault("results_dir", f"results/{path.stem}")
    cfg["_config_dir"] = str(path.resolve().parent)
    return cfg


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""


def _check_keys(mapping: dict, allowed: Any, where: str, what: str) -> None:
    """Raise ``ValueError`` naming ``where`` for a key of ``mapping`` not in ``allowed`` (closest keys suggested)."""
    for key in mapping:
        if not str(key).startswith("_") and key not in allowed:
            raise ValueError(f"{where}: unknown {what} {key!r}{_did_you_mean(key, allowed)}; use {list(allowed)}.")


def skipped_lines(skipped: list[dict]) -> list[str]:
    """``STL-N n/a: <reason>: <names>`` per reason, for the cells a grid did not generate."""
    by_reason: dict[str, list[str]] = {}
    for s in skipped:
        by_reason.setdefault(s["reason"], []).append(s["name"])
    return [f"STL-N n/a: {reason}; not generated: {', '.join(names)}" for reason, names in by_reason.items()]
