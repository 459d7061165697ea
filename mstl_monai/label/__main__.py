# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Command line for the MONAI Label app.

.. code-block:: bash

    python -m mstl_monai.label init  --app-dir APP --checkpoint MODEL.pt
    python -m mstl_monai.label start --app-dir APP --studies FOLDER [--host 127.0.0.1 --port 8000] [-- monailabel args]

``init`` writes the app folder (see :func:`mstl_monai.label.prepare_app`); ``start`` runs
``monailabel start_server --app APP --studies FOLDER --conf models <name>`` from the same environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mstl_monai.label.prepare import DEFAULT_MODEL_NAME, prepare_app


def _kv(text: str) -> tuple[str, object]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set wants KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def _python_cmd() -> str:
    """The interpreter to type: this one, as a path relative to the current folder when it is below it (e.g.
    ``.venv-label/bin/python``), so that the printed command runs as printed."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path.cwd()))
    except ValueError:
        return str(exe)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mstl_monai.label", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    sub = p.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init", help="write a MONAI Label app folder serving a checkpoint", allow_abbrev=False)
    i.add_argument("--app-dir", required=True)
    i.add_argument("--checkpoint", default=None, help="finetuned model.pt (omit: random init, train before use)")
    i.add_argument("--bundle", default=None, help="bundle folder to copy (default: $MSTL_BUNDLE_DIR, else ./bundle)")
    i.add_argument("--name", default=DEFAULT_MODEL_NAME)
    i.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's (224 if it does not say)")
    i.add_argument("--resize-size", type=int, default=None, help="default: the checkpoint's (256 if it does not say)")
    i.add_argument("--backbone", default=None, help="default: the checkpoint's (resnet18 without --checkpoint)")
    i.add_argument("--n-attn", type=int, default=None, help="default: the checkpoint's (5 without --checkpoint)")
    i.add_argument("--set", type=_kv, action="append", default=[], metavar="KEY=VALUE", help="further bundle settings")
    i.add_argument(
        "--force", action="store_true",
        help="replace an existing app's model (models/model.pt, its settings, configs) and main.py",
    )
    s = sub.add_parser("start", help="start the MONAI Label server for an app folder", allow_abbrev=False)
    s.add_argument("--app-dir", required=True)
    s.add_argument("--studies", required=True, help="folder of CT slices (the datastore)")
    s.add_argument("--name", default=DEFAULT_MODEL_NAME)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8000)
    args, extra = p.parse_known_args(argv)
    if args.cmd == "init":
        if extra:
            p.error(f"unknown arguments {extra}")
        try:
            model_dir = prepare_app(
                args.app_dir, args.checkpoint, args.bundle, args.name, args.image_size, args.resize_size,
                args.backbone, args.n_attn, dict(args.set), args.force,
            )
        except FileExistsError as e:  # an app is there: nothing was written
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        import json

        s = json.loads((model_dir / "app_settings.json").read_text())
        print(
            f"model: {s['backbone']} +{s['n_attn']} ATTN, {s['in_channels']} channel(s), classes {s['class_names']},"
            f" image_size {s['image_size']}, resize_size {s['resize_size']}"
        )
        print(f"app ready: {Path(args.app_dir).resolve()} (bundle {model_dir})")
        print(f"start it:  {_python_cmd()} -m mstl_monai.label start --app-dir {args.app_dir} --studies FOLDER")
        return 0
    if not (Path(args.app_dir) / "main.py").is_file():
        p.error(f"{args.app_dir} is not an app folder (no main.py): run `init` first.")
    if not Path(args.studies).is_dir():
        p.error(f"studies folder {args.studies} does not exist.")
    try:
        import monailabel  # noqa: F401
    except ImportError:
        p.error("monailabel is not installed here: run `bash scripts/setup_label_env.sh` and use .venv-label/bin/python.")
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(Path(args.app_dir).resolve()),
           "--studies", str(Path(args.studies).resolve()), "--host", args.host, "--port", str(args.port),
           "--conf", "models", args.name] + [a for a in extra if a != "--"]
    # MONAI Label starts its workers (training, batch inference) with `python` from PATH: make it this one
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    print(" ".join(cmd), flush=True)
    os.execv(sys.executable, cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
