"""Helpers for the documentation tests: the code blocks and tables of the README and docs/, a small real-data root, a
stand-in checkpoint."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.bundle._bundle_utils import TINY, phantom_dataset, run_bundle
from tests.utils import DATA_ROOT, REPO_ROOT

README = REPO_ROOT / "README.md"
BUNDLE_DOCS = REPO_ROOT / "bundle" / "docs" / "README.md"
DOCS = REPO_ROOT / "docs"
USAGE, RESULTS_DOC, LABEL_DOC, PIPELINE_DOC = (DOCS / f"{n}.md" for n in ("USAGE", "RESULTS", "MONAI_LABEL", "PIPELINE"))
#: the main job's finetuned model, as the README names it (relative to the repository root)
MAIN_JOB_CKPT = "runs/cpu_scale/resnet18_attn0/init-stl_n_resnet18/stl_m/sstl_m-ours/finetune-robust_augmentation=True/models/model.pt"


def section(path: Path, heading: str) -> str:
    """The text of the section of ``path`` whose heading line starts with ``heading`` (up to the next heading of its
    level or above, outside code blocks)."""
    text = path.read_text()
    found = re.search(rf"^{re.escape(heading)}.*$", text, flags=re.M)
    if found is None:
        raise AssertionError(f"{path.name} has no section {heading!r}")
    level = len(heading.split(" ", 1)[0])
    body, fenced = [], False
    for line in text[found.end() :].splitlines(keepends=True):
        fenced ^= line.startswith("```")
        if not fenced and re.match(rf"#{{1,{level}}} ", line):
            break
        body.append(line)
    return "".join(body)


def code_blocks(path: Path, heading: str, lang: str = "bash") -> list[str]:
    """The ```{lang} blocks of the section of ``path`` that starts at ``heading``."""
    return re.findall(rf"```{lang}\n(.*?)```", section(path, heading), re.S)


def bash_blocks(path: Path, heading: str) -> list[str]:
    """The ```bash blocks of the section of ``path`` that starts at ``heading``."""
    return code_blocks(path, heading, "bash")


def markdown_table(source: Path | str, heading: str) -> list[dict[str, str]]:
    """The rows of the first Markdown table in the section of ``source`` (a file) that starts at ``heading``, or of
    the text ``source`` (``heading`` ignored), as ``{column: cell}``."""
    text = section(source, heading) if isinstance(source, Path) else source
    lines = text.splitlines()
    is_rule = [ln.startswith("|") and set(ln) <= set("|-: ") for ln in lines]
    start = next((i for i in range(len(lines) - 1) if lines[i].startswith("|") and is_rule[i + 1]), None)
    if start is None:
        raise AssertionError(f"no Markdown table under {heading!r}")
    end = start + 2
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    header, *rows = ([c.strip() for c in ln.strip().strip("|").split("|")] for ln in [lines[start]] + lines[start + 2 : end])
    return [dict(zip(header, row)) for row in rows]


def joined_lines(script: str) -> list[str]:
    """The commands of a shell script, continuation lines (``\\`` at the end) joined, comments and blanks dropped."""
    lines = script.replace("\\\n", " ").splitlines()
    return [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def venv_bin(script: str) -> str:
    """Point the README's ``.venv/bin/`` at this interpreter's folder (a git worktree has no ``.venv`` of its own)."""
    here = str(Path(sys.executable).parent) + "/"
    return re.sub(r"(\.\./)?\.venv/bin/", here, script)


def run_script(script: str, cwd: Path, env: dict | None = None, timeout: int = 1500) -> subprocess.CompletedProcess:
    """Run ``script`` with bash (``set -euo pipefail``), the repository on ``PYTHONPATH``."""
    full = dict(os.environ, **(env or {}))
    full["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + full.get("PYTHONPATH", "")
    full.setdefault("OMP_NUM_THREADS", "2")
    return subprocess.run(
        ["bash", "-c", "set -euo pipefail\n" + script], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
    )


def stand_in_checkpoint(tmp: Path, decision_threshold: float | None = 0.42, image_size: int = 32) -> Path:
    """A small stand-in for the main job's model: R-18 +5 trained one epoch on phantom slices by the bundle (with
    its ``model.pt.json``), the stored decision threshold set to ``decision_threshold`` so that readers can be seen
    to use it."""
    from mstl_monai.networks.sidecar import read_checkpoint_info, write_checkpoint_info

    ov = dict(TINY, dataset_dir=str(phantom_dataset(tmp, n_per_class=4)), n_attn=5, epochs=1, run_dir=str(tmp / "ft"))
    ov.update(image_size=image_size, resize_size=image_size + image_size // 8)
    run_bundle(["train.yaml"], ov)
    ckpt = tmp / "ft" / "models" / "model.pt"
    info = read_checkpoint_info(ckpt)
    if info is None:
        raise AssertionError(f"the finetune wrote no settings file beside {ckpt}")
    write_checkpoint_info(ckpt, info, decision_threshold=decision_threshold)
    return ckpt


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.symlink_to(src)


def mini_data_root(root: Path, per_class: int = 10) -> Path:
    """A data root like ``../shared/data`` holding a few real images of each data set as symlinks: COVID19-CT (with
    its split files) and LUNA16 (as the SSTL-M tests make them), Tiny ImageNet (two classes) and the chest X-rays
    (``per_class`` train and two test images of each class, with their manifest)."""
    from tests.sstl.test_sstl_bundle import mini_covid_ct

    mini_covid_ct(root)
    tiny = DATA_ROOT / "tiny-imagenet"
    wnids = [w for w in (tiny / "wnids.txt").read_text().split() if w][:2]
    (root / "tiny-imagenet").mkdir(parents=True)
    (root / "tiny-imagenet" / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        for p in sorted((tiny / "train" / w).rglob("*.JPEG"))[:per_class]:
            _link(p, root / "tiny-imagenet" / "train" / w / p.name)
    cxr = DATA_ROOT / "cxr"
    with open(cxr / "manifest.csv", newline="") as f:
        rows = list(csv.reader(f))
    kept, count = [rows[0]], {}
    for row in rows[1:]:
        file, label, split = row[:3]
        if count.get((label, split), 0) < (per_class if split == "train" else 2):
            count[(label, split)] = count.get((label, split), 0) + 1
            kept.append(row)
            _link(cxr / file, root / "cxr" / file)
    with open(root / "cxr" / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows(kept)
    return root
