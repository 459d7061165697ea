# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""``mstl-pipeline`` / ``python -m mstl_monai.pipeline``: run chains of bundle stages (see :mod:`mstl_monai.pipeline`)."""

from __future__ import annotations

import argparse
import difflib
import sys
import time
from pathlib import Path

from mstl_monai.pipeline.config import load_pipeline_config, skipped_lines
from mstl_monai.pipeline.lock import StageLockedError
from mstl_monai.pipeline.plan import check_chains, folder_conflicts
from mstl_monai.pipeline.publish import write_text_atomic
from mstl_monai.pipeline.run import _hms, run_chain, run_dir_results
from mstl_monai.pipeline.summary import chains_run_text, summary_table

__all__ = ["main", "WholeNameParser"]

_DESCRIPTION = "Pipeline runner: run chains of bundle stages in order, passing each stage's best checkpoint to the next."


class WholeNameParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` that takes whole option names only (``--chain`` is not ``--chains``) and answers an
    unknown option with the closest known one: ``unknown option --dryrun; did you mean --dry-run?``, exit code 2."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        parsed, extra = self.parse_known_args(args, namespace)
        options = [e.split("=", 1)[0] for e in extra if e.startswith("-")]
        if options:
            known = [o for a in self._actions for o in a.option_strings if o.startswith("--")]
            close = difflib.get_close_matches(options[0], known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"the options are {', '.join(known)}"
            self.error(f"unknown option {options[0]}; {hint}")
        if extra:
            self.error(f"unrecognized arguments: {' '.join(extra)}")
        return parsed


def _how(rows: list[dict]) -> str:
    """How a chain's results came about in this command, from its stage rows."""
    if any(r.get("trained") for r in rows):
        return "trained now"
    if any(r.get("published") for r in rows):
        return "published results for these settings"
    return "already done"


def main(argv: list[str] | None = None) -> int:
    parser = WholeNameParser(prog="mstl-pipeline", description=_DESCRIPTION)
    parser.add_argument("--config", default="configs/cpu_scale.yaml", help="pipeline YAML")
    parser.add_argument("--chains", default=None, help="comma-separated chain names (default: all)")
    parser.add_argument("--repo-root", default=".", help="folder the config's relative paths start from")
    parser.add_argument("--dry-run", action="store_true", help="check the settings and print the stage commands only")
    parser.add_argument(
        "--rerun", action="store_true", help="train chains again even when results/ holds their metrics for these settings"
    )
    parser.add_argument(
        "--publish",
        action="store_true",
        help="also copy the chains' result files to the config's results_dir (kept in git) and rebuild its summary.md "
        "from every published chain (default: results stay in the run folder, <output_root>/results)",
    )
    parser.add_argument(
        "--tracking",
        default=None,
        help="experiment tracking of every stage, as MONAI's `monai.bundle run --tracking` (e.g. mlflow: one MLflow "
        "experiment per chain, one run per stage, stored in <output_root>/mlruns.db)",
    )
    parser.add_argument(
        "--list", action="store_true", help="print the chain names (hand-listed, then the grid's) one per line and exit"
    )
    parser.add_argument(
        "--write-bundle-recipe",
        default=None,
        metavar="YAML",
        help="write the config's common + stage_defaults as a bundle override file (bundle/configs/cpu.yaml for "
        "configs/cpu_scale.yaml) and exit",
    )
    args = parser.parse_args(argv)
    try:
        cfg = load_pipeline_config(args.config)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise SystemExit(str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)) from None
    if args.write_bundle_recipe:
        from mstl_monai.pipeline.recipe import bundle_recipe, check_recipe_target

        target = Path(args.repo_root) / args.write_bundle_recipe
        try:
            check_recipe_target(target, args.config)
            write_text_atomic(target, bundle_recipe(cfg, args.config, args.write_bundle_recipe, args.repo_root))
        except (ValueError, OSError) as e:
            raise SystemExit(f"mstl-pipeline: {e}") from None
        print(f"wrote {target} from {args.config}", flush=True)
        return 0
    chains = cfg["chains"]
    skipped = cfg.get("_grid_skipped", [])
    if args.chains is not None:
        wanted = [c.strip() for c in args.chains.split(",") if c.strip()]
        if not wanted:
            raise SystemExit(f"--chains {args.chains!r} names no chain; give chain names (see --list) or leave it out for all.")
        names = {c["name"] for c in chains}
        unknown = [w for w in wanted if w not in names]
        if unknown:
            why = {s["name"]: s["reason"] for s in skipped}
            na = [f"{w} (STL-N n/a: {why[w]})" for w in unknown if w in why]
            close = {w: difflib.get_close_matches(w, sorted(names), n=1) for w in unknown if w not in why}
            hints = [f"{w} -> {c[0]}?" for w, c in close.items() if c]
            msg = f"unknown chain(s) {unknown}; the config has {sorted(names)}"
            raise SystemExit(msg + (f"; not generated: {na}" if na else "") + (f"; did you mean: {', '.join(hints)}" if hints else ""))
        chains = [c for c in chains if c["name"] in wanted]
    notes = [] if args.chains else skipped_lines(skipped)
    if args.list:
        for chain in chains:
            print(chain["name"])
        for line in notes:
            print(line, file=sys.stderr)
        return 0
    problems = check_chains(cfg, chains, args.repo_root)
    if len(chains) < len(cfg["chains"]):  # a folder the other chains of the config train with other settings
        problems += [p for p in folder_conflicts(cfg, cfg["chains"], args.repo_root) if p not in problems]
    if problems:
        raise SystemExit(f"pipeline config {args.config}: " + "\n".join(problems))
    for line in notes:
        print(line, flush=True)
    t0 = time.time()
    ran: dict[str, list[dict]] = {}
    how: dict[str, str] = {}
    for chain in chains:
        c0 = time.time()
        try:
            ran[chain["name"]] = rows = run_chain(
                cfg, chain, args.repo_root, dry_run=args.dry_run, rerun=args.rerun, publish=args.publish,
                tracking=args.tracking,
            )
        except StageLockedError as e:  # another run trains one of its stages: one line naming it
            raise SystemExit(f"[{chain['name']}] {e}") from None
        how[chain["name"]] = _how(rows)
        if not args.dry_run:
            stages = ", ".join(f"{r['stage']} {_hms(r.get('seconds') or 0)}" for r in rows)
            print(f"[{chain['name']}] elapsed {_hms(time.time() - c0)} this run (stage times, incl. earlier runs: {stages})", flush=True)
    if args.dry_run:
        return 0
    root = Path(args.repo_root)
    table, n_published = summary_table(cfg, root)
    if notes:
        table += "\n\n" + "\n".join(notes)
    if n_published:
        table += f"\n\n* published results in {cfg['results_dir']} (not run in {cfg['output_root']})"
    out = root / cfg["output_root"] / "summary.md"
    write_text_atomic(out, table + "\n")
    print(f"\n{chains_run_text(ran, how)}", flush=True)
    print(f"\nSummary of every chain with results ({time.time() - t0:.0f}s this run; test metrics in %, 95% bootstrap "
          f"CI):\n{table}", flush=True)
    local = run_dir_results(cfg, root)
    here = [c["name"] for c in chains if (local / c["name"] / "metrics.json").is_file()]
    if here:
        print(f"\nResults of {len(here)} chain(s) in the run folder: {local}/<chain>/; summary: {out}", flush=True)
    else:
        print(f"\nNo chain of this command has results in the run folder {local} (published ones were up to date); summary: {out}", flush=True)
    if args.publish:
        published_table, _ = summary_table(cfg, root, published_only=True)
        pub = root / cfg["results_dir"] / "summary.md"
        write_text_atomic(pub, published_table + "\n")
        print(f"Published to {root / cfg['results_dir']}/<chain>/ for {len(chains)} chain(s); summary of every published chain: {pub}", flush=True)
    else:
        print(f"{cfg['results_dir']} (kept in git) is unchanged; --publish copies these chains' results there.", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
