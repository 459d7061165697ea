# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Read the published results of a pipeline (``<results>/<chain>/``) into one row per chain, and find grid cells."""

from __future__ import annotations

import json
from pathlib import Path

__all__ = [
    "describe_chain",
    "finetune_epochs",
    "load_results",
    "load_stl_n_top1",
    "leep_network",
    "cell_key",
    "find_row",
    "find_metrics",
    "seed_groups",
]

#: the transfer stages a chain may run before its finetune, in order
TRANSFER_STAGES = ("stl_n", "stl_m", "sstl_m")
#: the finetune's epochs when neither the chain nor its finetune stage sets them (the pipeline's stage default)
DEFAULT_FINETUNE_EPOCHS = 40


def describe_chain(chain_json: dict) -> dict:
    """The grid cell of a chain from its ``chain.json``: backbone, ``n_attn``, transfer stages, SSTL-M method, input
    size, checkpoint-selection guard, the other finetune settings (``recipe``: not the grid's cell) and the seed.

    A finetune-only seed (``seed`` in the finetune stage's overrides, the pretraining stages shared with seed 0) is a
    seed of the same cell, with ``seed_scope`` ``"finetune"``; otherwise the chain's own ``seed`` (scope ``"chain"``).
    """
    chain = chain_json["chain"]
    common = chain_json.get("common", {})
    ov = dict(common, **chain.get("overrides", {}))
    stages, method, guard = [], None, float(ov.get("selection_min_class_fraction", 0) or 0)
    recipe: tuple = ()
    ft_seed = None
    for st in chain["stages"]:
        name = st if isinstance(st, str) else st["stage"]
        if name == "finetune" and isinstance(st, dict):
            guard = float(st.get("overrides", {}).get("selection_min_class_fraction", guard) or 0)
            ft_seed = st.get("overrides", {}).get("seed")
            recipe = tuple(
                sorted(
                    (k, v)
                    for k, v in st.get("overrides", {}).items()
                    if k not in ("selection_min_class_fraction", "seed")
                )
            )
        if name == "sstl_m":
            method = (st.get("overrides", {}) if isinstance(st, dict) else {}).get("method", "ours")
        if name in TRANSFER_STAGES:
            stages.append(name)
    if chain.get("pretrained"):
        stages.insert(0, "stl_n")
        # the natural-image weights given as a file are not the grid's own STL-N stage: another cell
        recipe = tuple(sorted(recipe + (("stl_n_weights", Path(str(chain["pretrained"])).name),)))
    return {
        "backbone": ov.get("backbone", "resnet50"),
        "n_attn": int(ov.get("n_attn", 0)),
        "stages": tuple(stages),
        "method": method,
        "image_size": ov.get("image_size"),
        "guard": guard,
        "recipe": recipe,
        "seed": int(ft_seed if ft_seed is not None else (ov.get("seed", 0) or 0)),
        "seed_scope": "finetune" if ft_seed is not None else "chain",
    }


def finetune_epochs(chain_json: dict) -> int:
    """The finetune's epochs: its stage override, else the chain's, else the pipeline's stage default (40)."""
    chain = chain_json["chain"]
    epochs = chain_json.get("stage_defaults", {}).get("finetune", {}).get("epochs", DEFAULT_FINETUNE_EPOCHS)
    epochs = chain.get("overrides", {}).get("epochs", epochs)
    for st in chain["stages"]:
        if isinstance(st, dict) and st.get("stage") == "finetune":
            epochs = st.get("overrides", {}).get("epochs", epochs)
    return int(epochs)


def _read_json(path: Path):
    """``path`` parsed, or a ValueError naming it (a truncated or hand-edited results file)."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read it as JSON ({e})") from e


def load_results(results: str | Path) -> list[dict]:
    """One row per finished chain of ``results`` (a folder with ``metrics.json`` and ``chain.json``), by name.

    A row is :func:`describe_chain` plus ``chain`` (the folder name), ``metrics`` (``metrics.json``), ``seconds``
    (the sum of ``timing.json``, ``None`` without it), ``finetune_seconds``, ``finetune_epochs`` and
    ``predictions`` (the path of ``predictions.csv``, ``None`` without it).
    """
    rows = []
    for d in sorted(p for p in Path(results).iterdir() if p.is_dir()):
        m, c = d / "metrics.json", d / "chain.json"
        if not (m.is_file() and c.is_file()):
            continue
        chain_json = _read_json(c)
        try:
            info = describe_chain(chain_json)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{c}: not a chain.json written by mstl-pipeline ({type(e).__name__}: {e})") from e
        info["chain"] = d.name
        info["metrics"] = _read_json(m)
        t = d / "timing.json"
        timing = _read_json(t) if t.is_file() else {}
        info["seconds"] = sum(v for v in timing.values() if v) if timing else None
        info["finetune_seconds"] = timing.get("finetune")
        info["finetune_epochs"] = finetune_epochs(chain_json)
        info["predictions"] = d / "predictions.csv" if (d / "predictions.csv").is_file() else None
        rows.append(info)
    return rows


def load_stl_n_top1(results: str | Path) -> dict[tuple[str, int], dict]:
    """``(backbone, n_attn) -> stl_n_<backbone>_attn<n>.json`` (written by ``scripts/stl_n_top1.py``) in ``results``."""
    out = {}
    for f in sorted(Path(results).glob("stl_n_*.json")):
        d = json.loads(f.read_text())
        key = (d.get("backbone"), int(d.get("n_attn", 0)))
        # stl_n_top1.py writes "epochs": null when its run left no checkpoint_epoch=<n>.pt
        if "top1" in d and (key not in out or (d.get("epochs") or 0) >= (out[key].get("epochs") or 0)):
            out[key] = d  # of two runs of one network, the longer
    return out


def leep_network(key: str) -> tuple[str, int]:
    """``(backbone, n_attn)`` of a ``leep.json`` key ``"<backbone>_attn<n>"``."""
    bb, n = key.rsplit("_attn", 1)
    return bb, int(n)


def cell_key(r: dict) -> tuple:
    """The cell a row belongs to: every setting but the seed (the rows of one key are seeds of one cell)."""
    return (
        r["backbone"],
        r["n_attn"],
        r["stages"],
        r["method"] or "",
        r.get("guard", 0.0),
        r.get("image_size"),
        r.get("recipe", ()),
    )


def find_row(
    rows: list[dict], backbone: str, n_attn: int, stages: tuple, method: str | None = None, guard: float = 0.0
) -> dict | None:
    """The first row of the grid cell (default finetune settings), ``None`` when it has not run."""
    for r in rows:
        same = r["backbone"] == backbone and r["n_attn"] == n_attn and r["stages"] == tuple(stages)
        if same and r["method"] == method and r.get("guard", 0.0) == guard and not r.get("recipe"):
            return r
    return None


def find_metrics(
    rows: list[dict], backbone: str, n_attn: int, stages: tuple, method: str | None = None, guard: float = 0.0
) -> dict | None:
    """The ``metrics`` of :func:`find_row`."""
    r = find_row(rows, backbone, n_attn, stages, method, guard)
    return r["metrics"] if r else None


def seed_groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """``cell_key -> rows`` of the rows with predictions, one per seed (the first of a seed), sorted by seed."""
    by_cell: dict[tuple, dict[int, dict]] = {}
    for r in rows:
        if r.get("predictions"):
            by_cell.setdefault(cell_key(r), {}).setdefault(r["seed"], r)
    return {k: [v[s] for s in sorted(v)] for k, v in by_cell.items()}
