"""DeepSpeed on a CUDA GPU, one rank (nccl), as a worker builds it: fp16 and bf16 at ZeRO 0 and 2 learn
through the hot loop (core.loop.train_epoch, pinned host batches), frozen layers stay bit-identical, the
AdamW is the fused CUDA one, and the checkpoint exports the engine's own fp32 weights.

Marked `gpu` (tests/gpu/conftest.py): a usage error where no CUDA GPU is; benchmarks/gpu_suite.sh runs them
on the lent GPU machine, and its --dry-run runs the bf16 cases on CPU.
"""
import json
import os

import pytest
import torch

from dist_harness import run_world

LABELS = ["a", "b", "c"]
STEPS, BATCH = 30, 8
CASES = [("fp16", 0), ("bf16", 0), ("fp16", 2), ("bf16", 2)]


def _batches(n: int, seed: int = 0):
    """An easy task: a class marker token fills half of each row (as the integration tests' splits)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        labels = torch.randint(0, 3, (BATCH,), generator=g)
        ids = torch.randint(100, 1000, (BATCH, 24), generator=g)
        marker = torch.rand(BATCH, 24, generator=g) < 0.5
        ids = torch.where(marker, 1000 + labels[:, None], ids)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    return out


def _train_rank(rank, world, model_dir, precision, stage, device_kind, out):
    from domainft.core import (GradientStop, build_layer_map, build_model, build_param_groups, freeze_never_trained,
                               group_lr_lambdas, lowest_trainable_depth)
    from domainft.core.loop import train_epoch
    from domainft.engine.build import build_engine
    from domainft.engine.consolidate import trained_fp32_state_dict
    from domainft.engine.ds_config import build_ds_config
    from domainft.engine.zero import _inner, full_fp32_params, fresh_start

    cuda = device_kind == "cuda"
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(str(model_dir), LABELS)
    lmap = build_layer_map(model)
    # head and the top two layers train; the two bottom layers and the embeddings stay frozen
    schedule = {d: (0 if d <= 2 else None) for d in range(lmap.num_depths)}
    freeze_never_trained(model, lmap, schedule)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    groups = build_param_groups(model, lmap, lr=1e-3, layer_decay=0.9, weight_decay=0.01)
    lambdas = group_lr_lambdas([schedule[g["depth"]] for g in groups], STEPS, 0, "constant", 0.0, 0)
    GradientStop(model, lmap).set_lowest_trainable(lowest_trainable_depth(schedule, 0))
    model.to(device)
    engine = build_engine(model, groups, lambdas, build_ds_config(stage, precision, BATCH, 1, world, 1.0, on_gpu=cuda))
    fresh_start(engine)

    # Host batches as Ray Data hands them to the loop on a GPU (pinned, copied with non_blocking).
    batches = [{k: v.pin_memory() if cuda else v for k, v in b.items()} for b in _batches(STEPS, seed=rank)]
    losses = []
    stats = train_epoch(engine, batches, STEPS, device, on_step=lambda step, loss: losses.append(float(loss)))

    assert engine.global_steps == STEPS and len(losses) == STEPS
    assert all(torch.isfinite(torch.tensor(losses))), losses
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, f"{precision} ZeRO {stage}: loss {first:.3f} -> {last:.3f}, no learning"
    low = {"fp16": torch.float16, "bf16": torch.bfloat16}[precision]
    trained = [n for g in groups for n in g["param_names"]]
    params = dict(engine.module.named_parameters())
    assert {params[n].dtype for n in trained} == {low}, "DeepSpeed did not keep the weights in low precision"
    assert all(params[n].device.type == device.type for n in trained)
    for n, before in frozen.items():
        assert torch.equal(params[n].detach().cpu(), before.to(params[n].dtype)), f"frozen {n} changed"
    if cuda:
        assert _inner(engine).defaults.get("fused") is True, "not the fused CUDA AdamW"
    if precision == "fp16":
        assert engine.skipped_steps < STEPS // 3, f"{engine.skipped_steps} of {STEPS} steps overflowed"
    masters = full_fp32_params(engine, trained)
    assert all(torch.isfinite(m).all() for m in masters.values())
    ckpt = os.path.join(out, f"{precision}-z{stage}")
    engine.save_checkpoint(ckpt, tag="ds")
    exported = trained_fp32_state_dict(ckpt, "ds", [g["param_names"] for g in groups])
    wrong = [n for n in trained if not torch.equal(exported[n].float().cpu(), masters[n])]
    assert not wrong, f"the checkpoint's fp32 weights differ from the engine's: {wrong[:3]}"
    with open(os.path.join(out, f"{precision}-z{stage}.json"), "w") as f:
        json.dump({"train_loss": stats["train_loss"], "first": first, "last": last}, f)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("precision,stage", CASES, ids=[f"{p}-zero{s}" for p, s in CASES])
def test_deepspeed_trains_on_one_gpu(tmp_path, tiny_bert_dir, gpu_device, precision, stage):
    run_world(_train_rank, 1, tiny_bert_dir, precision, stage, gpu_device, str(tmp_path), device=gpu_device)
    result = json.loads((tmp_path / f"{precision}-z{stage}.json").read_text())
    assert result["last"] < result["first"]
