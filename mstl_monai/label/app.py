# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""MONAI Label app serving and retraining the bundle's COVID-19 / non-COVID CT-slice classifier.

Needs the ``label`` extra in its own environment (``bash scripts/setup_label_env.sh``). Prepare an app folder
with ``python -m mstl_monai.label init``, then start it with ``monailabel start_server`` (see the README,
"MONAI Label"). What it serves:

- ``POST /infer/<model>?image=ID`` (or with an uploaded ``file``): class probabilities
  (``InferType.CLASSIFICATION``, class names from the bundle's ``metadata.json``), ``lung_found`` and
  ``lung_box_fraction`` (and a ``warning`` when no lung was found: the prediction is flagged, not hidden). With
  the form field ``params={"heatmap": "gradcam"}`` (or ``"attention"``; ``"rollout"`` for a ViT backbone; ``"mag_sd"``
  for a model finetuned with ``mag_sd: true``: the mean of its multiscale attention maps) and
  ``output=image``, the answer is a PNG heat map at the slice's own size (8-bit, 255 = most relevant);
  ``{"heatmap_format": "overlay"}`` gives the Fig.-4-style colour overlay instead.
- ``PUT /datastore/label?image=ID`` with a small file ``{"label": "COVID"}`` (or the bare class name or index):
  the image-level label. Labels outside the classes are refused with 422 at upload.
- ``POST /train/<model>``: finetunes the served checkpoint on the labelled images (the bundle's ``train.yaml``
  through MONAI Label's ``BundleTrainTask``); the best checkpoint replaces ``models/model.pt`` atomically and the
  next ``/infer`` loads it.

Bad requests (unknown model or image id, a file that is not a readable image, an unknown heat-map method, a
label outside the classes) get a 4xx answer that names the offending value, and the server keeps serving.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from fastapi import HTTPException
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask

import mstl_monai
from mstl_monai.engines.report import lung_fields
from mstl_monai.label.prepare import DEFAULT_MODEL_NAME, parse_class_label, save_state_dict_atomic, thresholded_class
from mstl_monai.metrics.io import write_metrics_json
from mstl_monai.transforms import LoadCTSlice, LocateLungd

logger = logging.getLogger(__name__)

__all__ = ["ClassLabelDatastore", "HEATMAP_METHODS", "MSTLInferTask", "MSTLLabelApp", "MSTLScanInferTask", "MSTLTrainTask"]

#: image files the datastore lists (CT slices: PNG/JPEG, DICOM, NIfTI)
IMAGE_EXTENSIONS = ["*.png", "*.jpg", "*.jpeg", "*.dcm", "*.nii.gz", "*.nii"]
#: heat maps ``/infer`` can return
HEATMAP_METHODS = ("none", "gradcam", "attention", "rollout", "mag_sd")


def _first(value: Any, default: Any) -> Any:
    """MONAI Label sends a config option's choices as a list when the client did not pick one."""
    if isinstance(value, (list, tuple)):
        return value[0] if value else default
    return default if value is None else value


def check_image_file(path: str, shown_name: str) -> None:
    """Raise ``HTTPException(415)`` unless ``path`` is a CT slice ``LoadCTSlice`` can read."""
    name = os.path.basename(path)
    if not any(Path(name.lower()).match(e) for e in IMAGE_EXTENSIONS):
        raise HTTPException(
            status_code=415, detail=f"'{shown_name}' is not a supported image file; use one of {IMAGE_EXTENSIONS}."
        )
    try:
        img = LoadCTSlice()(path)
    except (ValueError, FileNotFoundError, OSError) as e:
        raise HTTPException(status_code=415, detail=f"'{shown_name}' is not a readable image: {e}") from None
    if float(img.max()) == float(img.min()):
        raise HTTPException(status_code=422, detail=f"'{shown_name}' is a constant image: nothing to classify.")


class ClassLabelDatastore(LocalDatastore):
    """A local MONAI Label datastore of CT slices with image-level class labels.

    A label is a JSON file ``{"label": <index>, "class_name": <name>}`` under ``labels/<tag>/<image id>.json``; it is
    parsed and checked against the classes when it is saved, so a wrong label never reaches training.

    Args:
        datastore_path: the studies folder.
        class_names: the classifier's classes, in output order.
        kwargs: passed to :class:`~monailabel.datastore.local.LocalDatastore`.
    """

    def __init__(self, datastore_path: str, class_names: Sequence[str], **kwargs: Any) -> None:
        self.class_names = list(class_names)
        kwargs.setdefault("extensions", IMAGE_EXTENSIONS)
        super().__init__(datastore_path, **kwargs)

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        check_image_file(image_filename, image_id or os.path.basename(image_filename))
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        if image_id not in self._datastore.objects:
            raise HTTPException(status_code=404, detail=f"image '{image_id}' is not in the datastore; add it first.")
        try:
            idx = parse_class_label(Path(label_filename).read_bytes(), self.class_names, f"label for image '{image_id}'")
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        with tempfile.TemporaryDirectory() as d:
            canonical = os.path.join(d, f"{image_id}.json")
            with open(canonical, "w") as f:
                json.dump({"label": idx, "class_name": self.class_names[idx]}, f)
            info = dict(label_info or {}, label=idx, class_name=self.class_names[idx])
            return super().save_label(image_id, canonical, label_tag, info)

    def _list_files(self, path: str, patterns: Sequence[str]) -> dict[str, str]:
        # label files are JSON, which the image extensions do not match: list them in the label folders
        labels_root = os.path.realpath(self._datastore.label_path(None))
        if os.path.realpath(path).startswith(labels_root):
            patterns = [*patterns, "*.json"]
        return super()._list_files(path, patterns)

    def class_datalist(self) -> list[dict[str, Any]]:
        """``[{"image": path, "label": class index}]`` for every image with a final label.

        Raises:
            ValueError: a label file is unreadable or names no class (the message names the file).
        """
        out = []
        for item in self.datalist():
            path = item["label"]
            try:
                text = Path(path).read_bytes()
            except OSError as e:
                raise ValueError(f"cannot read the label file {path}: {e}") from None
            out.append({"image": item["image"], "label": parse_class_label(text, self.class_names, path)})
        return out


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
            self._config.update({"heatmap": list(HEATMAP_METHODS), "heatmap_format": ["map", "overlay"]})
            self.n_attn = int(self.bundle_config.config.get("n_attn", 0))
            self.is_vit = str(self.bundle_config.config.get("backbone", "")).lower().startswith("vit")

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
        method = str(_first(data.get("heatmap"), "none")).lower()
        if method == "none":
            return None, result
        fmt = str(_first(data.get("heatmap_format"), "map")).lower()
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
        from mstl_monai.engines.checkpoint import decision_threshold, read_checkpoint_info

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
        try:
            answer = self.runner(image, series_uid=uid)
        except ValueError as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        overlays = answer.pop("_overlays")
        answer["scan"] = os.path.basename(str(answer["scan"]))
        method = str(_first(request.get("heatmap"), "none")).lower()
        if method == "none":
            return None, answer
        from PIL import Image

        from mstl_monai.label.scan import montage

        out = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
        Image.fromarray(montage(overlays)).save(out)
        answer["heatmap"] = {"method": method, "format": "overlay", "slices": [t["slice"] for t in answer["top_slices"]]}
        return out, answer


class MSTLTrainTask(BundleTrainTask):
    """Finetune the served checkpoint on the datastore's labelled images with the bundle's ``train.yaml``.

    Each request trains in a fresh run folder ``<bundle>/train_runs/<time>/`` (never resuming an older one),
    starting from the current ``models/model.pt``; the best checkpoint by validation AUC then replaces
    ``models/model.pt`` atomically, so the next ``/infer`` uses it. With fewer labelled images than make a
    validation split with both classes, the model is validated on its training images (the log says so).
    """

    def __init__(self, path: str, conf: dict[str, str], class_names: Sequence[str]) -> None:
        super().__init__(path, conf, model_dict_key="model", load_strict=True)
        self.class_names = list(class_names)
        self._run_dir: str | None = None
        self._counts = (0, 0)

    def config(self) -> dict[str, Any]:
        c = super().config()
        c.update({"max_epochs": int(self.conf.get("max_epochs", 10)), "multi_gpu": False})
        return c

    def _fetch_datalist(self, request: dict, datastore: Any) -> list[dict]:
        if not isinstance(datastore, ClassLabelDatastore):
            raise TypeError(f"{type(self).__name__} needs a ClassLabelDatastore, got {type(datastore).__name__}.")
        data = datastore.class_datalist()
        classes = {d["label"] for d in data}
        if len(data) < 2 or len(classes) < 2:
            raise ValueError(
                f"training needs labelled images of at least two classes; the datastore has {len(data)} labelled "
                f"image(s) of classes {sorted(self.class_names[c] for c in classes)}."
            )
        return data

    def _partition_datalist(self, datalist: list[dict], request: dict, shuffle: bool = False):
        train, val = super()._partition_datalist(datalist, request, shuffle=True)
        if val is not None and len({d["label"] for d in val}) < 2:
            logger.warning(
                f"{len(datalist)} labelled images give no validation split with both classes: validating on the "
                "training images (the checkpoint choice is then optimistic)."
            )
            val = list(train)
        self._counts = (len(train), len(val) if val else 0)
        return train, val

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        if pretrained and model_pytorch and os.path.exists(model_pytorch):  # upstream fails on pretrained=False
            super()._load_checkpoint(model_pytorch, pretrained, train_handlers)

    def _update_overrides(self, overrides: dict) -> dict:
        self._run_dir = os.path.join(self.bundle_path, "train_runs", time.strftime("%Y%m%d-%H%M%S"))
        overrides.update({"run_dir": self._run_dir, "resume": False, "pretrained": "", "num_workers": 0})
        overrides["device"] = str(overrides.get("device", "cpu"))
        return overrides

    def stats(self) -> dict[str, Any]:
        """What the last ``/train`` did (shown under ``train_stats`` in ``/info``)."""
        f = os.path.join(self.bundle_path, "train_stats.json")
        if not os.path.isfile(f):
            return {}
        with open(f) as fh:
            return json.load(fh)

    def __call__(self, request: dict, datastore: Any) -> dict:
        request = dict(request)
        request["multi_gpu"] = False
        request["run_id"] = request.get("run_id") or "run"
        t0 = time.time()
        super().__call__(request, datastore)
        best = os.path.join(self._run_dir or "", "models", "model.pt")
        if not os.path.isfile(best):
            raise RuntimeError(f"training finished without a best checkpoint {best}; see the log above.")
        from mstl_monai.networks.weights import extract_state_dict, read_checkpoint

        state = extract_state_dict(read_checkpoint(best), best)
        target = os.path.join(self.bundle_path, "models", self.const.model_pytorch())
        from mstl_monai.engines.checkpoint import read_checkpoint_info, write_checkpoint_info

        chosen, served = read_checkpoint_info(best), read_checkpoint_info(target)
        if chosen is not None and served is not None:  # the new weights' val threshold replaces the old one
            write_checkpoint_info(target, served, decision_threshold=chosen.get("decision_threshold"))
        save_state_dict_atomic(state, target)
        logger.info(f"new weights {best} -> {target}")
        stats = {
            "model": target,
            "run_dir": self._run_dir,
            "max_epochs": request.get("max_epochs"),
            "train_images": self._counts[0],
            "val_images": self._counts[1],
            "seconds": round(time.time() - t0, 1),
            "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_metrics_json(os.path.join(self.bundle_path, "train_stats.json"), stats)
        return stats


class MSTLLabelApp(MONAILabelApp):
    """MONAI Label app for the mstl-monai classifier (prepared by ``python -m mstl_monai.label init``).

    ``--conf models <name>`` picks the bundle under ``<app>/model/<name>`` (default
    ``mstl_covid_classification``); ``--conf max_epochs N`` sets the default epochs of ``/train``.
    """

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.model_name = str(conf.get("models", DEFAULT_MODEL_NAME)).split(",")[0].strip() or DEFAULT_MODEL_NAME
        self.model_root = os.path.join(app_dir, "model", self.model_name)
        meta_file = os.path.join(self.model_root, "configs", "metadata.json")
        if not os.path.isfile(meta_file):
            raise FileNotFoundError(
                f"no bundle at {self.model_root} (missing configs/metadata.json): prepare the app with "
                "`python -m mstl_monai.label init --app-dir APP --checkpoint model.pt`."
            )
        with open(meta_file) as f:
            channel_def = json.load(f)["network_data_format"]["outputs"]["pred"]["channel_def"]
        self.class_names = [v for _, v in sorted(channel_def.items(), key=lambda kv: int(kv[0]))]
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="mstl-monai",
            description="COVID-19 vs non-COVID CT-slice classification (multi-stage attentive transfer learning)",
            version=mstl_monai.__version__,
        )

    def init_datastore(self) -> Any:
        if self.studies.startswith(("http://", "https://")):  # DICOMweb / XNAT / DSA: viewing and inference only
            logger.warning("remote datastore: image-level labels and /train need a local studies folder")
            return super().init_datastore()
        logger.info(f"Init class-label datastore for: {self.studies}")
        return ClassLabelDatastore(
            self.studies,
            class_names=self.class_names,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, Any]:
        task = MSTLInferTask(self.model_root, self.conf)
        if not task.is_valid():
            raise RuntimeError(f"bundle {self.model_root} has no configs/inference.yaml or models/model.pt.")
        infers = {self.model_name: task}
        scan = MSTLScanInferTask(self.model_root, self.conf, self.class_names)
        if scan.is_valid():  # a bundle with configs/inference_scan.yaml
            infers[f"{self.model_name}_scan"] = scan
        return infers

    def init_trainers(self) -> dict[str, Any]:
        return {self.model_name: MSTLTrainTask(self.model_root, self.conf, self.class_names)}

    def infer(self, request: dict, datastore: Any = None) -> dict:
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model '{model}'; this server has {sorted(self._infers)}.")
        image = request.get("image")
        if isinstance(image, str):
            if os.path.isfile(image):  # an uploaded file (MONAI Label saved it to a temporary path)
                check_image_file(image, "uploaded file")
            else:
                ds = datastore if datastore else self.datastore()
                if not image or not ds.get_image_uri(image):
                    raise HTTPException(
                        status_code=404,
                        detail=f"image '{image}' is not in the datastore ({len(ds.list_images())} images; list them with GET /datastore/?output=all).",
                    )
        method = str(_first(request.get("heatmap"), "none")).lower()
        if method not in HEATMAP_METHODS:
            raise HTTPException(status_code=422, detail=f"heatmap '{request.get('heatmap')}' is not one of {list(HEATMAP_METHODS)}.")
        fmt = str(_first(request.get("heatmap_format"), "map")).lower()
        if fmt not in ("map", "overlay"):
            raise HTTPException(status_code=422, detail=f"heatmap_format '{request.get('heatmap_format')}' is not 'map' or 'overlay'.")
        is_vit = bool(getattr(self._infers[model], "is_vit", False))
        if method == "rollout" and not is_vit:
            raise HTTPException(status_code=422, detail=f"model '{model}' is not a ViT: attention rollout explains ViT backbones; ask for heatmap 'gradcam'.")
        if method in ("gradcam", "attention", "mag_sd") and is_vit:
            raise HTTPException(status_code=422, detail=f"model '{model}' is a ViT: ask for heatmap 'rollout'.")
        if method == "attention" and getattr(self._infers[model], "n_attn", 0) == 0:
            raise HTTPException(status_code=422, detail=f"model '{model}' has no non-local block: ask for heatmap 'gradcam'.")
        return super().infer(request, datastore)
