# Copyright (c) mstl-monai contributors
# Licensed under the Apache License, Version 2.0 (see bundle/LICENSE).
from __future__ import annotations

import pytest
import torch

from mstl_monai.engines import build_lr_scheduler


def _lrs(schedule, **kw):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    sched = build_lr_scheduler(opt, schedule, **kw)
    out = []
    for _ in range(kw.get("epochs", 6)):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out, opt.param_groups[0]["lr"]


def test_step_schedule_divides_at_the_milestones():
    lrs, _ = _lrs("step", milestones=[2, 4], epochs=6)
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_cosine_schedule_falls_to_zero_over_the_epochs():
    lrs, last = _lrs("cosine", epochs=10)
    assert lrs[0] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert last == pytest.approx(0.0, abs=1e-12)


def test_unknown_schedule_is_named():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="'cosin'"):
        build_lr_scheduler(opt, "cosin")
