# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The bundle's one-word CPU recipe (``bundle/configs/cpu.yaml``), written from a pipeline config.

A pipeline config's ``common`` and ``stage_defaults`` are the recipe its results come from (``configs/cpu_scale.yaml``).
Bundle users get the same recipe by merging one file after a stage's configs; that file is not a second copy to keep
in step by hand but is written from the pipeline config (:func:`bundle_recipe`;
``mstl-pipeline --config configs/cpu_scale.yaml --write-bundle-recipe bundle/configs/cpu.yaml``), and a test checks
that the file in git is what the config writes.

Each setting the recipe changes becomes one line: a plain value where every training stage that reads it takes the
same, else an expression on ``@stage`` (``"${'stl_n': 8, 'stl_m': 15, 'sstl_m': 15}.get(@stage, 40)"``) whose
default is the value most stages take; a stage the recipe leaves at the bundle's own default keeps that default
(``@image_size`` or a number) in the expression. Settings equal to the bundle's defaults in every stage are left out.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from mstl_monai.pipeline.config import STAGES
from mstl_monai.utils.io import check_output_path
from mstl_monai.utils.settings import load_config_tree

__all__ = ["TRAINING_STAGES", "bundle_recipe", "check_recipe_target", "recipe_values"]

#: the stages a recipe file is merged into (evaluate and inference take their settings from the checkpoint)
TRAINING_STAGES = ("stl_n", "stl_m", "sstl_m", "finetune")

_HEADER = """\
# The CPU-scale recipe in one word, for the bundle: merge this file after a training stage's configs, e.g.
#   python -m monai.bundle run --config_file "['configs/train.yaml','configs/cpu.yaml']"
#   python -m monai.bundle run --config_file "['configs/train.yaml','configs/stl_m.yaml','configs/cpu.yaml']"
#   python -m monai.bundle run --config_file "['configs/sstl_m.yaml','configs/cpu.yaml']"
# Not for evaluate.yaml / inference.yaml: they take backbone, ATTN blocks and input size from the checkpoint's
# settings file (model.pt.json), which this file would override. Every setting here can still be overridden on the
# command line. Without this file the configs keep the paper's recipe (224 px, batch 256, 200 epochs, lr 0.3).
# WRITTEN FROM {source} (its common + stage_defaults: the recipe the published results come from) by
#   mstl-pipeline --config {source} --write-bundle-recipe {target}
# Edit that config and run the command again; tests check that this file is what it writes.
"""


def check_recipe_target(target: str | os.PathLike, config: str | os.PathLike) -> None:
    """Refuse a recipe path that would destroy something: the pipeline config itself, a folder, a path under a
    file, or an existing file this command did not write (it has no ``--write-bundle-recipe`` header).

    Raises:
        ValueError: one line naming the path and why.
    """
    target = Path(target)
    if target.resolve() == Path(config).resolve():
        raise ValueError(f"--write-bundle-recipe {str(target)!r} is the pipeline config itself: choose another path.")
    check_output_path(target, "--write-bundle-recipe")
    if target.exists():
        try:
            head = target.read_text(errors="replace")[:4000]
        except OSError as e:
            raise ValueError(f"--write-bundle-recipe {str(target)!r} cannot be read: {e}") from None
        if "# WRITTEN FROM " not in head or "--write-bundle-recipe" not in head:
            raise ValueError(
                f"--write-bundle-recipe {str(target)!r} exists and is not a recipe this command wrote (no "
                "'# WRITTEN FROM ... --write-bundle-recipe' header): remove it or choose another path."
            )


def _stage_files(bundle_dir: Path, stage: str) -> list[Path]:
    return [bundle_dir / "configs" / f for f in STAGES[stage][0]]


def recipe_values(cfg: dict, repo_root: str | os.PathLike = ".") -> dict[str, dict[str, Any]]:
    """``{setting: {stage: value}}``: what each training stage of the pipeline config ``cfg`` takes for each setting
    of its ``common`` / ``stage_defaults`` that the stage's bundle config files define (``seed`` excluded: a run's
    choice, not the recipe's)."""
    bundle_dir = Path(repo_root) / cfg["bundle_dir"]
    common = dict(cfg.get("common") or {})
    defaults = cfg.get("stage_defaults") or {}
    keys = [k for k in common if k != "seed"]
    keys += [k for st in TRAINING_STAGES for k in defaults.get(st, {}) if k not in keys and k != "seed"]
    out: dict[str, dict[str, Any]] = {}
    for stage in TRAINING_STAGES:
        tree = load_config_tree(_stage_files(bundle_dir, stage))
        own = dict(common, **defaults.get(stage, {}))
        for k in keys:
            if k in tree:
                out.setdefault(k, {})[stage] = own[k] if k in own else _BundleDefault(tree[k])
    return out


def _bundle_literal(v: Any) -> Any:
    """A stage's bundle default as a plain value where it is one (``0.0``), else kept as :class:`_BundleDefault`."""
    if isinstance(v, _BundleDefault) and not (isinstance(v.value, str) and v.value.startswith(("$", "@", "%"))):
        return v.value
    return v


class _BundleDefault:
    """A stage's own bundle value (a literal, ``@ref`` or ``$expression``) where the recipe does not set one."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BundleDefault) and other.value == self.value

    def code(self) -> str:
        v = self.value
        if isinstance(v, str) and v.startswith("$"):
            return f"({v[1:]})"
        if isinstance(v, str) and v.startswith("@"):
            return v
        return repr(v)


def _code(v: Any) -> str:
    return v.code() if isinstance(v, _BundleDefault) else repr(v)


def _line(key: str, per_stage: dict[str, Any], bundle: dict[str, Any]) -> str | None:
    """The recipe file's line for ``key`` (``None``: every stage takes its bundle default). ``per_stage``: the value
    of each stage reading ``key``; ``bundle``: each such stage's own bundle value."""
    if all(isinstance(v, _BundleDefault) or v == bundle[s] for s, v in per_stage.items()):
        return None  # the recipe leaves it at the bundle's defaults
    values = {s: _bundle_literal(v) for s, v in per_stage.items()}
    order = sorted(values, key=lambda s: s != "finetune")  # the finetune's value wins a tie for the default
    shown = {s: json.dumps(values[s], sort_keys=True, default=_code) for s in order}
    if len(set(shown.values())) == 1:
        return f"{key}: {json.dumps(values[order[0]])}"
    common = Counter(shown[s] for s in order).most_common(1)[0][0]
    default = next(values[s] for s in order if shown[s] == common)
    others = ", ".join(f"{s!r}: {_code(values[s])}" for s in per_stage if shown[s] != common)
    return f"{key}: {json.dumps('${' + others + '}.get(@stage, ' + _code(default) + ')')}"


def bundle_recipe(cfg: dict, source: str, target: str, repo_root: str | os.PathLike = ".") -> str:
    """The text of the bundle's recipe file for the pipeline config ``cfg`` (read from ``source``, to be written to
    ``target``; both as the command line names them)."""
    bundle_dir = Path(repo_root) / cfg["bundle_dir"]
    trees = {st: load_config_tree(_stage_files(bundle_dir, st)) for st in TRAINING_STAGES}
    values = recipe_values(cfg, repo_root)
    lines = [_line(k, v, {st: trees[st][k] for st in v}) for k, v in values.items()]
    return _HEADER.format(source=source, target=target) + "\n".join(line for line in lines if line) + "\n"
