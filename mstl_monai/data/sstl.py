# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The label-free datalist of the self-supervised stage SSTL-M."""

from __future__ import annotations

import os

from mstl_monai.data.datalists import covid_ct_datalist, unlabelled_datalist

__all__ = ["sstl_datalist"]


def sstl_datalist(
    dataset_dir: str | os.PathLike,
    use_luna16: bool = False,
    luna16_dir: str | os.PathLike | None = None,
    image_key: str = "image",
) -> list[dict]:
    """The label-free training datalist of SSTL-M: the COVID19-CT **training** images (official split; never the
    val/test images) with their labels removed, optionally plus the unlabelled LUNA16 slices.

    Args:
        dataset_dir: the COVID19-CT folder (``CT_COVID/``, ``CT_NonCOVID/``, ``Data-split/``).
        use_luna16: add the slices found under ``luna16_dir``.
        luna16_dir: the LUNA16 slice folder (default ``<dataset_dir>/../luna16``).
        image_key: the key of the image path in the returned dicts.

    Returns:
        a list of ``{image_key: path, "source": "covid-ct" | "luna16"}``, without any label.

    Raises:
        FileNotFoundError: a missing folder (named in the message).
        ValueError: an empty data set.
    """
    dataset_dir = str(dataset_dir)
    if not os.path.isdir(dataset_dir):
        raise FileNotFoundError(f"SSTL-M dataset_dir {dataset_dir!r} does not exist.")
    items = [{image_key: str(d["image"]), "source": "covid-ct"} for d in covid_ct_datalist(dataset_dir, "train")]
    if use_luna16:
        luna = str(luna16_dir) if luna16_dir else os.path.join(os.path.dirname(os.path.abspath(dataset_dir)), "luna16")
        if not os.path.isdir(luna):
            raise FileNotFoundError(f"use_luna16 is set but the LUNA16 folder {luna!r} does not exist.")
        items += [{image_key: str(d["image"]), "source": "luna16"} for d in unlabelled_datalist(luna)]
    if not items:
        raise ValueError(f"the SSTL-M training datalist is empty (dataset_dir={dataset_dir}, use_luna16={use_luna16}).")
    for i, item in enumerate(items):
        if not os.path.isfile(item[image_key]):
            raise FileNotFoundError(f"SSTL-M datalist item {i}: image file {item[image_key]!r} does not exist.")
    return items
