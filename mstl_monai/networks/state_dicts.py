# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Checkpoints as flat state dicts (read safely, unwrapped), and the key and stem helpers the ResNet and ViT weight
loaders (:mod:`~mstl_monai.networks.weights`, :mod:`~mstl_monai.networks.vit_weights`) share."""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

__all__ = ["WRAPPER_KEYS", "extract_state_dict", "read_checkpoint"]

#: keys under which checkpoints wrap the network's state dict (MONAI/ignite ``CheckpointSaver``, common scripts)
WRAPPER_KEYS = ("state_dict", "model", "network", "net")


def read_checkpoint(path: str | Path) -> Any:
    """
    Load a checkpoint file safely (``torch.load(weights_only=True)`` on the CPU: a checkpoint is untrusted input).

    Raises:
        FileNotFoundError: when ``path`` is not a file.
        ValueError: when the file is corrupt, not a PyTorch file, or holds objects ``weights_only`` refuses.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file {path} not found.")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise ValueError(f"checkpoint {path} is an empty file (0 bytes).")
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):  # torch.save: a zip archive (or legacy pickle)
        kind = "text" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "other binary data"
        raise ValueError(f"checkpoint {path} is not a PyTorch file: it holds {kind}, not what torch.save writes.")
    try:
        with warnings.catch_warnings():  # garbage may look like an unknown pickle protocol
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"cannot load checkpoint {path} safely: weights_only loading refused it or it is not a PyTorch file "
            f"({first}). Only tensors and plain containers are accepted from checkpoint files."
        ) from e
    except MemoryError:
        raise
    except Exception as e:  # anything else a damaged file makes the unpickler raise (IndexError, KeyError, ...)
        raise ValueError(f"cannot read checkpoint {path}: corrupt or truncated file ({type(e).__name__}: {e}).") from e


def _flatten_tensors(obj: Mapping, prefix: str = "") -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[name] = v
        elif isinstance(v, Mapping):
            out.update(_flatten_tensors(v, f"{name}."))
    return out


def extract_state_dict(obj: Any, source: str = "<checkpoint>") -> dict[str, torch.Tensor]:
    """
    The tensors of a checkpoint as a flat state dict: a plain state dict, or one wrapped under
    ``"state_dict"``/``"model"``/``"network"``/``"net"`` (first found), or any nesting of dicts (keys joined by dots).
    A ``module.`` prefix shared by every key (DataParallel/DDP) is removed.

    Raises:
        ValueError: when ``obj`` holds no tensor.
    """
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ValueError(
            f"checkpoint {source} holds a {type(obj).__name__}, expected a state dict (a dict of tensors)."
        )
    for key in WRAPPER_KEYS:
        if key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
            break
    state = _flatten_tensors(obj)
    if not state:
        raise ValueError(f"checkpoint {source} holds no tensors (top-level keys: {sorted(map(str, obj))[:10]}).")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state


def _is_excluded(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p.rstrip(".") or key.startswith(p.rstrip(".") + ".") for p in prefixes)


def _adapt_conv1(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """RGB stem kernel for ``in_channels`` inputs: summed for one channel, else tiled and rescaled (as timm)."""
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    reps = -(-in_channels // weight.shape[1])
    return weight.repeat(1, reps, *([1] * (weight.ndim - 2)))[:, :in_channels] * (weight.shape[1] / in_channels)


def _source(path_or_state_dict: Any) -> tuple[dict[str, torch.Tensor], str]:
    if isinstance(path_or_state_dict, (str, Path)):
        return extract_state_dict(read_checkpoint(path_or_state_dict), str(path_or_state_dict)), str(path_or_state_dict)
    return extract_state_dict(path_or_state_dict, "<state dict>"), "<state dict>"
