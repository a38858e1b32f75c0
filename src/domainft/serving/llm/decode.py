"""Continuous batching for the LLM server: one running batch that requests join and leave between decoding
steps. torch and transformers only (no Ray, no HTTP; serving/llm/state.py schedules requests into it).

Each request brings its own settings (max tokens, temperature, top-p, seed, stop strings, adapter), so this is
a small loop of its own rather than `model.generate` (one setting for a whole batch). A request that joins is
prefilled (its prompt through the model, with a KV cache of its own), and its cache then joins the batch's:
both are left-padded to the longer and stacked, the padding masked out, positions kept per row, so its
answer is that of the prompt alone. Every step runs one forward over the rows still going, one token each;
a row that stops (an end-of-turn / EOS token, a stop string, its max tokens, a cancel) leaves the batch at
once (its cache rows are dropped, and cache columns no row uses any more). Greedy rows pick the argmax,
which is what `core.generation.generate_ids` gives offline.

Text comes out incrementally (`TextStream`): each token decodes a short window, and only text that can no
longer change is released: not a trailing incomplete UTF-8 character, not a tail that could be the start of a
stop string.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch


@dataclass(frozen=True)
class GenRequest:
    """One completion to generate."""

    prompt_ids: tuple[int, ...]         # the rendered, tokenized prompt (not empty)
    max_tokens: int                     # most new tokens
    temperature: float = 0.0            # 0: greedy
    top_p: float = 1.0
    seed: Optional[int] = None          # seeds this request's sampling alone
    stop: tuple[str, ...] = ()          # stop strings (not part of the answer)
    adapter: Optional[str] = None       # a loaded LoRA adapter's name; None: the base model


@dataclass(frozen=True)
class Delta:
    """What one step added to one answer."""

    text: str                           # new text (may be empty: held back, or a special token)
    tokens: int                         # tokens generated so far (usage.completion_tokens)
    finish_reason: Optional[str] = None  # set on the last delta: "stop" (EOS or a stop string) or "length"


class TextStream:
    """Incremental detokenization of one answer with stop strings.

    Each token decodes a short window, not the whole answer again (that would cost the answer's length per
    token): the tokens since the text last settled, after the ones before them as context (a SentencePiece
    token's leading space, a character split over byte tokens), as Hugging Face TGI and vLLM do."""

    def __init__(self, tokenizer: Any, stop: Sequence[str] = ()):
        self.tokenizer, self.stop = tokenizer, [s for s in stop if s]
        self.ids: list[int] = []
        self.text = ""         # the answer so far, complete characters only
        self._prefix = self._read = 0  # ids[_prefix:_read] decode to the end of `text`: the window's context
        self.sent = 0          # characters of `text` released so far
        self.stopped = False   # a stop string was found; the text ends before it

    def _decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _extend(self, final: bool = False) -> str:
        before = self._decode(self.ids[self._prefix:self._read])
        now = self._decode(self.ids[self._prefix:])
        # an incomplete UTF-8 character at the end may still change: it waits for the next token (or the end)
        if len(now) > len(before) and (final or not now.endswith("\ufffd")):
            self.text += now[len(before):]
            self._prefix, self._read = self._read, len(self.ids)
        return self.text

    def push(self, token: int) -> str:
        """Add a token; returns the text that is now final (possibly "")."""
        self.ids.append(int(token))
        text = self._extend()
        if self.stop:
            lo = max(0, self.sent - max(len(s) for s in self.stop))  # a stop string may straddle what was sent
            hits = [k for k in (text.find(s, lo) for s in self.stop) if k >= 0]
            if hits:
                self.stopped = True
                return self._release(text[:min(hits)], len(text))
        held = max((j for s in self.stop for j in range(1, len(s)) if text.endswith(s[:j])), default=0)
        return self._release(text, len(text) - held)

    def flush(self) -> str:
        """The rest of the text (the answer is over)."""
        return "" if self.stopped else self._release(self._extend(final=True), None)

    def _release(self, text: str, upto: Optional[int]) -> str:
        end = len(text) if upto is None else max(self.sent, min(upto, len(text)))
        out, self.sent = text[self.sent:end], end
        return out


def _pick(logits: torch.Tensor, temperature: float, top_p: float, generator: Optional[torch.Generator]) -> int:
    """The next token of one row: argmax at temperature 0, else a sample from the top-p nucleus."""
    if temperature <= 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < top_p  # the smallest set reaching top_p
        probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_probs[keep])
    return int(torch.multinomial(probs, 1, generator=generator))


