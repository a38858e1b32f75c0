"""Real DeepSpeed, ZeRO 0-3 x fp32/bf16, on 2 gloo processes (no Ray), for the PEFT regimes and the 8-bit
optimizer: bitsandbytes AdamW8bit trains at every stage, a thawed group's 8-bit state is that of a fresh
AdamW8bit, a checkpoint restores it exactly, and adapters export equal to the engine's fp32 weights.
"""
import json
import os

import pytest
import torch

from dist_harness import LABELS, batch_for_test, build_engine_for_test, run_world, train_and_checkpoint

MATRIX = [(s, p) for s in range(4) for p in ("fp32", "bf16")]
THAW, AFTER = 3, 4  # depth 2 thaws after step 3; then 4 updates are compared with a fresh AdamW8bit


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory, minilm_path, tiny_bert_factory):
    """tiny_model_dir's 4-layer BERT at hidden 64: its FFN matrices (8192 elements) get 8-bit moments
    even at ZeRO 0, where bitsandbytes keeps 32-bit moments for tensors under 4096 elements."""
    return tiny_bert_factory(tmp_path_factory.mktemp("wide_bert"), minilm_path, hidden_size=64)


class _GradSpy:
    """Records, at each real inner-optimizer step, the gradient and LR it is handed for each tensor:
    the tensors are DeepSpeed's (per-parameter masters at ZeRO 0, flat fp32 partitions at ZeRO 1-3)."""

    def __init__(self, inner):
        self.inner, self.seen, self._step = inner, [], inner.step
        inner.step = self

    def __call__(self, *args, **kwargs):
        for group in self.inner.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.seen.append((p, p.grad.detach().clone(), group["lr"]))
        return self._step(*args, **kwargs)


def _thaw8_ranks(rank, world, model_dir, out, combos, reset):
    import bitsandbytes as bnb

    from domainft.engine.zero import _inner, apply_thaws, group_state_tensors

    schedule = {0: 0, 1: 0, 2: THAW, 3: None, 4: None, 5: None}
    results = {}
    for stage, precision in combos:
        engine, groups, stop = build_engine_for_test(model_dir, schedule, stage, precision, world, THAW + AFTER,
                                                     eight_bit=True)
        inner = _inner(engine)
        assert type(inner).__name__ == "AdamW8bit"
        for step in range(THAW):
            engine.backward(engine(**batch_for_test(rank, step)).loss)
            engine.step()
            if reset:
                apply_thaws(engine, stop, schedule, groups, engine.global_steps)
            elif engine.global_steps == THAW:  # the control: thaw without the fresh state
                stop.set_lowest_trainable(2)
        mine = [i for i, g in enumerate(groups) if g["depth"] == 2]
        tensors = {id(t): (i, t) for i in mine for t in group_state_tensors(engine, i)}
        start = {k: t.detach().clone() for k, (_, t) in tensors.items()}
        clones = {k: t.clone() for k, t in start.items()}  # the fresh optimizer's own copies
        fresh = {k: bnb.optim.AdamW8bit([clones[k]], betas=(0.9, 0.999), eps=1e-8,
                                        weight_decay=groups[i]["weight_decay"]) for k, (i, _) in tensors.items()}
        spy = _GradSpy(inner)
        worst, moved, eight = 0.0, 0.0, 0
        for step in range(THAW, THAW + AFTER):
            spy.seen.clear()
            engine.backward(engine(**batch_for_test(rank, step)).loss)
            engine.step()
            apply_thaws(engine, stop, schedule, groups, engine.global_steps)
            for p, grad, lr in spy.seen:
                if id(p) not in fresh:
                    continue
                ref = clones[id(p)]
                ref.grad = grad
                fresh[id(p)].param_groups[0]["lr"] = lr
                fresh[id(p)].step()
                worst = max(worst, float((p.detach() - ref).abs().max()))
        for k, (_, t) in tensors.items():
            moved = max(moved, float((t.detach() - start[k]).abs().max()) if t.numel() else 0.0)
            eight += int(inner.state[t].get("state1", torch.empty(0)).dtype == torch.uint8)
        results[f"{stage}-{precision}"] = {"max_diff": worst, "moved": moved, "eight_bit_tensors": eight,
                                           "tensors": len(tensors)}
        del engine
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)


@pytest.mark.timeout(900)
def test_thawed_group_updates_equal_a_fresh_adamw8bit(tmp_path, wide_model_dir):
    """A group frozen for 3 steps is thawed; its next 4 updates equal those of a fresh bitsandbytes
    AdamW8bit fed the same gradients and LRs, on the very tensors DeepSpeed hands the optimizer.
    Control: without the reset (the 8-bit step counter left at 3) the updates differ."""
    run_world(_thaw8_ranks, 2, str(wide_model_dir), str(tmp_path / "r"), MATRIX, True)
    run_world(_thaw8_ranks, 2, str(wide_model_dir), str(tmp_path / "c"), [(2, "fp32")], False)
    for rank in (0, 1):
        results = json.loads((tmp_path / f"r.{rank}").read_text())
        assert set(results) == {f"{s}-{p}" for s, p in MATRIX}
        for combo, r in results.items():
            assert r["moved"] > 1e-5, f"rank {rank} ZeRO {combo}: the thawed group did not train: {r}"
            assert r["max_diff"] == 0.0, f"rank {rank} ZeRO {combo}: {r}"
            assert r["eight_bit_tensors"] > 0, f"rank {rank} ZeRO {combo}: no 8-bit moments: {r}"
        control = json.loads((tmp_path / f"c.{rank}").read_text())["2-fp32"]
        assert control["max_diff"] > 1e-6, f"rank {rank}: without the reset the updates should differ: {control}"


