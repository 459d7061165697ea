# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Check setting overrides against the config files that define them.

A misspelt override (``--epoch 1``, ``--bakbone resnet18``) used to be added to the config as a new, unused key and
the run went on with the default. Here an override must name a setting that the config files define (nested ids such
as ``train#trainer#max_epochs`` included), else it is an error that names it and suggests the closest settings
(:mod:`difflib`); an override whose value cannot be what the config's literal default is (``--n_attn five`` where the
default is ``0``) is an error naming the setting and the value. The known settings are read from the config files
themselves, so a key added to a config is known without a list to keep up to date.

Used by the bundle (:func:`check_overrides`, the first entry of every config's ``initialize``) and by the pipeline
runner (:func:`check_settings` on each stage's overrides before anything trains). Needs neither torch nor MONAI
(MONAI is imported only by the bundle hook and to read a component's arguments).

.. code-block:: python

    from mstl_monai.utils.settings import check_settings

    check_settings({"epoch": 1}, ["bundle/configs/train.yaml"])
    # SettingsError: unknown setting 'epoch' (not in train.yaml): did you mean 'epochs'?
"""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "SettingsError",
    "bundle_command_line",
    "check_overrides",
    "did_you_mean",
    "check_settings",
    "load_config_tree",
    "override_problems",
]

logger = logging.getLogger(__name__)

#: keys of a ``_target_`` component that MONAI reads itself (not constructor arguments)
_COMPONENT_KEYS = ("_target_", "_disabled_", "_requires_", "_desc_", "_mode_")
#: top-level ids that MONAI adds to every bundle config (metadata)
_MONAI_IDS = ("_meta_",)


class SettingsError(ValueError):
    """An override names no setting of the config, or has a value its setting cannot take."""


def _split_id(key: str) -> list[str]:
    return str(key).replace("::", "#").split("#")


def _read(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {str(path)!r} does not exist.")
    with open(path) as f:
        content = json.load(f) if path.suffix.lower() == ".json" else yaml.safe_load(f)
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of settings, got {type(content).__name__}.")
    return content


def _as_files(files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    if isinstance(files, (str, os.PathLike)):
        text = str(files)
        # MONAI accepts "a.yaml,b.yaml" as well as a list
        return text.split(",") if not Path(text).is_file() and "," in text else [text]
    return [str(f) for f in files]


def load_config_tree(files: str | os.PathLike | Sequence[str | os.PathLike]) -> dict:
    """Merge config files the way MONAI's ``ConfigParser.load_config_files`` does, without resolving anything.

    Later files replace top-level keys, ``+key`` merges a mapping or extends a list, and ``a#b`` (or ``a::b``) keys set
    an entry inside an existing section.

    Raises:
        FileNotFoundError: naming a missing file.
        ValueError: naming the file and key of a nested id whose section does not exist.
    """
    tree: dict = {}
    for f in _as_files(files):
        for k, v in _read(f).items():
            k = str(k)
            if k.startswith("+"):
                old = tree.get(k[1:])
                if isinstance(old, dict) and isinstance(v, dict):
                    old.update(v)
                elif isinstance(old, list) and isinstance(v, list):
                    old.extend(v)
                else:
                    tree[k[1:]] = v
                continue
            *parents, last = _split_id(k)
            node: Any = tree
            for part in parents:
                if isinstance(node, dict) and part in node:
                    node = node[part]
                elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                    node = node[int(part)]
                else:
                    raise ValueError(f"config file {f}: key {k!r} sets an entry inside {part!r}, which does not exist.")
            if isinstance(node, list):
                node[int(last)] = v
            else:
                node[last] = v
    return tree


def did_you_mean(word: str, choices: Sequence[str], prefix: str = "", cutoff: float = 0.6) -> str:
    """``": did you mean 'epochs'?"`` with up to three of ``choices`` closest to ``word`` (``""`` when none is close;
    names starting with ``_`` are never suggested)."""
    close = difflib.get_close_matches(word, [c for c in choices if not c.startswith("_")], n=3, cutoff=cutoff)
    if not close:
        return ""
    return ": did you mean " + " or ".join(repr(prefix + c) for c in close) + "?"


def _component_arguments(target: Any) -> list[str] | None:
    """Constructor arguments of a ``_target_`` (MONAI's short names included); ``None`` when it takes any keyword
    or cannot be located here (then any argument is accepted: the component itself rejects a wrong one)."""
    if not isinstance(target, str) or target.startswith(("$", "@", "%")):
        return None
    try:
        obj: Any = None
        if "." in target:
            from pydoc import locate

            obj = locate(target)
        else:
            import importlib

            from monai.bundle.config_item import ComponentLocator

            mod = ComponentLocator().get_component_module_name(target)
            mod = mod[0] if isinstance(mod, list) else mod
            obj = getattr(importlib.import_module(mod), target) if mod else None
        if obj is None:
            return None
        params = inspect.signature(obj).parameters.values()
    except Exception:  # noqa: BLE001 - an argument we cannot check is left to the component
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is not inspect.Parameter.VAR_POSITIONAL]


def _kind(default: Any) -> tuple[str, tuple[type, ...]] | None:
    """What a literal default says about the values its setting takes; ``None``: nothing (text, lists, expressions)."""
    if isinstance(default, bool):
        return "True or False", (bool,)
    if isinstance(default, int):
        return "a whole number", (int,)
    if isinstance(default, float):
        return "a number", (int, float)
    return None


def _value_problem(key: str, value: Any, default: Any, where: str) -> str | None:
    if isinstance(value, str) and value.startswith(("$", "@", "%")):
        return None  # an expression, reference or macro: checked where it is evaluated
    kind = _kind(default)
    if kind is None:
        return None
    what, types = kind
    ok = isinstance(value, types) and (bool in types or not isinstance(value, bool))
    if ok:
        return None
    return f"setting {key!r} must be {what} like its default {default!r} in {where}, got {value!r}"


def _id_problem(key: str, config: Mapping, where: str) -> tuple[str | None, Any, bool]:
    """``(problem, file value, found)`` for one override id."""
    parts = _split_id(key)
    node: Any = config
    path: list[str] = []
    for i, part in enumerate(parts):
        here = "#".join(path)
        last = i == len(parts) - 1
        if isinstance(node, Mapping):
            if part in node:
                node, path = node[part], path + [part]
                continue
            choices = [str(c) for c in node]
            if path and "_target_" in node:
                if part in _COMPONENT_KEYS:
                    return None, None, False
                args = _component_arguments(node["_target_"])
                if args is None or (last and part in args):
                    return (None, None, False) if last else (f"{here!r} has no entry {part!r}", None, False)
                choices = sorted(set(choices) | set(args))
            if not path and part in _MONAI_IDS:
                return None, None, False
            hint = did_you_mean(part, choices, prefix=here + "#" if path else "")
            if not path:
                return f"unknown setting {key!r} (not in {where}){hint}", None, False
            return f"unknown setting {key!r} ({here!r} in {where} has no {part!r}){hint}", None, False
        if isinstance(node, list):
            if part.isdigit() and int(part) < len(node):
                node, path = node[int(part)], path + [part]
                continue
            return f"{here!r} is a list of {len(node)} entries in {where}: it has no entry {part!r}", None, False
        return f"{here!r} is a single value in {where}, not a section: it has no entry {part!r}", None, False
    return None, node, True


def override_problems(
    overrides: Mapping[str, Any], config: Mapping, where: str = "the config", known: Sequence[str] = ()
) -> list[str]:
    """One message per override that names no setting of ``config`` or has a value its setting cannot take.

    Args:
        overrides: id -> value (ids may be nested: ``train#trainer#max_epochs``, ``train::trainer::max_epochs``).
        config: the merged config files (:func:`load_config_tree`).
        where: how the messages name the config files.
        known: further top-level ids that are accepted (e.g. settings another part of MONAI adds).
    """
    problems = []
    for key, value in overrides.items():
        if _split_id(key)[0] in known:
            continue
        problem, default, found = _id_problem(str(key), config, where)
        if problem is None and found:
            problem = _value_problem(str(key), value, default, where)
        if problem:
            problems.append(problem)
    return problems


def _where(files: Sequence[str]) -> str:
    return " + ".join(os.path.basename(f) for f in files)


def check_settings(
    overrides: Mapping[str, Any],
    config_files: str | os.PathLike | Sequence[str | os.PathLike],
    known: Sequence[str] = (),
) -> None:
    """Raise :class:`SettingsError` (one line, every problem) when ``overrides`` do not fit ``config_files``.

    Raises:
        SettingsError: e.g. ``unknown setting 'epoch' (not in train.yaml): did you mean 'epochs'?``.
        FileNotFoundError: naming a config file that does not exist.
    """
    files = _as_files(config_files)
    config = load_config_tree(files)
    problems = []
    for key, value in overrides.items():
        found = override_problems({key: value}, config, _where(files), known)
        hint = _defined_elsewhere(str(key), files) if found and _split_id(key)[0] not in config else ""
        if hint:
            found = [f"unknown setting {str(key)!r} (not in {_where(files)}){hint}"]
        problems += found
    if problems:
        raise SettingsError("; ".join(problems))


def _defined_elsewhere(key: str, files: Sequence[str]) -> str:
    """`` (defined in mag_sd.yaml: add it to --config_file ...)`` for a top-level setting that another config file
    beside ``files`` defines or is named after (an override file: ``--mag_sd True`` means ``mag_sd.yaml``), else
    ``""``."""
    top = _split_id(key)[0]
    folder = Path(files[-1]).parent if files else Path(".")
    given = {Path(f).resolve() for f in files}
    owners = []
    for other in sorted(folder.glob("*.yaml")):
        if other.resolve() in given:
            continue
        try:
            if top == other.stem or top in _read(other):
                owners.append(other.name)
        except (OSError, ValueError, yaml.YAMLError):
            continue
    if not owners:
        return ""
    return f" ({'the override file' if top == Path(owners[0]).stem else 'defined in'} {' and '.join(owners)}: add it to --config_file, e.g. \"['{Path(files[0]).name}','{owners[0]}']\")"


def _tracking_ids(tracking: Any) -> list[str]:
    """Top-level ids MONAI's experiment tracking (``--tracking mlflow``) adds and accepts as overrides."""
    if not tracking:
        return []
    try:
        from monai.bundle import ConfigParser
        from monai.bundle.utils import DEFAULT_EXP_MGMT_SETTINGS

        settings = DEFAULT_EXP_MGMT_SETTINGS.get(tracking) if isinstance(tracking, str) else None
        if settings is None:
            settings = tracking if isinstance(tracking, dict) else ConfigParser.load_config_files(tracking)
        return [str(k) for k in (settings.get("configs") or {})]
    except Exception:  # noqa: BLE001 - tracking settings MONAI itself will reject
        return []


def bundle_command_line(argv: Sequence[str]) -> tuple[Any, dict[str, Any], dict[str, Any]] | None:
    """The config files, overrides and other arguments of a ``python -m monai.bundle run|run_workflow`` command line.

    ``argv`` is parsed as MONAI parses it (with ``fire``, against the signature of ``monai.bundle.scripts.run`` or
    ``run_workflow``; an ``--args_file`` is merged in as MONAI merges it).

    Returns:
        ``(config_file, overrides, arguments)``; ``None`` when ``argv`` is not such a command line (another program,
        e.g. a MONAI Label server that runs the bundle in its own process, or one that cannot be parsed).
    """
    import fire
    from monai.bundle import ConfigWorkflow, scripts

    main = Path(scripts.__file__).with_name("__main__.py")
    if len(argv) < 2 or not os.path.isfile(argv[0]) or not os.path.samefile(argv[0], main):
        return None
    command = {"run": scripts.run, "run_workflow": scripts.run_workflow}.get(argv[1])
    if command is None:
        return None
    captured: list[dict[str, Any]] = []

    def capture(*args: Any, **kwargs: Any) -> None:
        bound = inspect.signature(command).bind(*args, **kwargs)
        named = {k: v for k, v in bound.arguments.items() if k not in ("override", "kwargs")}
        named.update(bound.arguments.get("override") or bound.arguments.get("kwargs") or {})
        captured.append(scripts.update_kwargs(args=named.pop("args_file", None), **named))

    try:
        fire.Fire({argv[1]: capture}, command=list(argv[1:]), name="monai.bundle")
    except (SystemExit, TypeError, ValueError):  # fire's own usage errors: MONAI reports them itself
        return None
    if not captured:
        return None
    arguments = captured[0]
    params = set(inspect.signature(command).parameters) | set(inspect.signature(ConfigWorkflow.__init__).parameters)
    overrides = {k: v for k, v in arguments.items() if k not in params}
    return arguments.get("config_file"), overrides, arguments


def check_overrides(argv: Sequence[str] | None = None) -> None:
    """Bundle hook: stop a ``python -m monai.bundle run`` whose overrides do not fit its config files.

    Put it first in a config's ``initialize`` list (``"$mstl_monai.utils.settings.check_overrides()"``): it runs before
    anything is built or read. It reads the run's config files and overrides from the command line of this process
    (``argv``, default ``sys.argv``: ``python -m monai.bundle run ...``, also under torchrun;
    :func:`bundle_command_line`), checks them with :func:`check_settings`, and on a problem exits with one line naming
    the setting, the files and the closest settings. A workflow started otherwise (``ConfigWorkflow(...)``,
    ``monai.bundle.run(...)`` called in a Python program, MONAI Label's in-process trainer) is not checked; that is
    logged.

    Raises:
        SystemExit: with the problem, so that it is the only line printed rather than the end of a traceback.
    """
    import sys

    parsed = bundle_command_line(sys.argv if argv is None else argv)
    if parsed is None or parsed[0] is None:
        logger.info("overrides not checked: this process is not a `python -m monai.bundle run` command line.")
        return
    config_file, overrides, arguments = parsed
    try:
        check_settings(overrides, config_file, known=_tracking_ids(arguments.get("tracking")))
    except (SettingsError, FileNotFoundError, ValueError) as e:
        raise SystemExit(f"bad override: {e}") from None
