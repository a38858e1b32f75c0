"""Real DeepSpeed on CPU (gloo, world size 1), ZeRO 0-3: layer-wise LR and gradual unfreezing.

No Ray here: this pins down the engine-level guarantees; test_train.py covers 2 workers under Ray.
"""
import os
import socket

import pytest
import torch
import torch.distributed as dist

from domainft.core import (GradientStop, build_layer_map, build_param_groups, freeze_never_trained,
                           group_lr_lambdas, lowest_trainable_depth, thaw_events, thaw_schedule)
from domainft.engine.build import build_engine
from tiny_models import tiny_model
from domainft.engine.ds_config import build_ds_config

STEPS_PER_EPOCH = 4
THAW_WARMUP = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def process_group():
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
    if not dist.is_initialized():
        dist.init_process_group("gloo", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def _model():
    return tiny_model("bert", 4, 3, seed=0, vocab_size=64, max_position_embeddings=32)


def _batch(step: int):
    g = torch.Generator().manual_seed(step)
    ids = torch.randint(1, 64, (4, 12), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 0] % 3}


def _gathered(engine, name):
    """Full copy of one parameter (ZeRO-3 partitions weights: gather to read them)."""
    import deepspeed

    p = dict(engine.module.named_parameters())[name]
    with deepspeed.zero.GatheredParameters([p]):
        return p.detach().clone()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_llrd_and_gradual_unfreezing_under_zero(stage):
    model = _model()
    lmap = build_layer_map(model)
    # head + top layer trainable; one more layer every epoch (4 optimizer steps).
    schedule = thaw_schedule(lmap.num_layers, initial_layers=1, steps_per_epoch=STEPS_PER_EPOCH, every_epochs=1)
    groups = build_param_groups(model, lmap, lr=1e-3, layer_decay=0.5, head_lr_mult=1.0, weight_decay=0.01)
    total = 3 * STEPS_PER_EPOCH
    lambdas = group_lr_lambdas([schedule[g["depth"]] for g in groups], total, 0, "constant", 0.0, THAW_WARMUP)
    stop = GradientStop(model, lmap)
    stop.set_lowest_trainable(lowest_trainable_depth(schedule, 0))
    ds = build_ds_config(stage, "fp32", micro_batch=4, grad_accum=1, world_size=1, max_grad_norm=1.0)
    engine = build_engine(model, groups, lambdas, ds)

    names = [n for n, _ in engine.module.named_parameters()]
    layer = lambda i: next(n for n in names if f"encoder.layer.{i}.attention.self.query.weight" in n)  # noqa: E731
    top, second, third = layer(3), layer(2), layer(1)
    emb = next(n for n in names if "word_embeddings" in n)
    start = {n: _gathered(engine, n) for n in (top, second, third, emb)}

    backward_calls = {i: 0 for i in range(4)}
    for i, blk in enumerate(engine.module.bert.encoder.layer):
        blk.register_full_backward_hook(lambda m, gi, go, i=i: backward_calls.__setitem__(i, backward_calls[i] + 1))

    lrs_seen = []
    for step in range(STEPS_PER_EPOCH):  # epoch 1: only head + layer 3
        loss = engine(**_batch(step)).loss
        engine.backward(loss)
        engine.step()
        lrs_seen.append(engine.lr_scheduler.get_last_lr())
    assert engine.global_steps == STEPS_PER_EPOCH
    # frozen groups: bit-identical, and no backward ran below the lowest trainable layer
    for n in (second, third, emb):
        assert torch.equal(_gathered(engine, n), start[n]), f"ZeRO-{stage}: frozen {n} changed"
    assert backward_calls[3] > 0 and backward_calls[2] == backward_calls[1] == backward_calls[0] == 0
    assert not torch.equal(_gathered(engine, top), start[top]), f"ZeRO-{stage}: trainable top layer did not train"

    # the peak LRs decay by depth: head 1e-3, top layer 5e-4; frozen groups at 0
    by_depth = {}
    for g, lr in zip(groups, lrs_seen[0]):
        by_depth.setdefault(g["depth"], lr)
    assert by_depth[0] == pytest.approx(1e-3) and by_depth[1] == pytest.approx(5e-4)
    assert by_depth[2] == by_depth[3] == 0.0

    # epoch 2: layer 2 (depth 2) thaws at step 4 with its own warmup
    assert thaw_events(schedule, STEPS_PER_EPOCH - 1, STEPS_PER_EPOCH) == [2]
    stop.set_lowest_trainable(lowest_trainable_depth(schedule, STEPS_PER_EPOCH))
    lr2 = []
    for step in range(STEPS_PER_EPOCH, 2 * STEPS_PER_EPOCH):
        loss = engine(**_batch(step)).loss
        engine.backward(loss)
        engine.step()
        lr2.append(next(lr for g, lr in zip(groups, engine.lr_scheduler.get_last_lr()) if g["depth"] == 2))
    assert not torch.equal(_gathered(engine, second), start[second]), f"ZeRO-{stage}: thawed layer did not train"
    assert torch.equal(_gathered(engine, third), start[third])
    assert backward_calls[2] > 0 and backward_calls[1] == 0
    peak2 = 1e-3 * 0.5**2
    assert lr2[0] == pytest.approx(peak2 * 2 / THAW_WARMUP) and lr2[-1] == pytest.approx(peak2)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage", [2, 3])
