# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Inference inputs read once: a dataset that skips (and reports) the files it cannot read while it loads them."""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from monai.data import IterableDataset
from monai.transforms import Compose, apply_transform
from torch.utils.data import get_worker_info

from mstl_monai.data.utils import collect_files
from mstl_monai.utils.io import atomic_write

__all__ = ["SkippingDataset", "publish_skipped"]

logger = logging.getLogger(__name__)


class SkippingDataset(IterableDataset):
    """Files and folders to classify, each decoded once: a file the loading transform cannot read is skipped with
    its reason (logged, and a row of ``skipped_csv``) and the run goes on, so one bad file never ends it.

    The first ``load_steps`` transforms of ``transform`` (a ``Compose``; e.g. ``LoadCTSliced``) read the file: what
    they raise makes the file skipped. A failure in a later transform is an error of the run, as in any dataset.
    Iterating yields the readable inputs in order (with DataLoader workers, each worker takes every n-th input);
    a single-process iteration that finds none readable ends with one ``ValueError`` line.

    Args:
        inputs: a file, a folder (searched recursively for image files, :func:`~mstl_monai.data.collect_files`) or a
            list of them.
        transform: the preprocessing, starting with the loader.
        skipped_csv: ``file,reason`` of the skipped inputs; None: only logged. Rows go to ``<skipped_csv>.partial``
            (its header written here, rows added as they are met), which :func:`publish_skipped` moves onto
            ``skipped_csv`` when the run completes (the inference writer does): a run killed half-way leaves an
            earlier ``skipped.csv`` as it was, matching the ``predictions.csv`` beside it.
        key: the datalist key of the path (``<key>_path`` holds it too).
        load_steps: how many of the first transforms read the file.

    Raises:
        ValueError: no input given (an empty list), or folders that hold no image file (the message names them).
    """

    def __init__(
        self,
        inputs: str | os.PathLike | Sequence[str | os.PathLike],
        transform: Callable | None = None,
        skipped_csv: str | os.PathLike | None = None,
        key: str = "image",
        load_steps: int = 1,
    ) -> None:
        self.inputs = [inputs] if isinstance(inputs, (str, os.PathLike)) else list(inputs)
        files = collect_files(self.inputs)
        if not files:
            if not self.inputs:
                raise ValueError("no input given: pass files or folders (e.g. --input \"['a.png','folder']\").")
            raise ValueError(
                f"no image file in {[os.fspath(i) for i in self.inputs]}: the folders hold no PNG/JPEG/DICOM/NIfTI file "
                f"(searched recursively; DICOM files may have no extension)."
            )
        super().__init__([{key: f, f"{key}_path": f} for f in files], transform)
        self.key = key
        steps = list(transform.transforms) if isinstance(transform, Compose) else [transform] if transform else []
        self.load, self.rest = steps[:load_steps], steps[load_steps:]
        self.skipped_csv = None if skipped_csv is None else os.fspath(skipped_csv)
        if self.skipped_csv is not None:
            with atomic_write(self.partial_csv, "w") as f:
                f.write("file,reason\n")

    @property
    def partial_csv(self) -> str | None:
        """Where the skipped inputs are listed while the run goes on (``None`` without ``skipped_csv``)."""
        return None if self.skipped_csv is None else self.skipped_csv + ".partial"

    def _skip(self, path: str, error: BaseException) -> None:
        reason = f"{type(error).__name__}: {error}".replace("\n", " ")
        logger.warning(f"skipping {path}: {reason}")
        if self.skipped_csv is not None:  # one line in one append: workers may add rows at the same time
            with open(self.partial_csv, "a", newline="") as f:
                csv.writer(f, quoting=csv.QUOTE_ALL).writerow([path, reason])

    def __iter__(self):
        info = get_worker_info()
        num_workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        read = 0
        for i, item in enumerate(self.data):
            if i % num_workers != worker:
                continue
            path = item[self.key]
            try:
                if not os.path.isfile(path):
                    raise FileNotFoundError("no such file")
                for t in self.load:
                    item = t(item)
            except Exception as e:  # report and go on: one unreadable file must not end the run
                self._skip(path, e)
                continue
            read += 1
            for t in self.rest:
                item = apply_transform(t, item)
            yield item
        if read == 0 and info is None:
            raise ValueError(
                f"none of the {len(self.data)} inputs could be read (inputs: {[os.fspath(i) for i in self.inputs]})."
            )


def publish_skipped(skipped_csv: str | os.PathLike) -> bool:
    """Move the run's ``<skipped_csv>.partial`` (written by :class:`SkippingDataset`) onto ``skipped_csv`` in one
    step; ``False`` when there is none (a run without a skipped list). Call it when the run completes."""
    partial = os.fspath(skipped_csv) + ".partial"
    if not os.path.isfile(partial):
        return False
    os.replace(partial, skipped_csv)
    return True
