# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Pipeline runner: run chains of bundle stages in order, passing each stage's best checkpoint to the next.

.. code-block:: bash

    mstl-pipeline --config configs/cpu_scale.yaml                 # every chain of the config
    mstl-pipeline --config configs/cpu_scale.yaml --chains r18_attn5_stlm_ssl_ft
    mstl-pipeline --config configs/cpu_scale.yaml --dry-run       # print the commands only

A chain is a list of stages (``stl_n``, ``stl_m``, ``sstl_m``, ``finetune``, ``evaluate``); each runs as
``python -m monai.bundle run <id> --config_file [...]`` in its own process with its own output folder
``<output_root>/<chain>/<stage>``. A finished stage leaves ``DONE.json`` there and is skipped when the chain is run
again; an interrupted stage resumes from its newest checkpoint (the bundle's ``ResumeFromLatest``). Evaluation
results (``metrics.json``, small) are copied to ``<results_dir>/<chain>/`` so they can be kept in git.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

__all__ = ["STAGES", "load_pipeline_config", "plan_chain", "run_chain", "main"]

#: stage name -> (config files relative to the bundle's configs/, run id, output checkpoint relative to the stage dir)
STAGES: dict[str, tuple[list[str], str, str | None]] = {
    "stl_n": (["train.yaml", "stl_n.yaml"], "training", "models/model.pt"),
    "stl_m": (["train.yaml", "stl_m.yaml"], "training", "models/model.pt"),
    "sstl_m": (["sstl_m.yaml"], "training", "models/model.pt"),
    "finetune": (["train.yaml"], "training", "models/model.pt"),
    "evaluate": (["train.yaml", "evaluate.yaml"], "evaluating", None),
}


def load_pipeline_config(path: str | os.PathLike) -> dict:
    """Read and check a pipeline YAML (see ``configs/cpu_scale.yaml``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline config {str(path)!r} does not exist.")
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict) or "chains" not in cfg:
        raise ValueError(f"pipeline config {path} must be a mapping with a 'chains' list.")
    for chain in cfg["chains"]:
        if "name" not in chain or "stages" not in chain:
            raise KeyError(f"pipeline config {path}: every chain needs 'name' and 'stages', got {chain}")
        for st in chain["stages"]:
            stage = st if isinstance(st, str) else st.get("stage")
            if stage not in STAGES:
                raise ValueError(f"pipeline config {path}, chain {chain['name']}: unknown stage {stage!r}; use {list(STAGES)}.")
    cfg.setdefault("bundle_dir", "bundle")
    cfg.setdefault("output_root", f"runs/{path.stem}")
    cfg.setdefault("results_dir", f"results/{path.stem}")
    cfg["_config_dir"] = str(path.resolve().parent)
    return cfg


def _fmt(v: Any) -> str:
    """Format an override for the bundle CLI (python-fire parses Python literals)."""
    if isinstance(v, str):
        return v
    return repr(v)


def _stage_id(stage: str, st_overrides: dict) -> str:
    """Folder name of a stage: its name plus the values of its own overrides (e.g. ``sstl_m-moco``)."""
    if not st_overrides:
        return stage
    return stage + "-" + "-".join(str(v).replace("/", "_") for _, v in sorted(st_overrides.items()))


def plan_chain(cfg: dict, chain: dict, repo_root: str | os.PathLike = ".") -> list[dict]:
    """Return, for each stage of ``chain``, its command line, output folder and the checkpoint it passes on.

    Stage folders are shared between chains with the same network and the same earlier stages:
    ``<output_root>/<backbone>_attn<n>/[imagenet/]stl_m/sstl_m-ours/finetune``, so a grid trains each prefix once.
    """
    repo_root = Path(repo_root).resolve()
    bundle_dir = (repo_root / cfg["bundle_dir"]).resolve()
    out_root = (repo_root / cfg["output_root"]).resolve()
    common = dict(cfg.get("common", {}))
    net_cfg = dict(common, **chain.get("overrides", {}))
    folder = out_root / f"{net_cfg.get('backbone', 'resnet50')}_attn{net_cfg.get('n_attn', 0)}"
    steps: list[dict] = []
    previous_ckpt: str | None = chain.get("pretrained") or cfg.get("pretrained") or None
    if previous_ckpt:
        previous_ckpt = str((repo_root / previous_ckpt).resolve()) if not os.path.isabs(previous_ckpt) else previous_ckpt
        folder = folder / ("init-" + Path(previous_ckpt).stem)
    finetune_dir: Path | None = None
    for st in chain["stages"]:
        st = {"stage": st} if isinstance(st, str) else dict(st)
        stage = st["stage"]
        files, run_id, out_ckpt = STAGES[stage]
        overrides: dict[str, Any] = {}
        overrides.update(common)
        overrides.update(cfg.get("stage_defaults", {}).get(stage, {}))
        overrides.update(chain.get("overrides", {}))
        overrides.update(st.get("overrides", {}))
        if stage == "evaluate":
            if finetune_dir is None:
                raise ValueError(f"chain {chain['name']}: 'evaluate' needs a 'finetune' stage before it.")
            stage_dir = finetune_dir / "eval_test"
            overrides["run_dir"] = str(finetune_dir)
        else:
            folder = folder / _stage_id(stage, st.get("overrides", {}))
            stage_dir = folder
            overrides["run_dir"] = str(stage_dir)
            overrides["pretrained"] = previous_ckpt or ""
        if cfg.get("data_root"):
            overrides["data_root"] = str((repo_root / cfg["data_root"]).resolve())
        config_files = [str(bundle_dir / "configs" / f) for f in st.get("config", files)]
        cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", json.dumps(config_files)]
        cmd += ["--bundle_root", str(bundle_dir), "--meta_file", str(bundle_dir / "configs" / "metadata.json")]
        cmd += ["--logging_file", str(bundle_dir / "configs" / "logging.conf")]
        for k, v in overrides.items():
            cmd += [f"--{k}", _fmt(v)]
        step = {"chain": chain["name"], "stage": stage, "dir": str(stage_dir), "cmd": cmd, "overrides": overrides}
        if stage == "evaluate":
            step["metrics"] = str(stage_dir / "metrics.json")
        if out_ckpt is not None:
            previous_ckpt = str(stage_dir / out_ckpt)
            step["checkpoint"] = previous_ckpt
        if stage == "finetune":
            finetune_dir = stage_dir
        steps.append(step)
    return steps


def _done_file(step: dict) -> Path:
    return Path(step["dir"]) / "DONE.json"


def run_chain(cfg: dict, chain: dict, repo_root: str | os.PathLike = ".", dry_run: bool = False) -> list[dict]:
    """Run the stages of one chain in order; skip finished ones; return a summary row per stage."""
    rows = []
    steps = plan_chain(cfg, chain, repo_root)
    results_dir = Path(repo_root) / cfg["results_dir"] / chain["name"]
    for i, step in enumerate(steps, 1):
        tag = f"[{chain['name']} {i}/{len(steps)} {step['stage']}]"
        done = _done_file(step)
        if done.is_file():
            info = dict(json.loads(done.read_text()), chain=chain["name"])  # a shared stage counts for this chain too
            print(f"{tag} already done in {info.get('seconds', 0):.0f}s: skipped", flush=True)
            rows.append(info)
            continue
        print(f"{tag} {' '.join(shlex.quote(c) for c in step['cmd'])}", flush=True)
        if dry_run:
            continue
        Path(step["dir"]).mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        log_path = Path(step["dir"]) / "stage.log"
        with open(log_path, "a", buffering=1) as log:
            proc = subprocess.Popen(step["cmd"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                log.write(line)
                if _worth_printing(line):
                    sys.stdout.write(f"{tag} {line}")
                    sys.stdout.flush()
            rc = proc.wait()
        seconds = time.time() - t0
        if rc != 0:
            raise RuntimeError(f"{tag} failed with exit code {rc} after {seconds:.0f}s; log: {log_path}")
        info = {"chain": chain["name"], "stage": step["stage"], "seconds": round(seconds, 1)}
        if "checkpoint" in step:
            if not Path(step["checkpoint"]).is_file():
                raise RuntimeError(f"{tag} finished but wrote no checkpoint {step['checkpoint']}; log: {log_path}")
            info["checkpoint"] = step["checkpoint"]
        probe = Path(step["dir"]) / "probe.json"
        if step["stage"] == "sstl_m" and probe.is_file():
            results_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(probe, results_dir / "sstl_m_probe.json")
        if "metrics" in step:
            metrics = json.loads(Path(step["metrics"]).read_text())
            info["metrics"] = metrics
            results_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy(step["metrics"], results_dir / "metrics.json")
            preds = Path(step["metrics"]).with_name("predictions.csv")
            if preds.is_file():
                shutil.copy(preds, results_dir / "predictions.csv")
            (results_dir / "chain.json").write_text(
                json.dumps({"chain": chain, "common": cfg.get("common", {}), "stage_defaults": cfg.get("stage_defaults", {})}, indent=2)
            )
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, done)
        rows.append(info)
    if not dry_run:
        timing = {r["stage"]: r.get("seconds") for r in rows}
        results_dir.mkdir(parents=True, exist_ok=True)
        (results_dir / "timing.json").write_text(json.dumps(timing, indent=2))
    return rows


def _worth_printing(line: str) -> bool:
    keys = ("Epoch[", "Key metric", "best", "evaluation on", "loaded", "resumed", "Error", "error", "Traceback")
    return any(k in line for k in keys) and "Iter[" not in line


def _summary_table(all_rows: list[dict]) -> str:
    lines = ["| chain | seconds | acc | F1 (COVID) | AUC | sens | spec | n |", "|---|---|---|---|---|---|---|---|"]
    by_chain: dict[str, list[dict]] = {}
    for r in all_rows:
        by_chain.setdefault(r["chain"], []).append(r)
    for name, rows in by_chain.items():
        secs = sum(r.get("seconds", 0) for r in rows)
        m = next((r["metrics"] for r in rows if "metrics" in r), None)

        def cell(k: str) -> str:
            if m is None or not isinstance(m.get(k), dict) or m[k].get("value") is None:
                return "-"
            v = m[k]
            return f"{100 * v['value']:.1f} [{100 * v['ci_low']:.1f}, {100 * v['ci_high']:.1f}]"

        n = m.get("n", "-") if m else "-"
        lines.append(
            f"| {name} | {secs:.0f} | {cell('accuracy')} | {cell('f1')} | {cell('auc')} | {cell('sensitivity')} | {cell('specificity')} | {n} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/cpu_scale.yaml", help="pipeline YAML")
    parser.add_argument("--chains", default=None, help="comma-separated chain names (default: all)")
    parser.add_argument("--repo-root", default=".", help="folder the config's relative paths start from")
    parser.add_argument("--dry-run", action="store_true", help="print the stage commands without running them")
    args = parser.parse_args(argv)
    cfg = load_pipeline_config(args.config)
    chains = cfg["chains"]
    if args.chains:
        wanted = [c.strip() for c in args.chains.split(",") if c.strip()]
        names = {c["name"] for c in chains}
        unknown = [w for w in wanted if w not in names]
        if unknown:
            raise SystemExit(f"unknown chain(s) {unknown}; the config has {sorted(names)}")
        chains = [c for c in chains if c["name"] in wanted]
    all_rows: list[dict] = []
    t0 = time.time()
    for chain in chains:
        all_rows += run_chain(cfg, chain, args.repo_root, dry_run=args.dry_run)
    if not args.dry_run:
        table = _summary_table(all_rows)
        print(f"\nSummary ({time.time() - t0:.0f}s this run; test metrics in %, 95% bootstrap CI):\n{table}", flush=True)
        out = Path(args.repo_root) / cfg["results_dir"] / "summary.md"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
