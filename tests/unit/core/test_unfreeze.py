from collections import OrderedDict

import pytest
import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutput

from domainft.core.layers import LayerMap, build_layer_map
from domainft.core.param_groups import build_param_groups
from domainft.core.schedules import base_multiplier, group_lr_lambdas, thaw_multiplier
from domainft.core.unfreeze import (GradientStop, freeze_never_trained, lowest_trainable_depth, thaw_events,
                                    thaw_schedule)

L = 4


# ---------------------------------------------------------------- the schedule as data

def test_thaw_schedule_gradual():
    assert thaw_schedule(L, 1, steps_per_epoch=10, every_epochs=0.5) == {0: 0, 1: 0, 2: 5, 3: 10, 4: 15, 5: 20}
    # every_steps wins over every_epochs
    assert thaw_schedule(L, 1, steps_per_epoch=10, every_epochs=2.0, every_steps=3) == \
        {0: 0, 1: 0, 2: 3, 3: 6, 4: 9, 5: 12}
    assert thaw_schedule(L, 0, steps_per_epoch=7, every_epochs=1.0) == {0: 0, 1: 7, 2: 14, 3: 21, 4: 28, 5: 35}
    assert thaw_schedule(L, L, steps_per_epoch=7, every_epochs=1.0) == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 7}
    assert thaw_schedule(L, L + 1, steps_per_epoch=7, every_epochs=1.0) == {d: 0 for d in range(L + 2)}
    # a tiny interval still advances one step per depth
    assert thaw_schedule(L, 2, steps_per_epoch=10, every_epochs=0.01) == {0: 0, 1: 0, 2: 0, 3: 1, 4: 2, 5: 3}


def test_thaw_schedule_off():
    assert thaw_schedule(L, 2, steps_per_epoch=10, every_epochs=0.0) == {d: 0 for d in range(L + 2)}


def test_thaw_schedule_train_top_fraction():
    counts = {0: 10, 1: 20, 2: 20, 3: 20, 4: 20, 5: 110}  # total 200
    none3 = {3: None, 4: None, 5: None}
    assert thaw_schedule(L, 2, 10, every_epochs=1.0, train_top_fraction=0.2, param_counts=counts) == \
        {0: 0, 1: 0, 2: 0, **none3}  # 10 + 20 < 40 <= 10 + 20 + 20
    assert thaw_schedule(L, 2, 10, train_top_fraction=0.25, param_counts=counts) == {0: 0, 1: 0, 2: 0, **none3}
    assert thaw_schedule(L, 2, 10, train_top_fraction=0.05, param_counts=counts) == \
        {0: 0, 1: None, 2: None, **none3}  # the head alone holds 5 %
    assert thaw_schedule(L, 2, 10, train_top_fraction=0.01, param_counts=counts)[0] == 0  # head always in
    assert thaw_schedule(L, 2, 10, train_top_fraction=1.0, param_counts=counts) == {d: 0 for d in range(L + 2)}
    with pytest.raises(ValueError, match="param_counts"):
        thaw_schedule(L, 2, 10, train_top_fraction=0.5)


def test_lowest_trainable_and_events():
    sched = {0: 0, 1: 0, 2: 3, 3: 6, 4: None, 5: None}
    assert [lowest_trainable_depth(sched, s) for s in range(8)] == [1, 1, 1, 2, 2, 2, 3, 3]
    assert thaw_events(sched, -1, 0) == [0, 1]
    assert thaw_events(sched, 0, 3) == [2]
    assert thaw_events(sched, 3, 5) == []
    assert thaw_events(sched, 2, 100) == [2, 3]


# ---------------------------------------------------------------- training with plain torch

def _train(model, lm, sched, steps, batch, stop=True, thaw_warmup_steps=2, total_steps=20, weight_decay=0.01):
    """The loop as the real one runs it: set the cut, forward, backward, step. Returns per-step records."""
    groups = build_param_groups(model, lm, lr=1e-2, layer_decay=0.8, weight_decay=weight_decay)
    opt = torch.optim.AdamW(groups)
    lambdas = group_lr_lambdas([sched[g["depth"]] for g in groups], total_steps=total_steps, warmup_steps=2,
                               schedule="linear", min_lr_ratio=0.0, thaw_warmup_steps=thaw_warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambdas)
    gs = GradientStop(model, lm) if stop else None
    records = []
    for step in range(steps):
        if gs is not None:
            gs.set_lowest_trainable(lowest_trainable_depth(sched, step))
        lrs = {(g["depth"], g["decay"]): g["lr"] for g in opt.param_groups}
        model(**batch).loss.backward()
        grads = {n: p.grad is not None for n, p in model.named_parameters()}
        opt.step()
        scheduler.step()
        opt.zero_grad(set_to_none=True)
        records.append({"lrs": lrs, "has_grad": grads})
    if gs is not None:
        gs.remove()
    return records


