import math
import pickle

import pytest
import torch

from domainft.core.schedules import (base_multiplier, group_lr_lambdas, resolve_warmup_steps,
                                     thaw_multiplier)


def test_warmup_never_zero_and_reaches_one():
    values = [base_multiplier(s, total_steps=100, warmup_steps=4, schedule="linear") for s in range(5)]
    assert values == pytest.approx([1 / 5, 2 / 5, 3 / 5, 4 / 5, 1.0])
    assert base_multiplier(0, total_steps=100, warmup_steps=0, schedule="linear") == 1.0


def test_linear_decay_to_floor():
    kw = dict(total_steps=10, warmup_steps=2, schedule="linear")
    assert base_multiplier(2, **kw) == 1.0
    assert base_multiplier(6, **kw) == pytest.approx(0.5)
    assert base_multiplier(10, **kw) == 0.0
    assert base_multiplier(10, min_lr_ratio=0.1, **kw) == pytest.approx(0.1)
    assert base_multiplier(6, min_lr_ratio=0.1, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert base_multiplier(50, **kw) == 0.0  # clamped past the end
    steps = [base_multiplier(s, **kw) for s in range(2, 11)]
    assert steps == sorted(steps, reverse=True)


def test_cosine_and_constant():
    kw = dict(total_steps=12, warmup_steps=2)
    assert base_multiplier(2, schedule="cosine", **kw) == 1.0
    assert base_multiplier(7, schedule="cosine", **kw) == pytest.approx(0.5)
    assert base_multiplier(4, schedule="cosine", **kw) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)))
    assert base_multiplier(12, schedule="cosine", min_lr_ratio=0.2, **kw) == pytest.approx(0.2)
    assert base_multiplier(11, schedule="constant", **kw) == 1.0
    assert base_multiplier(0, schedule="constant", **kw) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="schedule"):
        base_multiplier(0, schedule="step", **kw)


def test_thaw_multiplier():
    assert thaw_multiplier(5, None, 3) == 0.0
    assert thaw_multiplier(0, 0, 3) == 1.0
    assert [thaw_multiplier(s, 4, 3) for s in range(3, 9)] == pytest.approx([0, 1 / 3, 2 / 3, 1, 1, 1])
    assert thaw_multiplier(4, 4, 0) == 1.0  # no thaw warmup: full LR at once


def test_resolve_warmup_steps():
    assert resolve_warmup_steps(100, 0.1) == 10
    assert resolve_warmup_steps(15, 0.1) == 2  # ceil
    assert resolve_warmup_steps(100, 0.1, warmup_steps=7) == 7
    assert resolve_warmup_steps(5, 0.0, warmup_steps=50) == 5  # capped
    with pytest.raises(ValueError):
        resolve_warmup_steps(0, 0.1)


def test_group_lambdas_drive_lambdalr():
    p1, p2, p3 = (torch.nn.Parameter(torch.zeros(2)) for _ in range(3))
    opt = torch.optim.SGD([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 0.5}, {"params": [p3], "lr": 0.25}])
    lambdas = group_lr_lambdas([0, 3, None], total_steps=10, warmup_steps=2, schedule="linear",
                               min_lr_ratio=0.0, thaw_warmup_steps=2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in opt.param_groups])  # LR of the next update
        opt.step()
        sched.step()
    for step, (lr1, lr2, lr3) in enumerate(seen):
        base = base_multiplier(step, 10, 2, "linear")
        assert lr1 == pytest.approx(1.0 * base)
        assert lr2 == pytest.approx(0.5 * base * thaw_multiplier(step, 3, 2))
        assert lr3 == 0.0
    assert seen[2][1] == 0.0 and seen[3][1] == pytest.approx(0.5 * base_multiplier(3, 10, 2, "linear") / 2)
    # small, picklable (no closure over the optimizer or the model)
    assert pickle.loads(pickle.dumps(lambdas[1]))(4) == lambdas[1](4)