def test_train_top_fraction_never_trains_the_rest(stage):
    """"Train only the top 30%": the rest never enters the optimizer (no state) and never changes."""
    model = _model()
    lmap = build_layer_map(model)
    counts = lmap.param_counts(model)
    schedule = thaw_schedule(lmap.num_layers, 0, STEPS_PER_EPOCH, train_top_fraction=0.3, param_counts=counts)
    frozen = freeze_never_trained(model, lmap, schedule)
    assert frozen and all(schedule[lmap.depth[n]] is None for n in frozen)
    trained = sum(counts[d] for d, s in schedule.items() if s == 0)
    assert trained >= 0.3 * sum(counts.values())
    groups = build_param_groups(model, lmap, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    assert not {n for g in groups for n in g["param_names"]} & set(frozen)
    lambdas = group_lr_lambdas([schedule[g["depth"]] for g in groups], 8, 0, "linear", 0.0, 0)
    stop = GradientStop(model, lmap)
    stop.set_lowest_trainable(lowest_trainable_depth(schedule, 0))
    engine = build_engine(model, groups, lambdas, build_ds_config(stage, "fp32", 4, 1, 1))
    start = {n: _gathered(engine, n) for n in frozen}
    for step in range(3):
        engine.backward(engine(**_batch(step)).loss)
        engine.step()
    for n in frozen:
        assert torch.equal(_gathered(engine, n), start[n])


@pytest.mark.timeout(300)
def test_one_rank_at_zero_0_skips_the_all_reduce_and_matches_plain_pytorch():
    """One data-parallel rank: no gradient all-reduce (DeepSpeed would flatten, reduce and copy back
    every gradient, and give the layers below the gradient stop zero gradients to step), and the
    trained weights equal a plain-PyTorch loop's (core.loop.TorchEngine) on the same batches."""
    from domainft.core.loop import TorchEngine

    def setup():
        model = _model()
        lmap = build_layer_map(model)
        # head + top layer train, the next layer thaws at step 3: until then it has no gradient
        schedule = thaw_schedule(lmap.num_layers, initial_layers=1, steps_per_epoch=3, every_epochs=1)
        groups = build_param_groups(model, lmap, lr=1e-3, layer_decay=0.5, weight_decay=0.01)
        lambdas = group_lr_lambdas([schedule[g["depth"]] for g in groups], 12, 0, "constant", 0.0, 0)
        stop = GradientStop(model, lmap)
        stop.set_lowest_trainable(lowest_trainable_depth(schedule, 0))
        return model, lmap, groups, lambdas

    model, lmap, groups, lambdas = setup()
    engine = build_engine(model, groups, lambdas, build_ds_config(0, "fp32", 4, 1, 1, max_grad_norm=1.0))
    assert engine.enable_backward_allreduce is False
    ref_model, _, ref_groups, ref_lambdas = setup()
    opt = torch.optim.AdamW(ref_groups, foreach=True)
    ref = TorchEngine(ref_model, opt, torch.optim.lr_scheduler.LambdaLR(opt, ref_lambdas), max_grad_norm=1.0)
    for step in range(3):
        for e in (engine, ref):
            torch.manual_seed(step)  # the same dropout masks
            e.backward(e(**_batch(step)).loss)
        below = [p for n, p in engine.module.named_parameters() if lmap.depth[n] >= 2]
        assert all(p.grad is None for p in below), "a frozen layer got a gradient"
        engine.step()
        ref.step()
    got, want = dict(engine.module.named_parameters()), dict(ref_model.named_parameters())
    worst = max(float((got[n] - want[n]).detach().abs().max()) for n in want)
    assert worst < 1e-6, f"DeepSpeed ZeRO 0 and the plain loop differ by {worst}"
    assert any(not torch.equal(got[n], p) for n, p in _model().named_parameters()), "nothing trained"
