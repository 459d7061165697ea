# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The MONAI Label app's train task: finetune the served checkpoint on the datastore's labelled images."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Sequence

from monailabel.tasks.train.bundle import BundleTrainTask

from mstl_monai.label.datastore import ClassLabelDatastore
from mstl_monai.label.prepare import save_state_dict_atomic
from mstl_monai.metrics.io import write_metrics_json

logger = logging.getLogger(__name__)

__all__ = ["MSTLTrainTask"]


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
        from mstl_monai.networks.checkpoint import read_network_state
        from mstl_monai.networks.sidecar import read_checkpoint_info, write_checkpoint_info

        state, _ = read_network_state(best)
        target = os.path.join(self.bundle_path, "models", self.const.model_pytorch())

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
