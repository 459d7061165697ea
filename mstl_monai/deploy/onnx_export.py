# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""The slice classifier as an ONNX model (dynamic batch) and its CPU runtime (``onnxruntime``).

The export uses PyTorch's TorchScript-based ONNX exporter (``torch.onnx.export(..., dynamo=False)``): the
``torch.export``-based one (PyTorch's default since 2.9, which also needs ``onnxscript``) cannot translate the
non-local block's 3-D ``scaled_dot_product_attention`` ("only 4D query, key, and value are supported"). The
input is ``image`` ``(batch, in_channels, image_size, image_size)`` float32, already preprocessed as for the
PyTorch network (resize, pad, crop, normalise); the output is ``logits`` ``(batch, num_classes)``. Only the batch
axis is dynamic: a ViT's position embeddings are resized to the input grid in Python, so the spatial size is
fixed at the export's (the checkpoint's ``image_size``).

.. code-block:: python

    path = export_checkpoint_onnx("models/model.pt", "model.onnx")   # + model.onnx.json (settings)
    logits = OnnxClassifier(path)(batch)                            # torch tensor in, torch tensor out
"""

from __future__ import annotations

import contextlib
import copy
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OnnxClassifier",
    "export_checkpoint_onnx",
    "export_onnx",
    "load_slices",
    "max_abs_diff",
    "slice_preprocessing",
]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def export_onnx(
    network: torch.nn.Module, path: str | os.PathLike, image_size: int, in_channels: int = 1, opset: int = 17
) -> Path:
    """Export a slice classifier to ONNX with a dynamic batch axis; the file is written atomically and checked
    with ``onnx.checker``.

    Args:
        network: the classifier (logits ``(B, num_classes)``); a copy is exported in eval mode on the CPU.
        path: the ``.onnx`` file.
        image_size: the input's height and width.
        in_channels: the input's channels.
        opset: the ONNX opset.

    Raises:
        ValueError: the network does not give a ``(B, num_classes)`` tensor for a ``(2, C, S, S)`` input.
    """
    import onnx

    net = copy.deepcopy(network).cpu().eval()
    dummy = torch.zeros(2, int(in_channels), int(image_size), int(image_size))
    with torch.no_grad():
        out = net(dummy)
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != 2:
        raise ValueError(
            f"export_onnx needs a classifier giving logits (B, num_classes); {type(network).__name__} gave "
            f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}."
        )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with warnings.catch_warnings():
            # the TorchScript-based exporter is what works here (see the module docstring): no need to say it
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", message=".*feature will be removed.*")
            # a ViT's patch grid comes from the input's spatial size, which the export fixes on purpose
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"mstl_monai\.networks\.nets\.vit")
            torch.onnx.export(
                net,
                (dummy,),
                str(tmp),
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                opset_version=int(opset),
                do_constant_folding=True,
            )
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
    return path


def export_checkpoint_onnx(ckpt_path: str | os.PathLike, path: str | os.PathLike, opset: int = 17) -> Path:
    """Export the classifier in checkpoint ``ckpt_path`` (network and input size from its ``model.pt.json``) to
    ``path``, with ``<path>.json`` beside it: the checkpoint's settings (class names, decision threshold,
    normalisation, resize) plus the ONNX input/output names and the source weights' SHA-256.

    Raises:
        FileNotFoundError, ValueError: the checkpoint is missing or unreadable (the message names it).
    """
    from mstl_monai.metrics.io import write_metrics_json
    from mstl_monai.networks.checkpoint import load_network

    from .provenance import file_sha256

    net, settings = load_network(ckpt_path)
    out = export_onnx(net, path, settings["image_size"], settings["in_channels"], opset=opset)
    meta = {k: v for k, v in settings.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))}
    meta["onnx"] = {
        "input": INPUT_NAME,
        "input_shape": ["batch", settings["in_channels"], settings["image_size"], settings["image_size"]],
        "output": OUTPUT_NAME,
        "opset": int(opset),
        "source_checkpoint": os.path.basename(os.fspath(ckpt_path)),
        "source_sha256": file_sha256(ckpt_path),
        "preprocessing": "slice in [0, 1] (lung window) -> resize longest side to resize_size (area) -> pad to "
        "resize_size square -> centre crop image_size -> (x - normalize.subtrahend) / normalize.divisor",
    }
    write_metrics_json(Path(f"{os.fspath(out)}.json"), meta)
    return out


class OnnxClassifier:
    """An ONNX classifier run by ``onnxruntime`` on the CPU, called like the PyTorch network.

    Args:
        path: the ``.onnx`` file (:func:`export_onnx`).
        threads: intra-op threads (None: ``OMP_NUM_THREADS``, else onnxruntime's default).

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError: onnxruntime cannot load it (the message names it).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        import onnxruntime as ort

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"ONNX model {path!r} does not exist.")
        opts = ort.SessionOptions()
        if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
            threads = int(os.environ["OMP_NUM_THREADS"])
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ValueError(f"onnxruntime cannot load {path!r}: {e}") from e
        self.path = path
        self.input_name = self.session.get_inputs()[0].name

    def eval(self) -> OnnxClassifier:
        """For code that calls ``network.eval()``: nothing to do."""
        return self

    def __call__(self, x: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Logits ``(B, num_classes)`` (float32, CPU) of a preprocessed batch ``(B, C, S, S)``."""
        arr = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
        (logits,) = self.session.run([OUTPUT_NAME], {self.input_name: np.ascontiguousarray(arr)})
        return torch.from_numpy(logits)


def max_abs_diff(network: torch.nn.Module, onnx_model: OnnxClassifier, batch: torch.Tensor) -> Mapping[str, Any]:
    """Largest absolute differences between PyTorch (float32, eval) and onnxruntime on ``batch``: of the logits
    and of the softmax probabilities; also whether the argmax agrees on every slice."""
    network = network.cpu().eval()
    with torch.no_grad():
        ref = network(batch.float()).float()
    got = onnx_model(batch)
    return {
        "logits": float((ref - got).abs().max()),
        "probabilities": float((ref.softmax(1) - got.softmax(1)).abs().max()),
        "argmax_agree": bool((ref.argmax(1) == got.argmax(1)).all()),
        "n": int(batch.shape[0]),
    }


def slice_preprocessing(image_size: int, resize_size: int, normalize: Mapping[str, float] | None = None) -> Any:
    """The bundle's slice preprocessing (``configs/inference_scan.yaml``'s ``slice_preprocessing``): one (1, H, W)
    slice in [0, 1] -> resize the longest side to ``resize_size`` (area), pad square, centre-crop ``image_size``,
    normalise (``normalize``: the checkpoint's ``subtrahend``/``divisor``, default
    :data:`~mstl_monai.networks.sidecar.NORMALIZE`)."""
    from monai.transforms import CenterSpatialCrop, Compose, NormalizeIntensity, Resize, SpatialPad

    from mstl_monai.networks.sidecar import NORMALIZE

    norm = {**NORMALIZE, **dict(normalize or {})}
    return Compose(
        [
            Resize(spatial_size=int(resize_size), size_mode="longest", mode="area"),
            SpatialPad(spatial_size=(int(resize_size), int(resize_size))),
            CenterSpatialCrop(roi_size=(int(image_size), int(image_size))),
            NormalizeIntensity(subtrahend=float(norm["subtrahend"]), divisor=float(norm["divisor"])),
        ]
    )


def load_slices(
    paths: list[str], image_size: int, resize_size: int, normalize: Mapping[str, float] | None = None
) -> torch.Tensor:
    """Read CT slice files (:class:`~mstl_monai.transforms.LoadCTSlice`) and preprocess them
    (:func:`slice_preprocessing`) into one float32 batch ``(N, 1, image_size, image_size)``."""
    from mstl_monai.transforms import LoadCTSlice

    load, pre = LoadCTSlice(), slice_preprocessing(image_size, resize_size, normalize)
    return torch.stack([torch.as_tensor(pre(load(p))).float() for p in paths])