def _snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_frozen_layers_untouched_then_thaw(make_model, make_batch):
    model = make_model("bert", num_layers=L)
    model.eval()  # no dropout: the only change between steps is the optimizer's
    lm = build_layer_map(model)
    sched = thaw_schedule(L, initial_layers=1, steps_per_epoch=10, every_steps=3)  # depth 2 thaws at step 3
    batch = make_batch()
    before = _snapshot(model)

    # Steps 0, 1, 2: only head and the top layer train.
    records = _train(model, lm, sched, steps=3, batch=batch)
    after = _snapshot(model)
    for name, depth in lm.depth.items():
        if depth >= 2:
            assert torch.equal(before[name], after[name]), name
            assert all(not r["has_grad"][name] for r in records), name
        else:
            assert all(r["has_grad"][name] for r in records), name
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert not torch.equal(before["bert.encoder.layer.3.output.dense.weight"],
                           after["bert.encoder.layer.3.output.dense.weight"])


def test_thawed_layer_trains_with_its_own_ramp(make_model, make_batch):
    model = make_model("bert", num_layers=L)
    model.eval()
    lm = build_layer_map(model)
    sched = thaw_schedule(L, initial_layers=1, steps_per_epoch=10, every_steps=3)
    before = _snapshot(model)
    records = _train(model, lm, sched, steps=6, batch=make_batch(), thaw_warmup_steps=2, total_steps=20)
    after = _snapshot(model)
    for name in lm.params_at(2):  # thawed at step 3
        assert not torch.equal(before[name], after[name]), name
        assert [r["has_grad"][name] for r in records] == [False, False, False, True, True, True]
    for name in lm.params_at(3) + lm.params_at(4) + lm.params_at(5):  # thaw at 6, 9, 12
        assert torch.equal(before[name], after[name]), name
    peak2 = 1e-2 * 0.8 ** 2
    lrs2 = [r["lrs"][(2, True)] for r in records]
    expected = [peak2 * base_multiplier(s, 20, 2, "linear") * thaw_multiplier(s, 3, 2) for s in range(6)]
    assert lrs2 == pytest.approx(expected)
    assert lrs2[:3] == [0.0, 0.0, 0.0]
    assert lrs2[3] == pytest.approx(peak2 * base_multiplier(3, 20, 2, "linear") * 0.5)  # half-way up its ramp
    assert lrs2[4] == pytest.approx(peak2 * base_multiplier(4, 20, 2, "linear"))  # full: ramp done
    # a group trainable from the start follows the global schedule only
    assert [r["lrs"][(1, True)] for r in records] == pytest.approx(
        [1e-2 * 0.8 * base_multiplier(s, 20, 2, "linear") for s in range(6)])


# torch warns that the top layer's hook fires on output gradients only: its input is detached, as intended.
@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_no_backward_through_frozen_layers(make_model, make_batch):
    model = make_model("bert", num_layers=L)
    lm = build_layer_map(model)
    modules = dict(model.named_modules())
    calls = {d: 0 for d in range(1, L + 2)}
    for depth, name in lm.block_module_names.items():
        def hook(module, grad_in, grad_out, depth=depth):
            calls[depth] += 1
        modules[name].register_full_backward_hook(hook)
    sched = thaw_schedule(L, initial_layers=1, steps_per_epoch=10, every_steps=100)
    _train(model, lm, sched, steps=2, batch=make_batch())
    assert calls[1] == 2  # the top layer: one backward per step
    assert calls[2] == calls[3] == calls[4] == 0  # frozen encoder layers never run backward
    # without the stop, backward runs through every layer (the hook counts can fail)
    calls.update({d: 0 for d in calls})
    _train(model, lm, sched, steps=1, batch=make_batch(), stop=False)
    assert all(calls[d] == 1 for d in range(1, L + 1))


