"""generate_ids: batched, left-padded generation equals one-prompt-at-a-time `model.generate`; stops at any EOS;
keeps the input order; restores train/eval flags and the RNG; works on a PEFT-wrapped model. Tiny random Llama."""
import pytest
import torch
import transformers as T

from domainft.core.generation import generate_ids
from tiny_models import tiny_config

EOS, PAD = 2, 0


@pytest.fixture(scope="module")
def lm():
    torch.manual_seed(0)
    return T.AutoModelForCausalLM.from_config(tiny_config("llama", 2, bos_token_id=1, eos_token_id=EOS)).eval()


def _prompts(lengths=(5, 9, 3, 12, 7, 1, 4), seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, 100, (n,), generator=g).tolist() for n in lengths]


def _one_at_a_time(model, prompt, eos, max_new_tokens=8):
    out = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                         attention_mask=torch.ones(1, len(prompt), dtype=torch.long), pad_token_id=PAD,
                         eos_token_id=eos)[0, len(prompt):].tolist()
    return out[:out.index(eos[0])] if eos[0] in out else out


def test_greedy_batches_equal_unbatched_generate_in_input_order(lm):
    prompts = _prompts()
    got = generate_ids(lm, prompts, pad_id=PAD, eos_ids=[EOS], max_new_tokens=8, batch_size=3)
    assert got == [_one_at_a_time(lm, p, [EOS]) for p in prompts]
    assert [len(g) for g in got] == [8] * len(prompts)  # a random model never says EOS by chance here
    # the batch size changes the padding, not the answers; order follows the input, not the length sort
    assert generate_ids(lm, prompts[::-1], PAD, [EOS], 8, batch_size=2) == got[::-1]
    assert generate_ids(lm, [], PAD, [EOS], 8) == []


def test_stops_at_any_eos_and_drops_it_and_what_follows(lm):
    prompts = _prompts()
    free = generate_ids(lm, prompts, PAD, [EOS], max_new_tokens=8)
    # make a token the model does generate a stop token: each answer ends just before its first occurrence
    stop = free[0][3]
    got = generate_ids(lm, prompts, PAD, [EOS, stop], max_new_tokens=8)
    assert got[0] == free[0][:free[0].index(stop)]
    for g, f in zip(got, free):
        assert g == (f[:f.index(stop)] if stop in f else f)
        assert stop not in g
    assert got == [_one_at_a_time(lm, p, [stop, EOS]) for p in prompts]


def test_train_mode_is_restored_module_by_module(lm):
    lm.train()
    lm.model.layers[0].eval()  # a partly frozen model mixes modes: each flag comes back as it was
    before = {n: m.training for n, m in lm.named_modules()}
    seen = []
    handle = lm.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    try:
        generate_ids(lm, _prompts((4, 6)), PAD, [EOS], max_new_tokens=3)
    finally:
        handle.remove()
        after = {n: m.training for n, m in lm.named_modules()}
        lm.eval()
    assert seen and not any(seen)  # every forward ran in eval mode (no dropout)
    assert after == before


def test_gradient_checkpointing_keeps_the_cache_and_stays_quiet(lm, recwarn, caplog):
    lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm.train()
    recwarn.clear()
    try:
        got = generate_ids(lm, _prompts(), PAD, [EOS], max_new_tokens=8, batch_size=3)
    finally:
        lm.gradient_checkpointing_disable()
        lm.eval()
    assert got == generate_ids(lm, _prompts(), PAD, [EOS], max_new_tokens=8)
    assert not [w for w in recwarn if "cach" in str(w.message).lower()]
    assert "incompatible with gradient checkpointing" not in caplog.text


def test_sampling_is_seeded_and_leaves_the_callers_rng_alone(lm):
    prompts = _prompts()
    kw = dict(pad_id=PAD, eos_ids=[EOS], max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.95)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = generate_ids(lm, prompts, seed=7, **kw)
    assert torch.equal(torch.get_rng_state(), state)
    assert a == generate_ids(lm, prompts, seed=7, batch_size=8, **kw)
    assert a != generate_ids(lm, prompts, PAD, [EOS], 8)  # not greedy


def test_peft_wrapped_model(lm):
    import copy

    from peft import LoraConfig, get_peft_model

    prompts = _prompts()
    plain = generate_ids(lm, prompts, PAD, [EOS], max_new_tokens=6)
    # LoRA's B starts at zero: the wrapped model answers as the plain one
    peft = get_peft_model(copy.deepcopy(lm), LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                         task_type="CAUSAL_LM"))
    peft.train()
    assert type(peft).__name__ == "PeftModelForCausalLM"
    assert generate_ids(peft, prompts, PAD, [EOS], max_new_tokens=6, batch_size=4) == plain
    assert peft.training


def test_zero3_ranks_make_as_many_generate_calls_as_the_busiest_rank(lm, monkeypatch):
    """synced_gpus under torch.distributed, simulated in one process: this rank has 2 batches, the busiest 5.
    (Real ZeRO-3 ranks run generate's forwards in lockstep; a rank that stopped early would hang the others.)"""
    import torch.distributed as dist

    prompts = _prompts((4, 6, 3))
    alone = generate_ids(lm, prompts, PAD, [EOS], max_new_tokens=5, batch_size=2, synced_gpus=True)  # no group

    def all_reduce(t, op=None, **kw):
        if t.dtype == torch.long:  # generate_ids' batch count: the other rank has 5
            t.fill_(5)
        # generate's own "has every rank finished" flag: as if the other rank had finished

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda *a, **k: 2)
    monkeypatch.setattr(dist, "all_reduce", all_reduce)
    calls = []
    real = lm.generate
    monkeypatch.setattr(lm, "generate", lambda **kw: calls.append((kw["input_ids"].shape[0], kw["synced_gpus"]))
                        or real(**kw))
    got = generate_ids(lm, prompts, PAD, [EOS], max_new_tokens=5, batch_size=2, synced_gpus=True)
    assert calls == [(2, True), (1, True), (1, True), (1, True), (1, True)]  # its own 2 batches, then 3 dummies
    assert got == alone == generate_ids(lm, prompts, PAD, [EOS], max_new_tokens=5, batch_size=2)


def test_bad_arguments(lm):
    with pytest.raises(ValueError, match="no tokens"):
        generate_ids(lm, [[5], []], PAD, [EOS], 4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_ids(lm, [[5]], PAD, [EOS], 0)
