# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Whole-scan throughput against the classifier alone, on the CPU, in one run: DICOM series in, DICOM SR out.

The pipeline is the deploy application's (:class:`mstl_monai.deploy.ScanReportPipeline`, i.e. the bundle's
``configs/inference_scan.yaml`` with ``write_sr``): series selection (headers), read + sort (HU, lung window),
lung-slice selection, classification of the selected slices, aggregation (top-k mean + bootstrap interval),
Grad-CAM of the top slices, and writing ``scans.csv``/``slices.csv`` and the DICOM SR. Each stage is timed on the
real code path (the script wraps the functions with timers). Classifier-only is the same classifier
(preprocessing + network under the same autocast, same batch size) over every slice of the same stack.

Rates, per scan of N slices (medians over ``--repeats`` alternating runs), by the wall clock and by the process's
CPU time (one thread: on a shared machine the CPU time is what an idle core would take, less the waits):

- classifier-only slices/s = N / (time to classify all N slices);
- whole-scan slices/s = N / (pipeline time), with and without the heat maps (Grad-CAM of the top slices and their
  PNG overlays: not needed for the SR, whose top slices are referenced by UID); ratio = whole-scan / classifier-only
  (goal >= 0.8 without the heat maps: the pipeline's time is then the whole run's, select, read, lung, classify,
  aggregate, sr and csv, less gradcam and png; a line per scan and clock says so, with the ratio);
- also the strict ratio: selected slices per second of pipeline time over classifier-only slices/s.

Scans: the real 30-slice series (``../shared/data/ct-series/lung-pet-ct-dx-A0002``) and a synthetic ``--slices``
series written from it as DICOM (HU interpolated along z to a finer spacing, the real headers with new UIDs and
positions). The network: ``--ckpt`` (settings from its ``model.pt.json``) or an untrained one with the main job's
settings (ResNet-18 + 5 non-local blocks, 128 px; the time does not depend on the weights). The first SR of a
process pays a one-time import of highdicom and pydicom's SR code dictionaries, reported apart.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/benchmark_scan.py [--ckpt model.pt] [--slices 300] [--profile]

