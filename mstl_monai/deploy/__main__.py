# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""``python -m mstl_monai.deploy``: DICOM study or series folder in, one DICOM SR per selected CT series out.

Runs :class:`~mstl_monai.deploy.operators.ScanReportPipeline` (the deploy application's operator chain, without
the MONAI Deploy SDK) on the CPU by default:

.. code-block:: bash

    python -m mstl_monai.deploy --ckpt runs/.../finetune/models/model.pt \\
        --input ../shared/data/ct-series/lung-pet-ct-dx-A0002 --output_dir runs/deploy
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mstl_monai.deploy", description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", required=True, help="classifier checkpoint (model.pt with its model.pt.json)")
    ap.add_argument("--input", required=True, help="a DICOM study or series folder (sub-folders searched)")
    ap.add_argument("--output_dir", required=True, help="where the SRs (sr/), scans.csv, slices.csv and heat maps go")
    ap.add_argument("--rules", default=None, help="series selection rules: JSON text or file (MONAI Deploy's format)")
    ap.add_argument("--all_matched", action="store_true", help="classify every matching series of a study")
    ap.add_argument("--min_slices", type=int, default=10, help="fewest images a series needs (default: %(default)s)")
    ap.add_argument(
        "--bundle_dir", default=None, help="bundle folder with configs/inference_scan.yaml (default: $MSTL_BUNDLE_DIR, else ./bundle)"
    )
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON",
                    help="further inference_scan.yaml settings, e.g. n_bootstrap=200 threshold=0.5")
    args = ap.parse_args(argv)
    overrides = {"device": args.device}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            ap.error(f"--set {item!r}: use KEY=VALUE")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    from .operators import ScanReportPipeline

    try:
        pipeline = ScanReportPipeline(args.ckpt, args.output_dir, bundle_dir=args.bundle_dir, rules=args.rules,
                                      all_matched=args.all_matched, min_slices=args.min_slices, overrides=overrides)
        rows = pipeline.run(args.input)
    except (FileNotFoundError, ValueError) as e:
        print(f"mstl_monai.deploy: {e}", file=sys.stderr)
        return 2
    written = [r["sr_file"] for r in rows if r.get("sr_file")]
    print(f"{len(written)} DICOM SR(s) written under {args.output_dir}/sr; scans.csv and slices.csv beside")
    for r in rows:
        if not r.get("sr_file"):
            print(f"no DICOM SR for {r.get('scan')}: {r.get('sr_message') or r.get('message') or r.get('status')}")
    return 0 if len(written) == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
