"""Batched text generation from token ids: a plain HF causal LM, a PEFT-wrapped one, or a DeepSpeed ZeRO-3
module (`synced_gpus=True`). torch and transformers only: no Ray, no DeepSpeed, no tokenizer (the caller
renders and encodes prompts, and decodes what comes back).

Called in the middle of training (generative eval) as well as by `domainft generate`: the model is put in
eval mode for the call and every module's own train/eval flag is restored after, and with a `seed` the
global RNG state of the run is left as it was.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional, Sequence

import torch


def generate_ids(model: Any, prompts: list[list[int]], pad_id: int, eos_ids: list[int], max_new_tokens: int,
                 batch_size: int = 8, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
                 seed: Optional[int] = None, synced_gpus: bool = False) -> list[list[int]]:
    """The new tokens of each prompt, generated in batches (KV cache on).

    Args:
        model: a causal LM with `.generate` (transformers `*ForCausalLM`, `PeftModelForCausalLM`, or a
            DeepSpeed engine's `.module`).
        prompts: token ids of each prompt (special tokens already in place); none may be empty.
        pad_id: id that fills the left of shorter prompts (masked out by the attention mask).
        eos_ids: generation stops at any of these; the first one and everything after it is removed.
        max_new_tokens: most tokens generated per prompt.
        batch_size: prompts per `generate` call; prompts are sorted by length into batches (less padding).
        do_sample: sample with `temperature` and `top_p`; False: greedy (temperature and top_p unused).
        seed: seeds the sampling; the caller's RNG state is restored afterwards.
        synced_gpus: DeepSpeed ZeRO-3 (every rank must run the same forwards, since each gathers its
            parameter shards from the others; every rank must call this function). Passed to `generate`,
            which then keeps stepping until every rank is done, and ranks with fewer batches than the others
            run dummy batches so that every rank makes the same number of `generate` calls. Ignored in a
            single process (no torch.distributed group, or a group of one).

    Returns:
        One list of new token ids per prompt, in the order of `prompts`.
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("generate_ids: a prompt has no tokens")
    stops = set(int(e) for e in eos_ids)
    # longest first: the biggest batch (memory) fails at once, not at the end of a long run
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    synced_gpus = synced_gpus and _world_size() > 1
    extra = _missing_batches(len(batches), _device(model)) if synced_gpus else 0
    # no stop ids: None, not [] (and not the model's own: the caller said there are none)
    options = _options(do_sample, temperature, top_p, pad_id, sorted(stops) or None, max_new_tokens, synced_gpus)
    out: list[list[int]] = [[] for _ in prompts]
    with _eval_mode(model), _seeded(seed, _device(model)), torch.no_grad():
        for batch in batches:
            for i, ids in zip(batch, _generate(model, [prompts[i] for i in batch], pad_id, options)):
                out[i] = _until_stop(ids, stops)
        for _ in range(extra):  # ZeRO-3: this rank's share of the other ranks' forwards
            _generate(model, [[pad_id]], pad_id, options)
    return out


def _options(do_sample: bool, temperature: float, top_p: float, pad_id: int, eos_ids: Optional[list[int]],
             max_new_tokens: int, synced_gpus: bool) -> dict:
    # The sampling settings are always given (None for greedy), so a checkpoint's generation_config.json
    # (top_k=50, temperature=0.6, ...) neither changes what was asked for nor warns that greedy ignores it.
    sampling = dict(temperature=temperature, top_p=top_p) if do_sample else dict(temperature=None, top_p=None)
    return dict(do_sample=do_sample, top_k=None, **sampling, pad_token_id=pad_id, eos_token_id=eos_ids,
                max_new_tokens=max_new_tokens, use_cache=True, synced_gpus=synced_gpus, num_beams=1)


def _generate(model: Any, prompts: Sequence[list[int]], pad_id: int, options: dict) -> list[list[int]]:
    """One `generate` call on left-padded prompts; returns the generated part of each row."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[row, width - len(p):] = 1
    device = _device(model)
    # keywords only: PeftModelForCausalLM.generate takes no positional input
    seqs = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **options)
    return seqs[:, width:].tolist()  # the prompt is the first `width` columns of every row


def _until_stop(ids: list[int], stops: set[int]) -> list[int]:
    for k, t in enumerate(ids):
        if t in stops:
            return ids[:k]
    return ids


def _device(model: Any) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _missing_batches(mine: int, device: torch.device) -> int:
    """How many more `generate` calls the busiest rank makes than this one."""
    import torch.distributed as dist

    n = torch.tensor([mine], dtype=torch.long, device=device)
    dist.all_reduce(n, op=dist.ReduceOp.MAX)
    return int(n.item()) - mine  # host sync, once per call


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """eval() for the call, then each module's own flag back (a partly frozen model mixes them).

    In eval mode under no_grad, gradient-checkpointed layers keep the KV cache and do not warn that
    "caching is incompatible with gradient checkpointing"; the model's config is not touched."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


@contextlib.contextmanager
def _seeded(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Seed torch's RNG for the call and give the caller's state back (training's dropout stream goes on)."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield
