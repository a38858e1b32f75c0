"""`domainft generate` on Ray Data: prompts -> answers on an actor pool, each actor holding the model once.

The driver sends each prompt conversation (its messages as JSON, and its index); an actor renders it with the
chat template, encodes it (`add_special_tokens=False`: the template writes BOS, as the SFT encoder does),
cuts it from the left to fit the model's positions, generates (core/generation.py) and decodes. One actor per
GPU when the cluster has GPUs, else CPU actors whose torch threads are their CPUs.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional

import pyarrow as pa
import ray
import ray.data

from domainft import console
from domainft.distributed.datasets import pipeline_session
from domainft.distributed.progress import Reporter

BAR = "generate"


@dataclass(frozen=True)
class Settings:
    """What each actor needs; it crosses the Ray boundary as a plain dict (commands/generate.py builds it)."""

    model_dir: str
    template: str             # the chat template's text
    eos_ids: list[int]        # generation stops at any of these
    pad_id: int
    max_prompt_tokens: int    # longer prompts keep their last this-many tokens
    max_new_tokens: int
    batch_size: int
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: Optional[int] = None


@dataclass(frozen=True)
class Pool:
    """The actor pool: how many, and each one's resources."""

    actors: int
    gpus: int      # per actor: 0 or 1
    cpus: int      # per actor (its torch threads on CPU)
    note: str      # a line for the console


def plan_pool(requested: Optional[int], rows: int, cluster: dict) -> Pool:
    """One actor per GPU (or `requested`, at most the GPUs), else CPU actors sharing the cluster's CPUs."""
    gpus, cpus = int(cluster.get("GPU", 0)), max(1, int(cluster.get("CPU", 1)))
    if gpus:
        n = max(1, min(requested or gpus, gpus, rows))
        capped = f" (only {gpus} GPU(s) in the cluster)" if requested and requested > gpus else ""
        return Pool(n, 1, 1, f"{n} actor(s), one GPU each{capped}")
    n = max(1, min(requested or 1, cpus, rows))
    capped = f" (only {cpus} CPU(s) in the cluster)" if requested and requested > cpus else ""
    each = max(1, cpus // n)
    return Pool(n, 0, each, f"{n} CPU actor(s), {each} CPU thread(s) each (no GPU in the cluster){capped}")


class Generator:
    """Ray Data actor: loads the tokenizer and the model once, answers a batch of prompts per call."""

    def __init__(self, settings: dict, threads: int, reporter: Optional[Reporter] = None):
        import torch

        from domainft.core.causal_lm import build_causal_lm
        from domainft.data.tokenize import load_tokenizer

        self.s, self.reporter = Settings(**settings), reporter
        if torch.cuda.is_available():
            self.device = torch.device("cuda")
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            torch.set_num_threads(threads)
            self.device, dtype = torch.device("cpu"), torch.float32
        self.tokenizer = load_tokenizer(self.s.model_dir)
        self.model = build_causal_lm(self.s.model_dir, torch_dtype=dtype).to(self.device).eval()

    def __call__(self, batch: pa.Table) -> pa.Table:
        from domainft.core.generation import generate_ids

        conversations = [json.loads(m) for m in batch.column("messages").to_pylist()]
        ids, cut = encode_prompts(self.tokenizer, conversations, self.s.template, self.s.max_prompt_tokens)
        idx = batch.column("idx").to_pylist()
        sampling = self.s.temperature > 0
        new = generate_ids(self.model, ids, self.s.pad_id, list(self.s.eos_ids), self.s.max_new_tokens,
                           batch_size=self.s.batch_size, do_sample=sampling,
                           temperature=self.s.temperature if sampling else 1.0, top_p=self.s.top_p,
                           # per batch, from its first row: the same answers whichever actor runs it
                           seed=None if self.s.seed is None else self.s.seed + idx[0])
        answers = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        if self.reporter is not None:
            self.reporter.advance(BAR, len(idx))
        return pa.table({"idx": pa.array(idx, pa.int64()), "answer": pa.array(answers, pa.string()),
                         "prompt_tokens": pa.array([len(i) for i in ids], pa.int64()),
                         "answer_tokens": pa.array([len(n) for n in new], pa.int64()),
                         "truncated": pa.array(cut, pa.bool_())})


def encode_prompts(tokenizer: Any, conversations: list[list[dict]], template: str,
                   max_tokens: int) -> tuple[list[list[int]], list[bool]]:
    """Each conversation rendered with the generation prompt and tokenized; longer than `max_tokens`: its
    last `max_tokens` tokens (the start goes: the system prompt, early turns). Returns (ids, truncated)."""
    from domainft.data.chat import render

    texts = [render(tokenizer, m, template, add_generation_prompt=True) for m in conversations]
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"] if texts else []
    return [i[-max_tokens:] for i in ids], [len(i) > max_tokens for i in ids]


def generate_on_ray(conversations: list[list[dict]], settings: dict, num_actors: Optional[int]) -> list[dict]:
    """Answers of the conversations on an actor pool (starts or joins Ray); `settings`: Settings' fields.

    Returns:
        One dict per conversation, in their order: answer, prompt_tokens, answer_tokens, truncated.
    """
    batch_size = Settings(**settings).batch_size  # the keys checked on the driver, before any actor starts
    with pipeline_session() as live:
        pool = plan_pool(num_actors, len(conversations), ray.cluster_resources())
        console.say(f"[generate] {len(conversations)} prompt(s) on {pool.note}")
        reporter = live.reporter()
        reporter.bar(BAR, len(conversations), "prompts")
        # Several generate_ids batches per actor call: fewer calls, and each sorts more prompts by length.
        per_call = min(4 * batch_size, max(1, -(-len(conversations) // pool.actors)))
        items = [{"idx": i, "messages": json.dumps(m, ensure_ascii=False)} for i, m in enumerate(conversations)]
        ds = ray.data.from_items(items, override_num_blocks=max(1, min(len(items) // per_call, 4 * pool.actors)))
        ds = ds.map_batches(Generator, fn_constructor_kwargs={"settings": settings, "threads": pool.cpus,
                                                              "reporter": reporter},
                            batch_size=per_call, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=pool.actors),
                            num_gpus=pool.gpus, num_cpus=pool.cpus)
        rows = ds.take_all()
        reporter.close(BAR)
    rows.sort(key=lambda r: r["idx"])
    if [r["idx"] for r in rows] != list(range(len(conversations))):
        raise RuntimeError(f"generate: {len(rows)} answers came back for {len(conversations)} prompts")
    return [{k: r[k] for k in ("answer", "prompt_tokens", "answer_tokens", "truncated")} for r in rows]
