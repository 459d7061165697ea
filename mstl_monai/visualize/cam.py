# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Grad-CAM heatmaps in [0, 1], wrapping ``monai.visualize.GradCAM`` without side effects on the network."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn

from monai.visualize import GradCAM

__all__ = ["grad_cam", "minmax_normalize"]

#: per-module hook registries that ``monai.visualize.ModelWithHooks`` adds to and never cleans
_HOOK_DICTS = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks")


def minmax_normalize(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Scale each sample of a ``(B, ...)`` tensor to [0, 1] by its own min and max; constant maps become 0.

    (MONAI's ``default_normalizer`` maps max -> 0 and min -> 1; this keeps high = important.)
    """
    b = maps.shape[0]
    flat = maps.reshape(b, -1).float()
    lo = flat.min(dim=1, keepdim=True).values
    hi = flat.max(dim=1, keepdim=True).values
    rng = hi - lo
    out = torch.where(rng > eps, (flat - lo) / rng.clamp_min(eps), torch.zeros_like(flat))
    return out.reshape(maps.shape)


@contextlib.contextmanager
def _restore_module_state(net: nn.Module) -> Iterator[None]:
    """Undo what ``ModelWithHooks`` leaves behind: hooks, ``inplace`` flags, parameter ``.grad``, train mode."""
    before = {}
    for mod in net.modules():
        before[mod] = (
            {k: set(getattr(mod, k).keys()) for k in _HOOK_DICTS if hasattr(mod, k)},
            mod.__dict__.get("inplace"),
            getattr(mod, "_is_full_backward_hook", None),
        )
    grads = [(p, p.grad) for p in net.parameters()]
    training = net.training
    try:
        yield
    finally:
        for mod, (hooks, inplace, full_bw) in before.items():
            for k, keys in hooks.items():
                reg = getattr(mod, k)
                for key in [key for key in reg.keys() if key not in keys]:
                    del reg[key]
            if inplace is not None:
                mod.__dict__["inplace"] = inplace
            if hasattr(mod, "_is_full_backward_hook"):
                mod._is_full_backward_hook = full_bw
        for p, g in grads:
            p.grad = g
        net.train(training)


def _class_indices(class_idx: int | Sequence[int] | torch.Tensor | None, logits: torch.Tensor) -> torch.Tensor:
    b, n_classes = logits.shape[0], logits.shape[1]
    if class_idx is None:
        return logits.argmax(dim=1).cpu()
    idx = torch.as_tensor(class_idx).reshape(-1).cpu()
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise TypeError(f"class_idx must be an int or integer sequence, got {class_idx!r}.")
    if idx.numel() == 1:
        idx = idx.expand(b)
    if idx.numel() != b:
        raise ValueError(f"class_idx has {idx.numel()} entries but the batch has {b} images.")
    if idx.min() < 0 or idx.max() >= n_classes:
        raise ValueError(f"class_idx {idx.tolist()} out of range for a network with {n_classes} outputs.")
    return idx.long()


class _Features(nn.Module):
    """``net.forward_features`` as a module, so that its output can be hooked."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)  # type: ignore[operator]


class _SplitNet(nn.Module):
    """``forward_head(features(x))``: the network with its pre-pooling feature map exposed as ``features``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.features = _Features(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features.net.forward_head(self.features(x))  # type: ignore[operator]


def _probe_forward(net: nn.Module, x: torch.Tensor, target: str) -> tuple[torch.Tensor, bool, str | None]:
    """Run ``net(x)`` without grad; report whether module ``target`` ran and the last of its descendants that ran."""
    fired: list[str] = []
    handles = []
    for name, mod in net.named_modules():
        if name == target or name.startswith(target + "."):
            handles.append(mod.register_forward_hook(lambda m, i, o, name=name: fired.append(name)))
    try:
        with torch.no_grad():
            logits = net(x)
    finally:
        for h in handles:
            h.remove()
    last_child = next((n for n in reversed(fired) if n != target and n.count(".") == target.count(".") + 1), None)
    return logits, target in fired, last_child


def grad_cam(
    net: nn.Module,
    x: torch.Tensor,
    class_idx: int | Sequence[int] | torch.Tensor | None = None,
    target_layers: str = "layer4",
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) of ``net`` for ``x``, upsampled to ``x``'s size and scaled to [0, 1].

    Runs ``monai.visualize.GradCAM`` on the layer ``target_layers`` (for the ResNets: ``"layer4"``, the last
    conv stage before global pooling), in eval mode, once per distinct target class in the batch (MONAI's
    ``GradCAM`` scores one class for the whole batch). Afterwards the network is as before: its hooks,
    train/eval mode and parameter gradients are restored.

    Networks that run a stage's blocks one by one (never calling the stage module, as
    :class:`~mstl_monai.networks.nets.AttentiveResNet` does to interleave its non-local blocks) and expose
    ``forward_features``/``forward_head`` are handled for the last stage: ``"layer4"`` (or ``"features"``)
    then means the output of ``forward_features``, i.e. the map entering global pooling, including a
    non-local block that follows the last residual block.

    .. code-block:: python

        heat = grad_cam(net, images)  # (B, 1, H, W), explains each image's predicted class
        heat_covid = grad_cam(net, images, class_idx=1)

    Args:
        net: a classifier whose forward returns logits ``(B, num_classes)``.
        x: input batch ``(B, C, *spatial)``, on ``net``'s device.
        class_idx: class to explain: ``None`` (each image's argmax), one int for all, or one per image.
        target_layers: name of the module (as in ``net.named_modules()``) whose output is explained, or
            ``"features"`` for the output of ``net.forward_features``.

    Returns:
        float32 tensor ``(B, 1, *spatial)`` in [0, 1] on ``x``'s device (each map scaled by its own min/max;
        an all-zero map stays 0).

    Raises:
        ValueError: when ``target_layers`` is not a module of ``net`` (or is never run by its forward), ``x`` has
            no batch/channel dims, the network output is not ``(B, num_classes)``, or ``class_idx`` is out of range.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        raise ValueError(f"x must be a tensor (B, C, *spatial), got {getattr(x, 'shape', type(x))}.")
    has_split = callable(getattr(net, "forward_features", None)) and callable(getattr(net, "forward_head", None))
    modules = dict(net.named_modules())
    if target_layers not in modules and not (target_layers == "features" and has_split):
        top = [n for n, _ in net.named_children()]
        raise ValueError(f"target_layers {target_layers!r} is not a module of {type(net).__name__}; top-level: {top}.")
    out = torch.zeros((x.shape[0], 1, *x.shape[2:]), dtype=torch.float32, device=x.device)
    with _restore_module_state(net), torch.inference_mode(False), torch.enable_grad():
        net.eval()
        xin = x.detach().clone()
        if target_layers == "features" and target_layers not in modules:
            with torch.no_grad():
                logits = net(xin)
            ran = False
        else:
            logits, ran, last_child = _probe_forward(net, xin, target_layers)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2 or logits.shape[0] != x.shape[0]:
            raise ValueError(
                f"grad_cam needs a network returning logits (B, num_classes), got {getattr(logits, 'shape', logits)}."
            )
        cam_net, cam_layer = net, target_layers
        if not ran:
            last_stage = [n for n, _ in net.named_children() if n.startswith("layer")][-1:]
            if has_split and target_layers in ["features"] + last_stage:
                cam_net, cam_layer = _SplitNet(net), "features"
            else:
                hint = f"; try {last_child!r}" if last_child else ""
                raise ValueError(
                    f"module {target_layers!r} of {type(net).__name__} is never called by its forward, so Grad-CAM "
                    f"cannot hook it{hint}."
                )
        classes = _class_indices(class_idx, logits)
        cam = GradCAM(nn_module=cam_net, target_layers=cam_layer, postprocessing=minmax_normalize)
        for c in torch.unique(classes).tolist():
            sel = torch.nonzero(classes == c).reshape(-1).to(x.device)
            xs = xin.index_select(0, sel).requires_grad_(True)
            out[sel] = cam(xs, class_idx=int(c)).detach().float().to(x.device)
    return out
