# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The MONAI Label app's infer tasks: slice classification with optional heat maps, and scan-level inference."""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from typing import Any, Sequence

import numpy as np
import torch
from fastapi import HTTPException
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.tasks.infer.bundle import BundleInferTask

from mstl_monai.handlers.predictions import lung_fields
from mstl_monai.metrics.classification import thresholded_class
from mstl_monai.transforms import LoadCTSlice, LocateLungd

logger = logging.getLogger(__name__)

__all__ = ["HEATMAP_FORMATS", "HEATMAP_METHODS", "MSTLInferTask", "MSTLScanInferTask", "heatmap_request"]

#: heat maps ``/infer`` can return
HEATMAP_METHODS = ("none", "gradcam", "attention", "rollout", "mag_sd")
#: how ``/infer`` returns a heat map: the map itself (8-bit) or a colour overlay on the slice
HEATMAP_FORMATS = ("map", "overlay")


def _first(value: Any, default: Any) -> Any:
    """MONAI Label sends a config option's choices as a list when the client did not pick one."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else default
    return default if value is None else value


def heatmap_request(request: dict[str, Any]) -> tuple[str, str]:
    """The ``(heatmap, heatmap_format)`` a request asks for (``("none", "map")`` by default).

    Raises:
        HTTPException: 422 for a method outside :data:`HEATMAP_METHODS` or a format outside :data:`HEATMAP_FORMATS`.
    """
    method = str(_first(request.get("heatmap"), "none")).lower()
    if method not in HEATMAP_METHODS:
        raise HTTPException(status_code=422, detail=f"heatmap '{request.get('heatmap')}' is not one of {list(HEATMAP_METHODS)}.")
    fmt = str(_first(request.get("heatmap_format"), "map")).lower()
    if fmt not in HEATMAP_FORMATS:
        raise HTTPException(status_code=422, detail=f"heatmap_format '{request.get('heatmap_format')}' is not 'map' or 'overlay'.")
    return method, fmt


class MSTLInferTask(BundleInferTask):
    """The bundle's ``inference.yaml`` as a MONAI Label classification task, with optional heat maps.

    Args:
        path: the app's bundle folder (``configs/``, ``models/model.pt``).
        conf: the app's ``--conf`` settings.
        kwargs: passed to :class:`~monailabel.tasks.infer.bundle.BundleInferTask`.
    """

    def __init__(self, path: str, conf: dict[str, str], **kwargs: Any) -> None:
        kwargs.setdefault("type", InferType.CLASSIFICATION)
        kwargs.setdefault("add_post_restore", False)
        kwargs.setdefault("load_strict", True)
        super().__init__(path, conf, **kwargs)
        self._threshold_conf = (conf or {}).get("threshold")
        self._model_file = os.path.join(path, "models", self.const.model_pytorch())
        if self.valid:
            self._config.update({"heatmap": list(HEATMAP_METHODS), "heatmap_format": list(HEATMAP_FORMATS)})
            self.n_attn = int(self.bundle_config.config.get("n_attn", 0))
            self.is_vit = str(self.bundle_config.config.get("backbone", "")).lower().startswith("vit")

    def _get_network(self, device: Any, data: Any) -> Any:
        """The network with the weights of ``models/model.pt`` (reloaded when the file changes).

        Raises:
            HTTPException: 503 naming the file and the cause when the weights cannot be loaded.
        """
        try:
            return super()._get_network(device, data)
        except Exception as e:  # any failure to load is the checkpoint's: name it in one line
            from mstl_monai.label.scan import load_failure_message

            path = self.get_path(validate=False) or self._model_file
            logger.error(f"cannot load {path}: {e}")
            detail = load_failure_message(path, os.path.relpath(path, self.bundle_path), e, self.network)
            raise HTTPException(status_code=503, detail=detail) from None

    def run_pre_transforms(self, data: dict[str, Any], transforms: Sequence[Any]) -> dict[str, Any]:
        data = super().run_pre_transforms(data, transforms)
        data["mstl_pre_transforms"] = list(transforms)  # the same instances, so MONAI can invert them
        return data

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, dict]:
        _, result = super().writer(data, extension, dtype)
        scores = {p["label"]: round(p["score"], 6) for p in result.get("prediction", [])}
        result["class_probabilities"] = scores
        if scores:
            used = self._threshold(data)
            result["predicted_class"] = thresholded_class(scores, used["value"])
            if len(scores) == 2:
                result["decision_threshold"] = used
        result.update(self._lung(data))
        method, fmt = heatmap_request(data)
        if method == "none":
            return None, result
        heat = self._heatmap(data, method)  # (H, W) in [0, 1] on the original slice grid
        out = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
        from PIL import Image

        if fmt == "overlay":
            from mstl_monai.visualize import overlay

            slice_img = LoadCTSlice()(data["image_path"])[0].numpy()
            Image.fromarray((overlay(slice_img, heat) * 255).round().astype(np.uint8)).save(out)
        else:
            Image.fromarray((heat * 255).round().astype(np.uint8)).save(out)
        result["heatmap"] = {"method": method, "format": fmt, "shape": list(heat.shape)}
        return out, result

    def _threshold(self, data: dict[str, Any]) -> dict[str, Any]:
        """The decision threshold of a request: its ``threshold`` parameter, else the app's ``--conf threshold``,
        else the one stored with the served checkpoint (``models/model.pt.json``), else 0.5."""
        from mstl_monai.networks.checkpoint import decision_threshold
        from mstl_monai.networks.sidecar import read_checkpoint_info

        try:
            settings = read_checkpoint_info(self._model_file) or {}
        except ValueError as e:
            logger.warning(f"{e} The decision threshold 0.5 is used.")
            settings = {}
        given = _first(data.get("threshold"), None)
        if given is None:
            given = self._threshold_conf
        try:
            return decision_threshold(settings.get("decision_threshold") if given is None else given, settings)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None

    def _lung(self, data: dict[str, Any]) -> dict[str, Any]:
        """``lung_found`` / ``lung_box_fraction`` of the request, with a ``warning`` when no lung was found.

        The bundle's preprocessing writes them (``LocateLungd``); an app prepared before it did is located here.
        """
        path = data.get("image_path")
        if "lung_found" not in data and path:
            data = LocateLungd("image")({"image": LoadCTSlice()(path)})
        lung = lung_fields(data)
        if lung["lung_found"] is False:
            lung["warning"] = "no lung found in this image (blank or not a lung CT?): the prediction is unreliable."
            logger.warning(f"{path or 'image'}: {lung['warning']}")
        return lung

    def _heatmap(self, data: dict[str, Any], method: str) -> np.ndarray:
        from mstl_monai.visualize import attention_heatmap, attention_rollout, grad_cam, mag_sd_heatmap

        device = data.get("device", "cpu")
        network = self._get_network(device, data)
        img = data[self.input_key]
        x = torch.as_tensor(img).float()[None].to(device)
        cam_layer = getattr(getattr(network, "module", network), "cam_layer", "layer4")  # MAG-SD: its last feature map
        maps = {
            "gradcam": lambda net, x: grad_cam(net, x, target_layers=cam_layer),
            "attention": attention_heatmap,
            "rollout": attention_rollout,
            "mag_sd": mag_sd_heatmap,  # a MAG-SD model's multiscale attention (mean of its maps)
        }
        heat = maps[method](network, x)
        heat = heat[0].detach().cpu().float()  # (1, S, S) on the network's input grid
        if isinstance(img, MetaTensor):  # back through the resize / pad / crop onto the slice's own grid
            d = {self.input_key: MetaTensor(heat, meta=dict(img.meta), applied_operations=copy.deepcopy(img.applied_operations))}
            for t in reversed(data.get("mstl_pre_transforms", [])):
                if isinstance(t, InvertibleTransform):
                    d = t.inverse(d)
            heat = torch.as_tensor(d[self.input_key]).float()
        return heat[0].clamp(0, 1).numpy()


class MSTLScanInferTask(InferTask):
    """Scan-level inference on a volume of the datastore (NIfTI) with the bundle's ``configs/inference_scan.yaml``.

    ``POST /infer/<model>_scan?image=ID`` answers with the scan's probability, its 95 % interval, the decision at
    the threshold, the slices used/skipped and the top slices (index, z in mm, probability); with
    ``params={"heatmap": "gradcam"}`` and ``output=image`` (or ``all``) the top slices' Grad-CAM overlays come as
    one PNG, side by side. A volume without lung gets a 422 naming it.

    Args:
        path: the app's bundle folder.
        conf: the app's ``--conf`` settings.
    """

    def __init__(self, path: str, conf: dict[str, str], class_names: Sequence[str]) -> None:
        from mstl_monai.label.scan import ScanInferRunner

        super().__init__(
            type=InferType.CLASSIFICATION,
            labels={name: i for i, name in enumerate(class_names)},
            dimension=3,
            description="Scan-level COVID-19 / non-COVID from the lung slices of a CT volume (top-k mean over slices)",
            config={"heatmap": ["none", "gradcam"], "series_uid": ""},
        )
        self.path = path
        self.runner = ScanInferRunner(path, {"device": "cpu" if not torch.cuda.is_available() else "cuda:0"})

    def is_valid(self) -> bool:
        return self.runner.is_valid()

    def __call__(self, request: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        image = request.get("image")
        if not isinstance(image, str):
            raise HTTPException(status_code=422, detail="scan inference needs one volume (a NIfTI file) as image.")
        uid = _first(request.get("series_uid"), "") or None
        from mstl_monai.label.scan import CheckpointLoadError

        try:
            answer = self.runner(image, series_uid=uid)
        except CheckpointLoadError as e:
            raise HTTPException(status_code=503, detail=str(e)) from None
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        overlays = answer.pop("_overlays")
        answer["scan"] = os.path.basename(str(answer["scan"]))
        method = heatmap_request(request)[0]
        if method == "none":
            return None, answer
        from PIL import Image

        from mstl_monai.label.scan import montage

        out = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
        Image.fromarray(montage(overlays)).save(out)
        answer["heatmap"] = {"method": method, "format": "overlay", "slices": [t["slice"] for t in answer["top_slices"]]}
        return out, answer