RESUME = [(0, "fp32"), (0, "bf16"), (1, "fp32"), (2, "bf16"), (3, "fp32")]


def _resume8_ranks(rank, world, model_dir, root, combos):
    import torch.distributed as dist

    from domainft.engine.zero import full_fp32_params

    schedule = {d: (0 if d <= 2 else None) for d in range(6)}
    results = {}
    for stage, precision in combos:
        runs = []
        for restore in (False, True):
            engine, groups, _ = build_engine_for_test(model_dir, schedule, stage, precision, world, 6, eight_bit=True)
            ckpt = os.path.join(root, f"z{stage}-{precision}")
            if restore:
                engine.load_checkpoint(ckpt, tag="ds")
            else:
                for step in range(3):
                    engine.backward(engine(**batch_for_test(rank, step)).loss)
                    engine.step()
                engine.save_checkpoint(ckpt, tag="ds")
                dist.barrier()
            for step in range(3, 5):  # the same two steps after the checkpoint, in both runs
                engine.backward(engine(**batch_for_test(rank, step)).loss)
                engine.step()
            names = [n for g in groups for n in g["param_names"]]
            runs.append(full_fp32_params(engine, names))
            del engine
        worst = max(float((runs[0][n] - runs[1][n]).abs().max()) for n in runs[0])
        results[f"{stage}-{precision}"] = worst
    if rank == 0:
        with open(os.path.join(root, "resume.json"), "w") as f:
            json.dump(results, f)


@pytest.mark.timeout(900)
def test_a_checkpoint_restores_the_8bit_optimizer_state_exactly(tmp_path, wide_model_dir):
    """Train 3 steps, save, train 2 more; a new engine restored from the checkpoint trains the same 2
    steps to bit-identical weights (the 8-bit moments, their scales and step counts were restored)."""
    run_world(_resume8_ranks, 2, str(wide_model_dir), str(tmp_path), RESUME)
    results = json.loads((tmp_path / "resume.json").read_text())
    assert set(results) == {f"{s}-{p}" for s, p in RESUME}
    assert all(diff == 0.0 for diff in results.values()), results


EXPORTS = ([("lora", s, p) for s in range(4) for p in ("fp32", "bf16")]
           + [(m, s, p) for m in ("prompt_tuning", "prefix_tuning") for s, p in ((1, "fp32"), (3, "bf16"))])


def _peft_export_ranks(rank, world, model_dir, root, combos):
    import torch.distributed as dist
    from safetensors.torch import load_file

    from domainft.core.export import export_peft
    from domainft.core.peft import PeftSpec
    from domainft.engine.consolidate import trained_fp32_state_dict

    pretrained = load_file(os.path.join(model_dir, "model.safetensors"))
    report = {}
    for method, stage, precision in combos:
        spec = PeftSpec(method=method, r=4, num_virtual_tokens=4)
        schedule = {d: (None if d == 4 else 0) for d in range(6)}  # layer 0 frozen for the run
        engine, groups, _ = build_engine_for_test(model_dir, schedule, stage, precision, world, 2, 1.0, peft=spec,
                                                  lr=1e-2)
        name = f"{method}-z{stage}-{precision}"
        ckpt = os.path.join(root, name)
        trained, ref = train_and_checkpoint(engine, groups, rank, ckpt)
        if rank == 0:
            weights = trained_fp32_state_dict(ckpt, "ds", [g["param_names"] for g in groups])
            export_peft(weights, model_dir, LABELS, spec, model_dir, os.path.join(ckpt, "best"),
                        os.path.join(ckpt, "adapter"), required=trained)
            saved = load_file(os.path.join(ckpt, "adapter", "adapter_model.safetensors"))
            # PEFT's file names: no adapter name, no modules_to_save, the soft prompt as "prompt_embeddings"
            def norm(k):
                return "prompt_embeddings" if "prompt_encoder" in k else k.replace(".modules_to_save", "").replace(
                    ".default", "")

            saved = {norm(k): v for k, v in saved.items()}
            wrong = [n for n, v in ref.items() if norm(n) not in saved or not torch.equal(saved[norm(n)], v)]
            merged = {}
            if method == "lora":
                merged = load_file(os.path.join(ckpt, "best", "model.safetensors"))
            untouched = [k for k in merged if ".query." not in k and ".value." not in k and "classifier" not in k
                         and "pooler" not in k and not torch.equal(merged[k], pretrained[k])]
            moved = [n for n in trained if ".lora_B" in n or "prompt_encoder" in n]
            report[name] = {"wrong": wrong, "untouched_changed": untouched, "trained": len(trained),
                            "adapters_moved": sum(bool(ref[n].abs().sum() > 0) for n in moved)}
        dist.barrier()
        del engine
    if rank == 0:
        with open(os.path.join(root, "report.json"), "w") as f:
            json.dump(report, f)


@pytest.mark.timeout(900)
def test_adapter_export_equals_the_engine_fp32_weights_at_every_stage(tmp_path, tiny_model_dir):
    """Adapters trained under ZeRO 0-3 x fp32/bf16 on 2 ranks are written (on one process, from the
    consolidated checkpoint: no gather on rank 0 only) with exactly the engine's fp32 masters; the
    merged LoRA model keeps every non-target weight bit-identical to the pretrained one."""
    run_world(_peft_export_ranks, 2, str(tiny_model_dir), str(tmp_path), EXPORTS)
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report) == len(EXPORTS)
    for name, r in report.items():
        assert r["wrong"] == [] and r["untouched_changed"] == [], f"{name}: {r}"
        assert r["adapters_moved"] > 0, f"{name}: {r}"