class _Row:
    """One request being decoded."""

    def __init__(self, request: GenRequest, tokenizer: Any):
        self.request = request
        self.stream = TextStream(tokenizer, request.stop)
        seed = request.seed if request.seed is not None else random.getrandbits(63)
        self.generator = torch.Generator().manual_seed(seed)
        self.cancelled = False


class BatchDecoder:
    """Decodes requests in one running batch that requests join and leave at step boundaries (continuous
    batching). `add` requests, then call `step` until `done`; `add` more at any time between steps."""

    def __init__(self, model: Any, tokenizer: Any, eos_ids: Sequence[int], pad_id: int,
                 with_adapters: bool = False):
        """Args:
            model: a causal LM (transformers, or a peft model with named LoRA adapters), in eval mode.
            tokenizer: decodes the answers.
            eos_ids: generation of a row stops at any of these (not part of the answer).
            pad_id: fills the left of shorter prompts (masked out).
            with_adapters: the model is a peft model: each row runs its request's adapter (or the base).
        """
        self.model, self.tokenizer, self.eos = model, tokenizer, set(int(e) for e in eos_ids)
        self.pad_id, self.with_adapters = int(pad_id), with_adapters
        self.device = next(model.parameters()).device
        self.rows: dict[int, _Row] = {}
        self.waiting: list[int] = []   # added, not yet prefilled
        self.live: list[int] = []      # the running batch: request id of each row
        self.pending: list[int] = []   # per live row: its last token, sampled, not yet through the model
        self.cache: Any = None
        self.mask = self.positions = None
        self._next_id = 0

    @property
    def done(self) -> bool:
        return not self.live and not self.waiting

    @property
    def size(self) -> int:
        """Requests in the batch or about to join it."""
        return len(self.live) + len(self.waiting)

    def add(self, requests: Sequence[GenRequest]) -> list[int]:
        """Queue requests to join the batch at the next step (their prefill); returns their ids."""
        ids = []
        for r in requests:
            if not r.prompt_ids:
                raise ValueError("BatchDecoder: a prompt has no tokens")
            rid, self._next_id = self._next_id, self._next_id + 1
            self.rows[rid] = _Row(r, self.tokenizer)
            self.waiting.append(rid)
            ids.append(rid)
        return ids

    def cancel(self, rid: int) -> None:
        """Stop decoding a request (its client went away): it leaves the batch at the next step."""
        if rid in self.rows:
            self.rows[rid].cancelled = True

    def _forward(self, rids: Sequence[int], ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                 cache: Any) -> torch.Tensor:
        kwargs = dict(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                      position_ids=positions.to(self.device), cache=cache, use_cache=True, logits_to_keep=1)
        if self.with_adapters:  # peft: one adapter per row ("__base__": none)
            kwargs["adapter_names"] = [self.rows[i].request.adapter or "__base__" for i in rids]
        return self.model(**kwargs).logits[:, -1, :].float().cpu()  # the cache grew in place

    def _prefill(self, rids: list[int]) -> torch.Tensor:
        """The waiting requests' prompts, left-padded into one forward with a cache of their own, which then
        joins the running batch's (both padded on the left to the longer, and stacked)."""
        from transformers import DynamicCache

        prompts = [self.rows[i].request.prompt_ids for i in rids]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):
            ids[row, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[row, width - len(p):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate: left padding does not shift positions
        cache = DynamicCache()
        logits = self._forward(rids, ids, mask, positions, cache)
        if self.cache is None:
            self.cache, self.mask, self.positions = cache, mask, positions[:, -1:]
        else:
            self._join(cache, mask, positions[:, -1:])
        self.live += rids
        return logits

    def _join(self, cache: Any, mask: torch.Tensor, positions: torch.Tensor) -> None:
        width = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.keys = torch.cat([_left_pad(mine.keys, width, 2), _left_pad(theirs.keys, width, 2)])
            mine.values = torch.cat([_left_pad(mine.values, width, 2), _left_pad(theirs.values, width, 2)])
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        self.positions = torch.cat([self.positions, positions])

    @torch.no_grad()
    def step(self) -> dict[int, Delta]:
        """One forward: the waiting requests' prefill (they join the batch with their first token), else one
        token for every live row. Returns the Delta of each request that advanced, by id; a request whose
        Delta has a finish reason has left the batch."""
        self._drop([i for i in self.live if self.rows[i].cancelled])
        for rid in [i for i in self.waiting if self.rows[i].cancelled]:
            self.waiting.remove(rid)
            del self.rows[rid]
        if self.waiting:
            rids, self.waiting = self.waiting, []
            if self.device.type == "cuda":  # one padded forward keeps a GPU busy
                logits = self._prefill(rids)
            else:  # a CPU gains nothing from batching a prefill and pays for the padding: one prompt at a time
                logits = torch.cat([self._prefill([rid]) for rid in rids])
            self.pending += [0] * len(rids)
        elif self.live:
            rids = list(self.live)
            self.mask = torch.cat([self.mask, torch.ones((len(rids), 1), dtype=torch.long)], dim=1)
            self.positions = self.positions + 1
            tokens = torch.tensor(self.pending, dtype=torch.long).unsqueeze(1)
            logits = self._forward(rids, tokens, self.mask, self.positions, self.cache)
        else:
            return {}
        out, finished = {}, []
        first = len(self.live) - len(rids)  # the rows stepped are the last len(rids) of the batch
        for k, rid in enumerate(rids):
            row = self.rows[rid]
            r, stream = row.request, row.stream
            token = _pick(logits[k], r.temperature, r.top_p, row.generator)
            if token in self.eos:
                out[rid] = Delta(stream.flush(), len(stream.ids), "stop")
            else:
                text = stream.push(token)
                n = len(stream.ids)
                if stream.stopped:
                    out[rid] = Delta(text, n, "stop")
                elif n >= r.max_tokens:
                    out[rid] = Delta(text + stream.flush(), n, "length")
                else:
                    out[rid] = Delta(text, n)
                    self.pending[first + k] = token
                    continue
            finished.append(rid)
        self._drop(finished)
        return out

    def _drop(self, rids: Sequence[int]) -> None:
        """Rows leave the batch (and the KV cache); the cache's leading columns that no row uses go too."""
        if not rids:
            return
        gone = set(rids)
        for rid in gone:
            self.rows.pop(rid, None)
        keep = [k for k, rid in enumerate(self.live) if rid not in gone]
        self.live = [self.live[k] for k in keep]
        self.pending = [self.pending[k] for k in keep]
        if not keep:
            self.cache = self.mask = self.positions = None
            return
        index = torch.tensor(keep, dtype=torch.long)
        self.mask, self.positions = self.mask[index], self.positions[index]
        lead = int((self.mask.sum(0) == 0).long().cumprod(0).sum())  # columns every row masks out, from the left
        self.mask = self.mask[:, lead:]
        for layer in self.cache.layers:
            layer.keys = layer.keys[index.to(layer.keys.device), :, lead:]
            layer.values = layer.values[index.to(layer.values.device), :, lead:]


def _left_pad(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """Zeros before `x` along `dim` up to `width` (masked-out cache positions, or mask zeros)."""
    short = width - x.shape[dim]
    if short <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = short
    return torch.cat([x.new_zeros(shape), x], dim=dim)


def decode_all(model: Any, tokenizer: Any, requests: Sequence[GenRequest], eos_ids: Sequence[int], pad_id: int,
               with_adapters: bool = False) -> list[tuple[str, int, str]]:
    """Every request decoded in one batch: (text, completion tokens, finish reason) per request."""
    decoder = BatchDecoder(model, tokenizer, eos_ids, pad_id, with_adapters)
    ids = decoder.add(requests)
    texts, last = {i: "" for i in ids}, {}
    while not decoder.done:
        for i, d in decoder.step().items():
            texts[i] += d.text
            last[i] = d
    return [(texts[i], last[i].tokens, last[i].finish_reason) for i in ids]
