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

No request reaches a file outside the datastore: ids and tags are plain names (422 otherwise, see
:class:`~mstl_monai.label.datastore.ClassLabelDatastore`), and ``/infer`` reads only datastore images and files
uploaded to the server; any other ``image`` (a path, whether the file exists or not) is the same 404 as an unknown
id. Uploads go to a private folder of the server (``$TMPDIR/mstl-label-uploads-*``, removed when it stops); an
upload that is refused is removed at once. MONAI Label's sessions (``/session``) are off (406): with
``uncompress=true`` they unpack an uploaded archive, whose members may be named ``../x``, with Python's tarfile; a
slice classifier needs none (``/infer`` takes the file itself).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import tempfile
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.utils.sessions import Sessions

import mstl_monai
from mstl_monai.label.datastore import ClassLabelDatastore, check_image_file, discard_upload, is_plain_name
from mstl_monai.label.infers import HEATMAP_METHODS, MSTLInferTask, MSTLScanInferTask, _first, heatmap_request
from mstl_monai.label.prepare import DEFAULT_MODEL_NAME
from mstl_monai.label.trainers import MSTLTrainTask

logger = logging.getLogger(__name__)

# the tasks and the datastore live in their own modules (as in MONAI Label's sample apps: lib/infers, lib/trainers);
# they are re-exported here, where the app and its users have always found them
__all__ = ["ClassLabelDatastore", "HEATMAP_METHODS", "MSTLInferTask", "MSTLLabelApp", "MSTLScanInferTask", "MSTLTrainTask"]


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
        self.upload_dir = _private_upload_dir()
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
            upload_dir=self.upload_dir,
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

    def _load_sessions(self, load: bool = False) -> Sessions:
        return NoSessions(self.upload_dir)

    def _uploaded(self, path: str) -> bool:
        """Whether ``path`` is a file uploaded to this server (a file in its upload folder)."""
        return os.path.isfile(path) and os.path.dirname(os.path.realpath(path)) == self.upload_dir

    def infer(self, request: dict, datastore: Any = None) -> dict:
        """Check the request, resolve ``image`` (a datastore id, or a file uploaded with the request) and run the
        model. When the request fails, the files it uploaded (``image``, ``label``) are removed.

        Raises:
            HTTPException: 404 for an unknown model, or an ``image`` that is neither a datastore id nor an upload
                (any path: the same answer whether the file exists or not); 415/422 for an upload that is not a
                readable slice; 422 for an unknown heat-map method or ``model_filename``.
        """
        image = request.get("image")
        upload = isinstance(image, str) and self._uploaded(image)
        try:
            return self._infer(request, datastore, upload)
        except BaseException:  # MONAI Label removes only the uploads of answered requests
            for path in (image if upload else None, request.get("label")):
                if isinstance(path, str):
                    discard_upload(path, self.upload_dir)  # only files in the upload folder
            raise

    def _infer(self, request: dict, datastore: Any, upload: bool) -> dict:
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(status_code=404, detail=f"unknown model '{model}'; this server has {sorted(self._infers)}.")
        task = self._infers[model]
        image = request.get("image")
        if isinstance(image, str):
            if upload:
                check_image_file(image, "uploaded file")
            else:  # a datastore id, and nothing else: its file, never a path the client gives
                ds = datastore if datastore else self.datastore()
                uri = ds.get_image_uri(image) if is_plain_name(image) else ""
                if not uri:
                    raise HTTPException(
                        status_code=404,
                        detail=f"image {image!r} is not in the datastore ({len(ds.list_images())} images; list them with GET /datastore/?output=all).",
                    )
                request = dict(request, image=uri)
        offered = task.config().get("model_filename") if hasattr(task, "config") else None
        chosen = _first(request.get("model_filename"), None)
        if isinstance(offered, list) and chosen is not None and chosen not in offered:
            raise HTTPException(status_code=422, detail=f"model_filename {chosen!r} is not one of {offered}.")
        method = heatmap_request(request)[0]  # 422 for an unknown method or format
        is_vit = bool(getattr(task, "is_vit", False))
        if method == "rollout" and not is_vit:
            raise HTTPException(status_code=422, detail=f"model '{model}' is not a ViT: attention rollout explains ViT backbones; ask for heatmap 'gradcam'.")
        if method in ("gradcam", "attention", "mag_sd") and is_vit:
            raise HTTPException(status_code=422, detail=f"model '{model}' is a ViT: ask for heatmap 'rollout'.")
        if method == "attention" and getattr(task, "n_attn", 0) == 0:
            raise HTTPException(status_code=422, detail=f"model '{model}' has no non-local block: ask for heatmap 'gradcam'.")
        return super().infer(request, datastore)


class NoSessions(Sessions):
    """MONAI Label's sessions, turned off: no session exists (``GET /session/ID`` and ``/infer?session_id=``: 404)
    and none can be made (``PUT /session/``: 406, the upload removed).

    Args:
        upload_dir: the server's upload folder (uploads of a refused ``PUT /session/`` are removed from it).
    """

    def __init__(self, upload_dir: str) -> None:
        super().__init__(store_path=os.path.join(upload_dir, "sessions"))  # never written to
        self.upload_dir = upload_dir

    def get_session(self, session_id: str, update_ts: bool = True, fetch_cache: bool = True) -> None:
        return None

    def remove_session(self, session_id: str) -> None:
        return None

    def remove_expired(self) -> int:
        return 0

    def add_session(self, data_file: str, expiry: int = 0, uncompress: bool = False, session_id: Any = None) -> Any:
        folder = os.path.realpath(data_file if os.path.isdir(data_file) else os.path.dirname(data_file))
        if os.path.dirname(folder) == self.upload_dir:  # MONAI Label's folder of this request's files
            shutil.rmtree(folder, ignore_errors=True)
        raise HTTPException(
            status_code=406,
            detail="sessions are off in this app: send the slice with POST /infer/<model> (form field file) or add it "
            "with PUT /datastore/image.",
        )


def _private_upload_dir() -> str:
    """A new folder in the temporary folder (``$TMPDIR``) that this process's temporary files, the uploads of MONAI
    Label's endpoints among them, go to from now on; removed when the process exits."""
    folder = tempfile.mkdtemp(prefix="mstl-label-uploads-")
    atexit.register(shutil.rmtree, folder, True)
    tempfile.tempdir = folder
    return os.path.realpath(folder)