def test_cut_per_family(family, make_model, make_batch):
    """For every family, the cut leaves exactly the frozen depths without gradients."""
    model = make_model(family, num_layers=L)
    lm = build_layer_map(model)
    batch = make_batch()
    with GradientStop(model, lm) as gs:
        for lowest in (0, 2, L, L + 1):
            gs.set_lowest_trainable(lowest)
            model.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            for name, p in model.named_parameters():
                assert (p.grad is not None) == (lm.depth[name] <= lowest), (lowest, name)
    # removed: everything gets gradients again
    model.zero_grad(set_to_none=True)
    model(**batch).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_lr_zero_keeps_weights_exact_even_with_gradients(make_model, make_batch):
    """The ZeRO path: a frozen group may receive (zero-filled or real) gradients; LR 0 must not move it,
    weight decay included."""
    model = make_model("bert", num_layers=2)
    lm = build_layer_map(model)
    sched = {0: 0, 1: 0, 2: 10, 3: 10}
    before = _snapshot(model)
    records = _train(model, lm, sched, steps=2, batch=make_batch(), stop=False, weight_decay=0.1)
    assert all(r["has_grad"]["bert.embeddings.word_embeddings.weight"] for r in records)
    after = _snapshot(model)
    for name in lm.params_at(2) + lm.params_at(3):
        assert torch.equal(before[name], after[name]), name


def test_train_top_fraction_freezes_for_good(make_model, make_batch):
    model = make_model("bert", num_layers=L)
    lm = build_layer_map(model)
    counts = lm.param_counts(model)  # {0: 1155, 1..4: 8544, 5: 19712}
    sched = thaw_schedule(L, 2, 10, every_epochs=1.0, train_top_fraction=0.3, param_counts=counts)
    assert sched == {0: 0, 1: 0, 2: 0, 3: None, 4: None, 5: None}
    frozen = freeze_never_trained(model, lm, sched)
    assert sorted(frozen) == sorted(lm.params_at(3) + lm.params_at(4) + lm.params_at(5))
    groups = build_param_groups(model, lm, lr=1e-3, layer_decay=0.9)
    assert {g["depth"] for g in groups} == {0, 1, 2}
    before = _snapshot(model)
    records = _train(model, lm, sched, steps=2, batch=make_batch())
    after = _snapshot(model)
    for name in frozen:
        assert torch.equal(before[name], after[name]) and not records[-1]["has_grad"][name]
    assert not torch.equal(before["bert.encoder.layer.2.output.dense.weight"],
                           after["bert.encoder.layer.2.output.dense.weight"])


# ---------------------------------------------------------------- output shapes of blocks

class _Emb(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.lin = kind, nn.Linear(4, 4)

    def forward(self, x):
        h = self.lin(x)
        if self.kind == "tensor":
            return h
        if self.kind == "tuple":
            return (h, h * 2)
        if self.kind == "list":
            return [h, None]
        if self.kind == "dict":
            return OrderedDict(hidden=h)
        return BaseModelOutput(last_hidden_state=h, hidden_states=(h, h))


class _Toy(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind, self.emb, self.layer = kind, _Emb(kind), nn.Linear(4, 1)

    def forward(self, x):
        out = self.emb(x)
        if self.kind == "tensor":
            h = out
        elif self.kind in ("tuple", "list"):
            h = out[0]
        elif self.kind == "dict":
            h = out["hidden"]
        else:
            h = out.last_hidden_state + out.hidden_states[1]  # both the attribute and the nested tuple
        return self.layer(h).sum()


@pytest.mark.parametrize("kind", ["tensor", "tuple", "list", "dict", "model_output"])
def test_detaches_any_output_structure(kind):
    model = _Toy(kind)
    lm = LayerMap(family="toy", num_layers=1,
                  depth={"emb.lin.weight": 2, "emb.lin.bias": 2, "layer.weight": 1, "layer.bias": 1},
                  block_module_names={1: "layer", 2: "emb"}, boundary_module_names={1: ("layer",), 2: ("emb",)})
    gs = GradientStop(model, lm)
    gs.set_lowest_trainable(1)
    model(torch.randn(3, 4)).backward()
    assert model.emb.lin.weight.grad is None and model.layer.weight.grad is not None
    gs.set_lowest_trainable(2)
    model(torch.randn(3, 4)).backward()
    assert model.emb.lin.weight.grad is not None
    with pytest.raises(ValueError):
        gs.set_lowest_trainable(3)


def test_grad_mode_is_restored_when_a_frozen_block_raises(make_model, make_batch):
    """A frozen block runs with autograd off; if it raises (bad input, OOM), grad mode must come back,
    or every later forward in the process silently builds no graph."""
    model = make_model("bert", num_layers=4)
    lmap = build_layer_map(model)
    stop = GradientStop(model, lmap)
    stop.set_lowest_trainable(1)  # layers below the top one are frozen
    bottom = model.bert.encoder.layer[0]

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    bottom.forward = broken
    with pytest.raises(RuntimeError, match="boom"):
        model(**make_batch())
    assert torch.is_grad_enabled()
