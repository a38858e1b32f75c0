"""Decoder LLMs under real DeepSpeed ZeRO 2 and 3 on 2 gloo processes (no Ray): layer-wise LR and gradual
unfreezing keep their guarantees for Llama, Qwen2 and DeepSeek-V3 (MoE with multi-head latent attention),
and for QLoRA on DeepSeek-V3 (a 4-bit NF4 base): frozen layers bit-identical, no backward below the cut, the
thawed group's updates those of a fresh AdamW, and in the MoE layers the router and the routed experts train."""
import json

import pytest
import torch

from dist_harness import LABELS, build_engine_for_test, run_world
from tiny_models import save_tiny_decoder

FAMILIES = ["llama", "qwen2", "deepseek_v3"]
STAGES = [2, 3]
# (family, ZeRO stage, QLoRA): full fine-tuning of every family at both stages, QLoRA at ZeRO-2 (4-bit weights
# are not partitioned at ZeRO-3: the config check refuses it)
COMBOS = [(f, s, False) for f in FAMILIES for s in STAGES] + [("deepseek_v3", 2, True)]
THAW, AFTER = 3, 3  # depth 2 thaws after 3 steps; 3 updates are then compared with a fresh AdamW


def _batch(rank, step, vocab):
    g = torch.Generator().manual_seed(100 * rank + step)
    ids = torch.randint(2, vocab, (4, 10), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids[:, 1] % len(LABELS)}


def _full(engine, names):
    import deepspeed

    params = dict(engine.module.named_parameters())
    with deepspeed.zero.GatheredParameters([params[n] for n in names]):
        return {n: params[n].detach().clone() for n in names}


def _ranks(rank, world, dirs, out):
    from deepspeed.utils import safe_get_full_grad

    from domainft.core.peft import PeftSpec
    from domainft.engine.zero import apply_thaws, full_fp32_params

    # 3 layers: depth 0 head, 1 = layer 2, 2 = layer 1 (thaws after THAW steps), 3 = layer 0 and 4 the
    # embeddings, frozen for the whole run
    schedule = {0: 0, 1: 0, 2: THAW, 3: None, 4: None}
    results = {}
    for family, stage, qlora in COMBOS:
        model_dir = dirs[family]
        with open(model_dir + "/config.json") as f:
            vocab = json.load(f)["vocab_size"]
        peft = PeftSpec(method="lora", r=4, dropout=0.0) if qlora else None
        engine, groups, stop = build_engine_for_test(model_dir, schedule, stage, "fp32", world, THAW + AFTER,
                                                     lr=1e-2, peft=peft, load_in_4bit=qlora)
        names = [n for n, _ in engine.module.named_parameters()]
        trainable = {n for n, p in engine.module.named_parameters() if p.requires_grad}
        thawing = [n for i, g in enumerate(groups) if g["depth"] == 2 for n in g["param_names"]]
        never = [n for n in names if ".layers.0." in n or "embed_tokens" in n]
        top = [n for n in names if ".layers.2." in n and n in trainable]
        start = _full(engine, names)
        backward = [0, 0, 0]
        for i, layer in enumerate(engine.module.get_base_model().model.layers if qlora
                                  else engine.module.model.layers):
            layer.register_full_backward_hook(lambda m, gi, go, i=i: backward.__setitem__(i, backward[i] + 1))
        for step in range(THAW):
            engine.backward(engine(**_batch(rank, step, vocab)).loss)
            engine.step()
            apply_thaws(engine, stop, schedule, groups, engine.global_steps)
        frozen_moved = [n for n, w in _full(engine, thawing + never).items() if not torch.equal(w, start[n])]
        backward_while_frozen = list(backward)
        before = full_fp32_params(engine, thawing)
        ref = {n: before[n].clone().requires_grad_() for n in thawing}
        mine = [i for i, g in enumerate(groups) if g["depth"] == 2]
        fresh = torch.optim.AdamW([{"params": [ref[n] for n in groups[i]["param_names"]],
                                    "weight_decay": groups[i]["weight_decay"]} for i in mine], lr=1.0)
        worst = moved = 0.0
        for step in range(THAW, THAW + AFTER):
            engine.backward(engine(**_batch(rank, step, vocab)).loss)
            params = dict(engine.module.named_parameters())
            grads = {n: safe_get_full_grad(params[n]).detach().float().clone() for n in thawing}
            lrs = engine.lr_scheduler.get_last_lr()
            engine.step()
            apply_thaws(engine, stop, schedule, groups, engine.global_steps)
            for group, i in zip(fresh.param_groups, mine):
                group["lr"] = lrs[i]
            for n in thawing:
                ref[n].grad = grads[n]
            fresh.step()
            got = full_fp32_params(engine, thawing)
            worst = max(worst, max(float((got[n] - ref[n].detach()).abs().max()) for n in thawing))
            moved = max(moved, max(float((got[n] - before[n]).abs().max()) for n in thawing))
        end = _full(engine, names)
        results[f"{family}-{stage}{'-qlora' if qlora else ''}"] = {
            "frozen_moved": frozen_moved, "backward_while_frozen": backward_while_frozen, "backward": backward,
            "never_moved": [n for n in never if not torch.equal(end[n], start[n])], "never": len(never),
            "max_diff": worst, "max_move": moved,
            "top_unchanged": [n for n in top if torch.equal(end[n], start[n])]}
        del engine
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)


@pytest.mark.timeout(600)
def test_decoders_keep_the_unfreezing_guarantees_under_zero_2_and_3(tmp_path):
    dirs = {f: str(save_tiny_decoder(tmp_path / f, f, 3)) for f in FAMILIES}
    out = tmp_path / "r.json"
    run_world(_ranks, 2, dirs, str(out))
    results = json.loads(out.read_text())
    assert set(results) == {f"{f}-{s}{'-qlora' if q else ''}" for f, s, q in COMBOS}
    for combo, r in results.items():
        assert r["frozen_moved"] == [] and r["never_moved"] == [] and r["never"] > 0, combo
        # layers 0, 1, 2: only the top layer (2) runs backward while layer 1 is frozen; layer 0 never
        assert r["backward_while_frozen"] == [0, 0, THAW], combo
        assert r["backward"] == [0, AFTER, THAW + AFTER], combo
        assert r["max_move"] > 1e-4 and r["max_diff"] <= 1e-5, f"{combo}: {r}"
        # every trainable parameter of the top layer moved: in DeepSeek-V3's MoE layer the router (mlp.gate)
        # and the routed and shared experts as well as the MLA projections (under QLoRA: the adapters)
        assert r["top_unchanged"] == [], f"{combo}: {r['top_unchanged']}"
