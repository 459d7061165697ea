#!/usr/bin/env bash
# Prepare the GPU checks (issue 13 section 2) for the device tool, here, before asking for a machine: the device has
# PyTorch but no MONAI and no network, and ../shared does not travel. Writes two git-ignored folders to carry:
#   .whl/      wheels of what the checks import and the device image lacks (pure Python, CPython 3.12)
#   .devdata/  a subset of ../shared/data (COVID19-CT: a share of each class of each split with Data-split lists
#              filtered to it; LUNA16 slices), small enough for the 64 MiB the tool carries
# Then, with the device tool: run(command="bash scripts/device/check.sh", carry=[".whl", ".devdata"], timeout_s=540)
set -euo pipefail
cd "$(dirname "$0")/../.."
DATA=${MSTL_DATA_ROOT:-../shared/data}
PY=${PYTHON:-.venv/bin/python}
grep -qx '/.whl/' "$(git rev-parse --git-path info/exclude)" || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
grep -qx '/.devdata/' "$(git rev-parse --git-path info/exclude)" || echo '/.devdata/' >> "$(git rev-parse --git-path info/exclude)"
rm -rf .whl .devdata
# the versions this checkout's environment runs with
pins=$("$PY" -m pip list --format=freeze 2>/dev/null | grep -iE '^(monai|pytorch-ignite|nibabel|pydicom|parameterized|fire|termcolor)==')
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $pins
"$PY" - "$DATA" <<'PYEOF'
import shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(".devdata")
per_split = {"train": 60, "val": 10, "test": 10}  # images per class and split
for cls in ("COVID", "NonCOVID"):
    for split, n in per_split.items():
        lst = src / "covid-ct" / "Data-split" / cls / f"{split}CT_{cls}.txt"
        names = [l.strip() for l in lst.read_text().splitlines() if l.strip()][:n]
        out = dst / "covid-ct" / "Data-split" / cls / lst.name
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(names) + "\n")
        for name in names:
            f = dst / "covid-ct" / f"CT_{cls}" / name
            f.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src / "covid-ct" / f"CT_{cls}" / name, f)
luna = sorted((src / "luna16" / "images").glob("*.png"))[::5][:40]
(dst / "luna16" / "images").mkdir(parents=True, exist_ok=True)
for f in luna:
    shutil.copyfile(f, dst / "luna16" / "images" / f.name)
PYEOF
du -sh .whl .devdata
