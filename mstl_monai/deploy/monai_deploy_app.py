# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The scan report as a MONAI Deploy App SDK application (optional: needs ``monai-deploy-app-sdk``).

Three operators wrap :class:`~mstl_monai.deploy.operators.ScanReportPipeline`'s steps, so the SDK runs the very
code the tests run on the CPU without it:

- ``SeriesSelectOperator``: the app's input folder -> ``selected_series`` (:class:`SeriesSelector` rules);
- ``ScanClassifyOperator``: ``selected_series`` -> ``results`` (volume, lung-slice selection, classification,
  aggregation, heat maps);
- ``ScanSRWriterOperator``: ``results`` -> one DICOM SR per series in the app's output folder (+ ``scans.csv``).

The SDK (4.x) depends on ``holoscan-cu13``, a CUDA 13 runtime: where it is not installed, importing this module
raises an ``ImportError`` that says so, and ``python -m mstl_monai.deploy`` runs the same chain without it.

.. code-block:: bash

    python -m mstl_monai.deploy.monai_deploy_app -i dicom_study/ -o out/ -m models/model.pt
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

try:
    from monai.deploy.conditions import CountCondition
    from monai.deploy.core import Application, ConditionType, Fragment, Operator, OperatorSpec
except ImportError as e:  # the SDK, or its holoscan runtime, is missing
    raise ImportError(
        "mstl_monai.deploy.monai_deploy_app needs the MONAI Deploy App SDK (pip install monai-deploy-app-sdk; it "
        f"depends on holoscan-cu13, a CUDA 13 runtime): {e}. Without it, run the same operator chain with "
        "`python -m mstl_monai.deploy --ckpt model.pt --input <dicom folder> --output_dir <out>`."
    ) from e

from .operators import ScanReportPipeline

__all__ = ["CovidScanReportApp", "ScanClassifyOperator", "ScanSRWriterOperator", "SeriesSelectOperator"]

logger = logging.getLogger(__name__)


def _checkpoint(model_path: str | os.PathLike) -> str:
    """The checkpoint in the app's model path: the file itself, or ``model.pt`` in that folder (or a sub-folder)."""
    path = Path(model_path)
    if path.is_file():
        return str(path)
    found = sorted(path.rglob("model.pt")) if path.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no model checkpoint (model.pt) at the app's model path {str(path)!r}.")
    return str(found[0])


class SeriesSelectOperator(Operator):
    """Select the DICOM series to classify in the input folder; emits ``selected_series``."""

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        pipeline: ScanReportPipeline,
        input_folder: str | os.PathLike,
        **kwargs: Any,
    ) -> None:
        self.pipeline = pipeline
        self.input_folder = Path(input_folder)
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.output("selected_series")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        op_output.emit(self.pipeline.select(self.input_folder), "selected_series")


class ScanClassifyOperator(Operator):
    """Load and classify each selected series; emits ``results`` (``[(series, result), ...]``)."""

    def __init__(self, fragment: Fragment, *args: Any, pipeline: ScanReportPipeline, **kwargs: Any) -> None:
        self.pipeline = pipeline
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("selected_series")
        spec.output("results")

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        results = []
        for series in op_input.receive("selected_series"):
            results.append((series, self.pipeline.classify(self.pipeline.volume(series), series)))
        op_output.emit(results, "results")


class ScanSRWriterOperator(Operator):
    """Write each result's DICOM SR (and the CSV rows and heat maps) to the output folder."""

    def __init__(self, fragment: Fragment, *args: Any, pipeline: ScanReportPipeline, **kwargs: Any) -> None:
        self.pipeline = pipeline
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("results")
        spec.output("rows").condition(ConditionType.NONE)  # no receiver needed

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        rows = [self.pipeline.report(result) for _, result in op_input.receive("results")]
        op_output.emit(rows, "rows")


class CovidScanReportApp(Application):
    """DICOM study in, one DICOM Comprehensive SR per selected CT series out (research use only).

    The app's input folder (``-i``) is searched for DICOM series, its model path (``-m``) is the checkpoint (or a
    folder holding ``model.pt`` with its ``model.pt.json``), and the reports go to its output folder (``-o``).
    The bundle folder (``configs/inference_scan.yaml``) is ``$MSTL_BUNDLE_DIR``, else ``bundle/`` in the current folder.
    """

    def compose(self) -> None:
        context = Application.init_app_context(self.argv)
        pipeline = ScanReportPipeline(
            _checkpoint(context.model_path), context.output_path  # the bundle: $MSTL_BUNDLE_DIR or ./bundle
        )
        select = SeriesSelectOperator(
            self, CountCondition(self, 1), pipeline=pipeline, input_folder=context.input_path, name="series_select"
        )
        classify = ScanClassifyOperator(self, pipeline=pipeline, name="scan_classify")
        write = ScanSRWriterOperator(self, pipeline=pipeline, name="sr_writer")
        self.add_flow(select, classify, {("selected_series", "selected_series")})
        self.add_flow(classify, write, {("results", "results")})
        logger.info(f"CovidScanReportApp: {context.input_path} -> {context.output_path} with {context.model_path}")


if __name__ == "__main__":
    CovidScanReportApp().run()
