#!/usr/bin/env python
"""LEEP of each network's source models on COVID19-CT train, for Table 6: a randomly initialised network with a
3-way head (no transfer), the STL-M checkpoint (its COVIDx 3-way head), the STL-N checkpoint (its natural-image head,
202-way on Tiny ImageNet; RGB stem folded to one channel) and STL-N -> STL-M. Updates ``<results>/leep.json``: the
networks and sources found under ``--runs`` are (re)computed, the others already in the file are kept.

    python scripts/leep_table.py --runs runs/cpu_scale --results results/cpu_scale --image-size 128 --resize-size 146
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from mstl_monai.data import covid_ct_datalist
from mstl_monai.networks import build_network
from mstl_monai.metrics.transferability import leep_of_checkpoint


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", default="runs/cpu_scale")
    p.add_argument("--results", default="results/cpu_scale")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "covid-ct"))
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--resize-size", type=int, default=146)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    dl = covid_ct_datalist(a.data, "train")
    leep_file = Path(a.results, "leep.json")
    out = json.loads(leep_file.read_text()) if leep_file.is_file() else {}
    for net_dir in sorted(Path(a.runs).glob("*_attn*")):
        backbone, n_attn = net_dir.name.rsplit("_attn", 1)
        n_attn = int(n_attn)
        row = dict(out.get(net_dir.name, {}))
        with tempfile.TemporaryDirectory() as d:
            torch.manual_seed(a.seed)
            net = build_network(backbone, n_attn=n_attn, n_input_channels=1, num_classes=3)
            rand = Path(d, "random.pt")
            torch.save(net.state_dict(), rand)
            row["none"] = leep_of_checkpoint(str(rand), 3, dl, backbone, n_attn, 1, a.image_size, a.resize_size)
        stl_m = net_dir / "stl_m" / "models" / "model.pt"
        if stl_m.is_file():
            row["stl_m"] = leep_of_checkpoint(str(stl_m), 3, dl, backbone, n_attn, 1, a.image_size, a.resize_size)
        stl_n = net_dir / "stl_n" / "models" / "model.pt"
        if stl_n.is_file():
            n_src = int(torch.load(stl_n, map_location="cpu", weights_only=True).get("fc.weight").shape[0])
            row["stl_n"] = leep_of_checkpoint(str(stl_n), n_src, dl, backbone, n_attn, 1, a.image_size, a.resize_size)
        stl_nm = net_dir / "stl_n" / "stl_m" / "models" / "model.pt"
        if stl_nm.is_file():
            row["stl_n+stl_m"] = leep_of_checkpoint(
                str(stl_nm), 3, dl, backbone, n_attn, 1, a.image_size, a.resize_size
            )
        out[net_dir.name] = row
        print(net_dir.name, row, flush=True)
    from mstl_monai.utils.io import atomic_write

    with atomic_write(leep_file) as f:
        f.write(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