Result: ``results/benchmarks/scan_pipeline_cpu_<backbone>_<size>px.json`` (``--output``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STAGES = ("select", "read", "lung", "classify", "aggregate", "gradcam", "png", "sr", "csv")
#: the stages of the heat maps (Grad-CAM of the top slices and their PNG overlays), which the SR does not need
HEATMAP_STAGES = ("gradcam", "png")
#: the stages the pipeline's ratio counts: all but the heat maps (its time is the whole run's, less the heat maps)
PIPELINE_STAGES = tuple(s for s in STAGES if s not in HEATMAP_STAGES)
#: the throughput goal: pipeline slices/s over classifier-only slices/s
GOAL = 0.8


def write_upsampled_series(src: Path, dst: Path, n: int) -> Path:
    """A DICOM series of ``n`` slices over the z range of ``src``: HU linearly interpolated along z, written with
    the first real slice's headers (new Series/SOP Instance UIDs, positions and instance numbers)."""
    import numpy as np
    import pydicom
    import torch
    import torch.nn.functional as F
    from pydicom.uid import generate_uid

    from mstl_monai.data import read_dicom_series_hu

    vol, aff = read_dicom_series_hu(src)  # (columns, rows, slices) ascending z
    t = torch.as_tensor(vol)[None, None]
    up = F.interpolate(t, size=(vol.shape[0], vol.shape[1], n), mode="trilinear", align_corners=True)[0, 0].numpy()
    files = sorted(src.glob("*.dcm"))
    template = pydicom.dcmread(files[0])
    zs = sorted(float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files)
    slope, inter = float(template.RescaleSlope), float(template.RescaleIntercept)
    dtype = np.int16 if int(template.PixelRepresentation) == 1 else np.uint16
    info = np.iinfo(dtype)
    series_uid = generate_uid()
    dst.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        ds = template.copy()
        z = zs[0] + k * (zs[-1] - zs[0]) / (n - 1)
        stored = np.clip(np.round((up[:, :, k].T - inter) / slope), info.min, info.max).astype(dtype)
        ds.PixelData = stored.tobytes()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [float(v) for v in template.ImagePositionPatient[:2]] + [z]
        ds.SliceLocation = z
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = f"synthetic {n}-slice interpolation of {src.name}"
        ds.save_as(dst / f"s{k:04d}.dcm", enforce_file_format=True)
    return dst


class StageTimer:
    """Wrap functions and methods so that each call adds its duration to a stage."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def wrap(self, stage: str, fn):
        def timed(*args, **kwargs):
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t0
                self.cpu[stage] += time.process_time() - c0

        return timed


def run_pipeline(pipeline, folder: Path) -> dict:
    """One DICOM-in, SR-out run with its stages timed; returns seconds per stage, total, N and slices used."""
    import mstl_monai.inferers.scan as scan_mod

    timer = StageTimer()
    clf = pipeline.classifier
    originals = (scan_mod.lung_fractions, scan_mod.aggregate_slice_probabilities)
    scan_mod.lung_fractions = timer.wrap("lung", originals[0])
    scan_mod.aggregate_slice_probabilities = timer.wrap("aggregate", originals[1])
    writer = pipeline.writer
    clf.slice_probabilities = timer.wrap("classify", type(clf).slice_probabilities.__get__(clf))
    clf.heatmaps = timer.wrap("gradcam", type(clf).heatmaps.__get__(clf))
    writer._write_heatmaps = timer.wrap("png", type(writer)._write_heatmaps.__get__(writer))
    writer.write_report = timer.wrap("sr", type(writer).write_report.__get__(writer))
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        (series,) = timer.wrap("select", pipeline.select)(folder)
        stack = timer.wrap("read", pipeline.volume)(series)
        result = pipeline.classify(stack, series)
        row = timer.wrap("write", pipeline.report)(result)
        total, total_cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        scan_mod.lung_fractions, scan_mod.aggregate_slice_probabilities = originals
        del clf.slice_probabilities, clf.heatmaps, writer._write_heatmaps, writer.write_report
    if not row.get("sr_file"):
        raise RuntimeError(f"no SR was written for {folder}: {row.get('sr_message')}")
    for clock in (timer.seconds, timer.cpu):  # the rest of writing: scans.csv and slices.csv
        clock["csv"] = clock["write"] - clock["png"] - clock["sr"]
    out = {s: timer.seconds.get(s, 0.0) for s in STAGES}
    out.update({f"cpu_{s}": timer.cpu.get(s, 0.0) for s in STAGES})
    return dict(out, total=total, cpu_total=total_cpu, n=int(stack.shape[0]), used=int(row["slices_used"]), stack=stack)


def classifier_only(pipeline, stack) -> tuple[float, float]:
    """Wall and CPU seconds to classify every slice of ``stack`` with the pipeline's classifier (its preprocessing,
    autocast and batch size)."""
    t0, c0 = time.perf_counter(), time.process_time()
    pipeline.classifier.slice_probabilities(stack, list(range(int(stack.shape[0]))))
    return time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--series", default=str(REPO.parent / "shared/data/ct-series/lung-pet-ct-dx-A0002"))
    ap.add_argument("--ckpt", default=None, help="classifier checkpoint (default: an untrained network, see below)")
    ap.add_argument("--backbone", default="resnet18", help="untrained network's backbone (default: %(default)s)")
    ap.add_argument("--n-attn", type=int, default=5)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--resize-size", type=int, default=146)
    ap.add_argument("--slices", type=int, default=300, help="slices of the synthetic series (0: none)")
    ap.add_argument("--repeats", type=int, default=3, help="alternating pipeline / classifier-only runs per scan")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--profile", action="store_true", help="print cProfile's top functions of one 30-slice pipeline run")
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    sys.path.insert(0, str(REPO))

    import torch

    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="mstl-bench-scan-"))
    try:
        return _benchmark(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the synthetic series and the outputs


def _benchmark(args: argparse.Namespace, tmp: Path) -> int:
    import torch

    from mstl_monai.deploy import ScanReportPipeline
    from mstl_monai.inferers import autocast_helps
    from mstl_monai.networks.checkpoint import checkpoint_settings
    from mstl_monai.networks.sidecar import checkpoint_info, write_checkpoint_info
    from mstl_monai.metrics.io import write_metrics_json
    from mstl_monai.networks import build_network

    ckpt = args.ckpt
    if ckpt is None:
        torch.manual_seed(0)
        ckpt = str(tmp / "model.pt")
        net = build_network(args.backbone, n_attn=args.n_attn, n_input_channels=1, num_classes=2, img_size=args.image_size)
        torch.save(net.state_dict(), ckpt)
        info = checkpoint_info(args.backbone, args.n_attn, 1, 2, args.image_size, args.resize_size, ["non-COVID", "COVID"])
        write_checkpoint_info(ckpt, info, stage="finetune")
    s = checkpoint_settings(ckpt)
    t0 = time.perf_counter()
    import highdicom  # noqa: F401  (the one-time import cost of the first SR of a process)
    import pydicom.sr.codedict  # noqa: F401

    sr_import_s = time.perf_counter() - t0
    pipeline = ScanReportPipeline(ckpt, tmp / "out", overrides={"batch_size": args.batch_size, "device": "cpu"})
    scans = [("DICOM series (30)", Path(args.series))]
    if args.slices:
        scans.append((f"synthetic DICOM ({args.slices})", write_upsampled_series(Path(args.series), tmp / f"synthetic{args.slices}", args.slices)))
    amp = "bf16 autocast" if autocast_helps("cpu") else "float32 (no bf16 instructions)"
    load = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    print(f"DICOM in, SR out vs classifier-only on the CPU: {s['backbone']} n_attn={s['n_attn']} at {s['image_size']} px, "
          f"batch {args.batch_size}, 1 thread, {amp}, torch {torch.__version__}; load average at start {load}; "
          f"one-time SR imports (highdicom, pydicom.sr) {sr_import_s:.2f} s, not counted below")
    print(f"{'scan':<24}{'N':>5}{'used':>5} | " + "".join(f"{k:>10}" for k in STAGES) + f"{'total':>8} | {'clf-only':>8}"
          f"{'scan':>7}{'no-CAM':>7} | {'ratio':>6}{'no-CAM':>7}{'strict':>7}")
    print(" " * 36 + "seconds per stage (medians)" + " " * 60 + "slices/s" + " " * 13 + "(goal >= 0.8)")
    rows = []
    for name, folder in scans:
        runs = []
        for _ in range(max(1, args.repeats)):
            run = run_pipeline(pipeline, folder)
            run["clf_only"], run["cpu_clf_only"] = classifier_only(pipeline, run.pop("stack"))
            runs.append(run)
        n, used = runs[0]["n"], runs[0]["used"]
        r = {"scan": name, "n_slices": n, "slices_used": used,
             "runs": [{k: round(v, 3) for k, v in run.items() if isinstance(v, float)} for run in runs]}
        for clock, pre in (("wall", ""), ("cpu", "cpu_")):  # wall clock, and the process's CPU time (one thread)
            med = {k: statistics.median(run[pre + k] for run in runs) for k in (*STAGES, "total", "clf_only")}
            rate_clf, rate_scan = n / med["clf_only"], n / med["total"]
            no_cam = med["total"] - sum(med[k] for k in HEATMAP_STAGES)
            rate_nocam = n / no_cam
            r[clock] = {
                "seconds": {k: round(v, 3) for k, v in med.items()},
                "classifier_only_slices_per_s": round(rate_clf, 2),
                "whole_scan_slices_per_s": round(rate_scan, 2),
                "whole_scan_no_heatmaps_slices_per_s": round(rate_nocam, 2),
                "ratio": round(rate_scan / rate_clf, 3),
                "ratio_no_heatmaps": round(rate_nocam / rate_clf, 3),
                "ratio_strict_no_heatmaps": round(used / no_cam / rate_clf, 3),
            }
            q = r[clock]
            q["pipeline_seconds"] = round(no_cam, 3)
            q["goal_met"] = bool(q["ratio_no_heatmaps"] >= GOAL)
            print(f"{name + ' ' + clock:<24}{n:>5}{used:>5} | " + "".join(f"{med[k]:>10.2f}" for k in STAGES)
                  + f"{med['total']:>8.2f} | {rate_clf:>8.2f}{rate_scan:>7.2f}{rate_nocam:>7.2f} | {q['ratio']:>6.2f}"
                  f"{q['ratio_no_heatmaps']:>7.2f}{q['ratio_strict_no_heatmaps']:>7.2f}", flush=True)
        for clock in ("wall", "cpu"):
            q = r[clock]
            print(f"  {name}, {'wall clock' if clock == 'wall' else 'CPU time'}: pipeline ({', '.join(PIPELINE_STAGES)}; "
                  f"the whole run less {' and '.join(HEATMAP_STAGES)}) {q['pipeline_seconds']:.3f} s for {n} slices = "
                  f"{q['whole_scan_no_heatmaps_slices_per_s']:.1f} slices/s; classifier-only (all {n} slices) "
                  f"{q['classifier_only_slices_per_s']:.1f} slices/s; ratio {q['ratio_no_heatmaps']:.3f} "
                  f"({'meets' if q['goal_met'] else 'below'} the goal >= {GOAL})", flush=True)
        rows.append(r)
    if args.profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(run_pipeline, pipeline, scans[0][1])
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    out = Path(args.output or REPO / "results" / "benchmarks" / f"scan_pipeline_cpu_{s['backbone']}_attn{s['n_attn']}_{s['image_size']}px.json")
    write_metrics_json(out, {
        "script": "scripts/benchmark_scan.py", "argv": sys.argv[1:], "torch": torch.__version__, "threads": 1,
        "autocast": amp, "batch_size": args.batch_size, "load_average_at_start": load,
        "network": {k: s.get(k) for k in ("backbone", "n_attn", "image_size", "resize_size")},
        "checkpoint": "untrained (random weights)" if args.ckpt is None else args.ckpt,
        "sr_import_s": round(sr_import_s, 3), "stages": list(STAGES), "pipeline_stages": list(PIPELINE_STAGES),
        "heatmap_stages": list(HEATMAP_STAGES), "goal": GOAL,
        "ratio_definition": "ratio_no_heatmaps = (N / pipeline_seconds) / (N / clf_only seconds), pipeline_seconds = "
                            "the whole DICOM-in, SR-out run (select, read, lung, classify, aggregate, sr, csv) less the "
                            "heat maps (gradcam, png); clf_only = the same classifier over all N slices",
        "scans": rows,
    })
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
