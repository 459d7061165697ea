# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
"""Guards against training that has diverged: a non-finite loss, gradient or weight stops the run with an error.

Ignite's ``TerminateOnNan`` stops a run whose output is NaN, but the stop looks like success: the run ends with
exit code 0, the pipeline marks the stage done and MONAI Label reports the ``/train`` as ``DONE``. :class:`NonFiniteGuard`
uses its check and turns the stop into a :class:`NonFiniteError`, a one-line message naming the stage, the run
folder, the epoch and iteration and the likely remedies. It checks

- the loss when the step has computed it, before the backward pass (MONAI's ``IterationEvents.LOSS_COMPLETED``,
  which MONAI's ``SupervisedTrainer``, the MAG-SD step and :class:`~mstl_monai.engines.SSTLTrainer` fire);
- the gradients after the backward pass, before the optimiser step (``BACKWARD_COMPLETED``): a finite loss can
  still give NaN gradients;
- the network's weights at the end of every epoch, before validation and the checkpoint savers run.

So the run stops before a NaN reaches the weights, and the checkpoints on disk stay those of the last good epoch;
:class:`~mstl_monai.handlers.training.AtomicCheckpointSaver` also refuses to write non-finite tensors (and writes no
``model_final.pt`` when the run stops on this error).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from ignite.handlers import TerminateOnNan
from monai.engines.utils import IterationEvents

if TYPE_CHECKING:
    from ignite.engine import Engine

__all__ = ["NonFiniteError", "NonFiniteGuard", "non_finite_tensors"]

#: what usually makes a stage diverge, and what to change (appended to every :class:`NonFiniteError`)
REMEDIES = (
    "likely remedies: a lower learning_rate, --amp False (bf16 autocast), a larger batch_size or image_size "
    "(BatchNorm over a batch of 2 on res5's 1x1 map at 32 px diverges), --freeze_bn True when finetuning on a "
    "handful of images (MONAI Label's /train does)"
)


class NonFiniteError(FloatingPointError):
    """A training stage met a NaN or infinite loss, gradient or weight; nothing non-finite was saved."""


def _loss_and_terms(output: Any) -> dict[str, Any]:
    """The loss terms (scalar ``*loss*`` entries, ``loss`` first) of a step's output: a dict, or MONAI's decollated
    list of dicts; any other output is taken as the loss itself."""
    if isinstance(output, (list, tuple)) and output and isinstance(output[0], Mapping):
        output = output[0]
    if not isinstance(output, Mapping):
        return {"loss": output}
    terms = {}
    for k, v in output.items():
        if "loss" not in str(k):
            continue
        if isinstance(v, numbers.Number) or (isinstance(v, torch.Tensor) and v.numel() == 1):
            terms[str(k)] = v
    if "loss" in terms:
        terms = {"loss": terms.pop("loss"), **terms}
    return terms


def _flatten(prefix: str, obj: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from _flatten(f"{prefix}.{k}" if prefix else str(k), v)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _flatten(f"{prefix}.{i}" if prefix else str(i), v)
    else:
        yield prefix, obj


def non_finite_tensors(obj: Any, limit: int = 3) -> list[str]:
    """Dotted names of the (first ``limit``) floating-point tensors in ``obj`` (a state dict, a checkpoint's dict
    of state dicts, nested lists) that hold NaN or infinity."""
    bad = []
    for name, t in _flatten("", obj):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(name)
            if len(bad) >= limit:
                break
    return bad


class NonFiniteGuard(TerminateOnNan):
    """Ignite's ``TerminateOnNan`` whose stop is an error: a non-finite loss, gradient or weight raises
    :class:`NonFiniteError` (the process exits non-zero, a pipeline stage is reported failed and never done).

    Attach it to a trainer (``train#handlers`` of the bundle's configs); attached to a validator (a MONAI
    ``Evaluator``, ``validate#handlers``) it checks the predictions instead: weights that are finite but so large
    that the forward pass with the running statistics overflows. The message is one line::

        non-finite training loss (loss=nan) in stage finetune, run runs/finetune, at epoch 3, iteration 57 (2 of
        27 in the epoch): stopped before the optimiser step; the checkpoints in runs/finetune/models are those of
        the last finite epoch; likely remedies: ...

    Args:
        stage: the stage's name (``finetune``, ``stl_m``, ``sstl_m``, ...), for the message.
        run_dir: the run folder, for the message.
        network: the network whose gradients (after each backward pass) and weights (at the end of each epoch,
            before validation and the savers) are checked; None: the engine's ``network``.
        ckpt_dir: where the run's checkpoints are, for the message (default ``<run_dir>/models``).
        output_transform: engine output -> the loss (or a dict of scalar terms whose ``loss`` entry is checked and
            the others reported); default: the output's scalar entries.
        check_grads: check the gradients before each optimiser step (skipped under a CUDA ``GradScaler``, which
            skips non-finite steps itself).
        remedies: the advice at the end of the message.
    """

    def __init__(
        self,
        stage: str = "",
        run_dir: str | os.PathLike = "",
        network: torch.nn.Module | None = None,
        ckpt_dir: str | os.PathLike | None = None,
        output_transform: Callable[[Any], Any] = _loss_and_terms,
        check_grads: bool = True,
        remedies: str = REMEDIES,
    ) -> None:
        super().__init__(output_transform=output_transform)
        self.stage = str(stage)
        self.run_dir = os.fspath(run_dir)
        self.ckpt_dir = os.fspath(ckpt_dir) if ckpt_dir else (os.path.join(self.run_dir, "models") if self.run_dir else "")
        self.network = network
        self.check_grads = bool(check_grads)
        self.remedies = remedies

    def attach(self, engine: Engine) -> None:
        """Attach before the validation handler and the checkpoint savers (the bundle configs list it first), so the
        weights are checked at the end of an epoch before they are validated or saved."""
        from ignite.engine import Events
        from monai.engines import Evaluator, Workflow

        if isinstance(engine, Evaluator):  # a validator: its predictions, before its metrics and savers
            engine.add_event_handler(Events.ITERATION_COMPLETED, self.check_predictions)
            return
        if isinstance(engine, Workflow):  # MONAI's engines fire IterationEvents: the loss before the backward pass
            engine.add_event_handler(IterationEvents.LOSS_COMPLETED, self)
            if self.check_grads:
                engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.check_gradients)
        else:  # a plain ignite engine: its output, after the step
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.check_weights)

    def _network(self, engine: Engine) -> torch.nn.Module | None:
        return self.network if self.network is not None else getattr(engine, "network", None)

    def _where(self, engine: Engine, iteration: str = "iteration") -> str:
        s = engine.state
        where = f" in stage {self.stage}" if self.stage else ""
        if self.run_dir:
            where += f", run {self.run_dir},"
        epoch_length = s.epoch_length or 0
        in_epoch = f" ({(s.iteration - 1) % epoch_length + 1} of {epoch_length} in the epoch)" if epoch_length else ""
        return f"{where} at epoch {s.epoch}, {iteration} {s.iteration}{in_epoch}"

    def _kept(self) -> str:
        return f"the checkpoints in {self.ckpt_dir} are those of the last finite epoch" if self.ckpt_dir else (
            "no checkpoint was written with these weights"
        )

    def fail(self, engine: Engine, what: str, stopped: str, iteration: str = "iteration") -> None:
        """Raise :class:`NonFiniteError` for ``what`` (e.g. ``"training loss (loss=nan)"``), one line."""
        where = self._where(engine, iteration)
        raise NonFiniteError(f"non-finite {what}{where}: {stopped}; {self._kept()}; {self.remedies}")

    def __call__(self, engine: Engine) -> None:
        stopping = engine.should_terminate
        super().__call__(engine)  # TerminateOnNan: warns and asks the engine to stop
        if engine.should_terminate and not stopping:
            engine.should_terminate = False
            terms = _loss_and_terms(self._output_transform(engine.state.output))
            text = ", ".join(f"{k}={float(torch.as_tensor(v).detach()):.4g}" for k, v in terms.items())
            self.fail(engine, f"training loss ({text})", "stopped before the backward pass")

    def check_predictions(self, engine: Engine) -> None:
        """A validator's ``pred`` (MONAI's output, decollated or not) are finite, else raise: the weights diverged."""
        output = engine.state.output
        items = output if isinstance(output, (list, tuple)) else [output]
        preds = {str(i): d.get("pred") for i, d in enumerate(items) if isinstance(d, Mapping)}
        bad = non_finite_tensors(preds, limit=1)
        if bad:
            self.fail(engine, "validation predictions (the weights diverged in training)",
                      "stopped before the validation metrics, the decision threshold and the best-model saver",
                      iteration="validation iteration")

    def check_gradients(self, engine: Engine) -> None:
        """After the backward pass: every gradient is finite (their total norm), else raise naming the parameters."""
        net = self._network(engine)
        if net is None or (getattr(engine, "scaler", None) is not None and getattr(engine, "amp", False)):
            return
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        if not grads:
            return
        if math.isfinite(float(torch.nn.utils.get_total_norm([g.detach() for g in grads]))):
            return
        bad = non_finite_tensors({n: p.grad for n, p in net.named_parameters() if p.grad is not None})
        self.fail(engine, f"gradients (of {', '.join(bad)}) from a finite loss", "stopped before the optimiser step")

    def check_weights(self, engine: Engine) -> None:
        """At the end of an epoch, before validation and the savers: every weight and buffer is finite."""
        net = self._network(engine)
        if net is None:
            return
        bad = non_finite_tensors(net.state_dict())
        if bad:
            self.fail(engine, f"weights (in {', '.join(bad)})", "stopped before validation and saving")
