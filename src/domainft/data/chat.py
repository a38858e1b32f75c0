"""Generative SFT data for chat LLMs, pure (no Ray, no torch; transformers only inside functions).

records   `to_messages`: OpenAI messages, ShareGPT, Alpaca, prompt/completion -> [{"role", "content"}, ...]
templates `resolve_template` / `render` (in chat_templates.py): the tokenizer's chat template or a fallback
mask      `ChatEncoder`: input ids with labels only on the trained assistant turns, found by rendering the
          conversation prefix by prefix (works with any incremental template, no {% generation %} markers needed)
rows      `pack_groups`, `packed_row`, `sft_table` (what a Ray Data actor calls per batch), `length_histogram`
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import numpy as np
import pyarrow as pa

from domainft.data.chat_templates import FALLBACK_TEMPLATES, render, resolve_template
from domainft.data.tokenize import ids_to_arrow, load_tokenizer
from domainft.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["ROLES", "FORMATS", "REASONS", "TRAIN_ON", "OVERLONG", "IGNORE", "FALLBACK_TEMPLATES", "SFT_SCHEMA",
           "RecordError", "detect_format", "to_messages", "resolve_template", "render", "Encoded", "ChatEncoder",
           "chat_encoder_from_spec", "pack_groups", "packed_row", "sft_table", "length_histogram"]

ROLES = ("system", "user", "assistant")
FORMATS = ("messages", "alpaca", "sharegpt", "prompt_completion")
REASONS = ("unknown_format", "bad_type", "unknown_role", "no_assistant_turn", "empty_answer", "empty_message",
           "template_not_incremental", "template_error")
TRAIN_ON = ("all_assistant", "last_turn")
OVERLONG = ("truncate_prompt", "drop")
IGNORE = -100  # Hugging Face's label for "no loss here"

# "developer" is OpenAI's newer name for the system role.
_MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "model": "assistant"}


class RecordError(ValueError):
    """One bad record: `reason` (one of REASONS), `detail` a short sentence naming the field."""

    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}")


class _Turn(NamedTuple):
    role: str
    content: str
    role_at: str     # where the role came from, for messages ("messages[2].role")
    content_at: str  # where the content came from ("conversations[1].value", "output")


_MISSING = object()


def _kind(value: Any) -> str:
    if value is _MISSING:
        return "missing"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    return "a list" if isinstance(value, list) else f"a {type(value).__name__}"


def _want(value: Any, typ: type, at: str) -> Any:
    """`value` if it has the JSON type `typ` (str, list or Mapping), else RecordError("bad_type") naming `at`."""
    if isinstance(value, typ):
        return value
    expected = {str: "a string", list: "a list", Mapping: "an object"}[typ]
    raise RecordError("bad_type", f"{at} is {_kind(value)}, expected {expected}")


def _optional_str(obj: Mapping, key: str) -> str:
    """An optional string field; absent, null or blank all mean "none" (Alpaca files often carry "input": "")."""
    value = obj.get(key)
    return "" if value is None else _want(value, str, key)


def detect_format(obj: Mapping) -> str:
    """The record's format from its keys (one of FORMATS); RecordError("unknown_format") when none fits."""
    _want(obj, Mapping, "the record")
    if "messages" in obj:
        return "messages"
    if "conversations" in obj:
        return "sharegpt"
    if "instruction" in obj and "output" in obj:
        return "alpaca"
    if "prompt" in obj and "completion" in obj:
        return "prompt_completion"
    keys = sorted(map(str, obj))
    shown = ", ".join(keys[:8]) + (f" and {len(keys) - 8} more" if len(keys) > 8 else "") if keys else "no keys"
    raise RecordError("unknown_format", f"the record has keys {shown}; expected messages, conversations, "
                                        f"instruction and output, or prompt and completion")


def _text_content(content: Any, at: str) -> str:
    """OpenAI content: a string, or a list of {"type": "text", "text": ...} parts joined with ""."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise RecordError("bad_type", f"{at} is {_kind(content)}, expected a string or a list of text parts")
    texts = []
    for j, part in enumerate(content):
        part = _want(part, Mapping, f"{at}[{j}]")
        if part.get("type") != "text":
            raise RecordError("bad_type", f"{at}[{j}].type {part.get('type')!r} is not 'text' (only text parts "
                                          f"are supported)")
        texts.append(_want(part.get("text", _MISSING), str, f"{at}[{j}].text"))
    return "".join(texts)


def _from_messages(obj: Mapping) -> tuple[list[_Turn], str]:
    turns = []
    for i, m in enumerate(_want(obj["messages"], list, "messages")):
        at = f"messages[{i}]"
        m = _want(m, Mapping, at)
        role = _want(m.get("role", _MISSING), str, f"{at}.role")
        if role not in _MESSAGE_ROLES:
            raise RecordError("unknown_role", f"{at}.role {role!r} is not one of {', '.join(ROLES)}")
        turns.append(_Turn(_MESSAGE_ROLES[role], _text_content(m.get("content", _MISSING), f"{at}.content"),
                           f"{at}.role", f"{at}.content"))
    return turns, "messages"


def _from_sharegpt(obj: Mapping) -> tuple[list[_Turn], str]:
    system = _optional_str(obj, "system")
    turns = [_Turn("system", system, "system", "system")] if system.strip() else []
    for i, c in enumerate(_want(obj["conversations"], list, "conversations")):
        at = f"conversations[{i}]"
        c = _want(c, Mapping, at)
        sender = _want(c.get("from", _MISSING), str, f"{at}.from")
        if sender.lower() not in _SHAREGPT_ROLES:
            raise RecordError("unknown_role", f"{at}.from {sender!r} is not one of {', '.join(_SHAREGPT_ROLES)}")
        turns.append(_Turn(_SHAREGPT_ROLES[sender.lower()], _want(c.get("value", _MISSING), str, f"{at}.value"),
                           f"{at}.from", f"{at}.value"))
    return turns, "conversations"


def _from_alpaca(obj: Mapping) -> tuple[list[_Turn], str]:
    system = _optional_str(obj, "system")
    instruction, extra = _want(obj["instruction"], str, "instruction"), _optional_str(obj, "input")
    # The input follows the instruction after a blank line; either may be empty, not both.
    prompt = "\n\n".join(p for p in (instruction, extra) if p.strip())
    turns = [_Turn("system", system, "system", "system")] if system.strip() else []
    return turns + [_Turn("user", prompt, "instruction", "instruction"),
                    _Turn("assistant", _want(obj["output"], str, "output"), "output", "output")], "record"


def _from_prompt_completion(obj: Mapping) -> tuple[list[_Turn], str]:
    system = _optional_str(obj, "system")
    turns = [_Turn("system", system, "system", "system")] if system.strip() else []
    return turns + [_Turn("user", _want(obj["prompt"], str, "prompt"), "prompt", "prompt"),
                    _Turn("assistant", _want(obj["completion"], str, "completion"), "completion", "completion")
                    ], "record"


_READERS = {"messages": _from_messages, "sharegpt": _from_sharegpt, "alpaca": _from_alpaca,
            "prompt_completion": _from_prompt_completion}


def to_messages(obj: Mapping, fmt: str = "auto") -> list[dict[str, str]]:
    """One record -> [{"role", "content"}, ...] (roles in ROLES, content text unchanged, other keys dropped).

    Raises RecordError (reason in REASONS, detail naming the field) for a record that cannot be trained on:
    wrong types, unknown roles, a system message after the first, an empty message or answer, or no
    assistant message after a prompt. A trailing user turn is allowed (it is simply not trained)."""
    if fmt == "auto":
        fmt = detect_format(obj)
    elif fmt not in _READERS:
        raise ValueError(f"fmt must be auto or one of {', '.join(FORMATS)}, not {fmt!r}")
    else:
        _want(obj, Mapping, "the record")
        needed = {"messages": ("messages",), "sharegpt": ("conversations",), "alpaca": ("instruction", "output"),
                  "prompt_completion": ("prompt", "completion")}[fmt]
        for key in needed:
            if key not in obj:
                raise RecordError("bad_type", f"{key} is missing (format {fmt})")
    turns, container = _READERS[fmt](obj)
    for k, t in enumerate(turns):
        if t.role == "system" and k > 0:
            raise RecordError("unknown_role", f"{t.role_at}: a system message is only allowed first")
        if not t.content.strip():
            if t.role == "assistant":
                raise RecordError("empty_answer", f"{t.content_at} (an assistant answer) is empty")
            raise RecordError("empty_message", f"{t.content_at} ({t.role}) is empty")
    answers = [k for k, t in enumerate(turns) if t.role == "assistant"]
    if not answers:
        raise RecordError("no_assistant_turn", f"{container} has no assistant message")
    if answers == [0]:  # nothing before it to answer: there is no prompt to train it from
        raise RecordError("no_assistant_turn", f"{container} has no assistant message after a prompt (the only one "
                                               f"is the first message)")
    return [{"role": t.role, "content": t.content} for t in turns]


def prompt_messages(messages: Any) -> list[dict[str, str]]:
    """An OpenAI `messages` list to prompt with (serving): the checks of `to_messages` on roles, types and empty
    messages, without needing an answer. Raises RecordError naming `messages[i]...`."""
    turns, _ = _from_messages({"messages": messages})
    if not turns:
        raise RecordError("empty_message", "messages is empty; send at least one message")
    for k, t in enumerate(turns):
        if t.role == "system" and k > 0:
            raise RecordError("unknown_role", f"{t.role_at}: a system message is only allowed first")
        if not t.content.strip() and t.role != "assistant":
            raise RecordError("empty_message", f"{t.content_at} ({t.role}) is empty")
    return [{"role": t.role, "content": t.content} for t in turns]


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]        # same length; IGNORE (-100) where no loss (the model shifts them by one)
    prompt_ids: list[int]    # up to the last assistant turn, with the generation prompt: what generation starts from
    reference: str           # the last assistant turn's content
    n_tokens: int            # the full rendering's length before truncation
    truncated: bool
    dropped: Optional[str] = None  # None, or "too_long" (then input_ids and labels are empty)


class _Plan(NamedTuple):
    text: str                      # the rendering, EOS inserted after each trained answer when the template has none
    spans: list[tuple[int, int]]   # trained character spans of `text`: answer + what the template writes after it
    prompt: str
    reference: str


_PROBE = [{"role": "user", "content": "Probe question?"}, {"role": "assistant", "content": "Probe-answer-7"}]


class ChatEncoder:
    """Conversations -> input ids and assistant-only labels, with one chat template.

    Each trained assistant turn i spans [len(P_i), len(S_i)) of the full rendering F, where P_i renders the
    messages before it with the generation prompt and S_i the messages up to it: the answer and what the
    template writes after it (its end-of-turn token), so the model learns to stop. This needs S_i to start
    with P_i and F with S_i (RecordError "template_not_incremental" otherwise). An assistant message that is
    the very first message has no prompt and is never trained.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, template: str, train_on: str = "all_assistant",
                 max_length: int = 2048, overlong: str = "truncate_prompt", packing: bool = False):
        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, not {train_on!r}")
        if overlong not in OVERLONG:
            raise ValueError(f"overlong must be one of {', '.join(OVERLONG)}, not {overlong!r}")
        if max_length < 2:
            raise ValueError(f"max_length must be at least 2, not {max_length}")
        if not getattr(tokenizer, "is_fast", False):
            raise UserError(f"model.name_or_path: the tokenizer of {tokenizer.name_or_path} is not a fast tokenizer; "
                            f"the assistant-only loss mask needs its character offsets")
        self.tokenizer, self.template, self.train_on = tokenizer, template, train_on
        self.max_length, self.overlong, self.packing = max_length, overlong, packing
        self._end = self._probe_end_of_turn()
        if self._end[1] and not tokenizer.eos_token:
            raise UserError(f"data.chat_template: the template writes no end-of-turn token after an answer and the "
                            f"tokenizer of {tokenizer.name_or_path} has no EOS token to append; a model trained so "
                            f"would never stop: choose a template that ends its turns")
        self._eos = tokenizer.eos_token if self._end[1] else ""

    def end_of_turn(self) -> tuple[Optional[str], bool]:
        """(the first special token the template writes right after an answer, e.g. "<|im_end|>", or None;
        whether there is none, so that EOS is appended to each trained answer)."""
        return self._end

    def _probe_end_of_turn(self) -> tuple[Optional[str], bool]:
        try:
            text = self._render(_PROBE, False)
        except RecordError as e:
            raise UserError(f"data.chat_template: rendering a two-message conversation failed: {e.detail}") from None
        answer = _PROBE[1]["content"]
        at = text.rfind(answer)
        if at < 0:
            raise UserError("data.chat_template: the chat template does not write an assistant message's content "
                            "as given, so its answers cannot be located for the loss mask")
        after = text[at + len(answer):]
        tok = self.tokenizer
        specials = set(tok.all_special_tokens) | {t.content for t in tok.added_tokens_decoder.values() if t.special}
        found = [(after.find(s), -len(s), s) for s in specials if s and s in after]
        return (min(found)[2], False) if found else (None, True)

    def _render(self, messages: Sequence[Mapping], add_generation_prompt: bool) -> str:
        from jinja2.exceptions import TemplateError

        try:
            return render(self.tokenizer, messages, self.template, add_generation_prompt)
        except (TemplateError, ValueError, TypeError) as e:  # raise_exception() in templates: alternation rules
            raise RecordError("template_error", f"the chat template failed: {e}") from None

    def _plan(self, messages: Sequence[Mapping]) -> _Plan:
        answers = [i for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0]
        if not answers:
            raise RecordError("no_assistant_turn", "the conversation has no assistant message after a prompt")
        trained = answers if self.train_on == "all_assistant" else answers[-1:]
        full = self._render(messages, False)
        pieces, spans, cursor, prompt = [], [], 0, ""
        for i in trained:
            prompt = self._render(messages[:i], True)
            upto = full if i == len(messages) - 1 else self._render(messages[: i + 1], False)
            if not (upto.startswith(prompt) and full.startswith(upto)):
                hint = ("; train_on: last_turn avoids this when only earlier turns render differently (R1-style "
                        "templates drop earlier turns' reasoning)" if i != trained[-1] else "")
                raise RecordError("template_not_incremental",
                                  f"the chat template does not render messages[{i}] (assistant) as an extension of "
                                  f"the messages before it and a prefix of the whole conversation{hint}")
            # The EOS text (when the template writes no end-of-turn token) goes in at the span's end.
            shift = len(self._eos) * len(spans)
            spans.append((len(prompt) + shift, len(upto) + shift + len(self._eos)))
            pieces += [full[cursor:len(upto)], self._eos]
            cursor = len(upto)
        pieces.append(full[cursor:])
        return _Plan("".join(pieces), spans, prompt, str(messages[answers[-1]]["content"]))

    def _tokenize(self, texts: list[str], offsets: bool) -> tuple[list[list[int]], list]:
        if not texts:
            return [], []
        # add_special_tokens=False: the template carries BOS, as apply_chat_template(tokenize=True) does.
        out = self.tokenizer(texts, add_special_tokens=False, return_offsets_mapping=offsets,
                             return_attention_mask=False, return_token_type_ids=False)
        return out["input_ids"], (out["offset_mapping"] if offsets else [])

    def _finish(self, plan: _Plan, ids: list[int], offsets: list, prompt_ids: list[int]) -> Encoded:
        n = len(ids)
        arr = np.asarray(ids, dtype=np.int64)
        starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=n)
        labels = np.full(n, IGNORE, dtype=np.int64)
        last = np.zeros(n, dtype=bool)
        for a, b in plan.spans:  # a token is trained iff it starts inside a trained span
            last = (starts >= a) & (starts < b)
            labels[last] = arr[last]
        prompt_ids = prompt_ids[-self.max_length:]
        if n <= self.max_length:
            return Encoded(ids, labels.tolist(), prompt_ids, plan.reference, n, False)
        dropped = Encoded([], [], prompt_ids, plan.reference, n, False, "too_long")
        if self.overlong == "drop" or not last.any():
            return dropped
        first, end = int(np.argmax(last)), n - int(np.argmax(last[::-1]))
        # Tokens after the last trained answer (a trailing user turn) carry no loss: they go first. Then the
        # start goes (system prompt, early turns), keeping at least one prompt token before the answer.
        begin = max(0, end - self.max_length)
        if begin >= first:
            return dropped
        return Encoded(arr[begin:end].tolist(), labels[begin:end].tolist(), prompt_ids, plan.reference, n, True)

    def _encode_plans(self, plans: Sequence[_Plan]) -> list[Encoded]:
        ids, offsets = self._tokenize([p.text for p in plans], True)
        prompts, _ = self._tokenize([p.prompt for p in plans], False)
        return [self._finish(*args) for args in zip(plans, ids, offsets, prompts)]

    def check(self, messages: Sequence[Mapping]) -> None:
        """Raise RecordError when the template cannot render or mask this conversation (no tokenizing)."""
        self._plan(messages)

    def encode(self, messages: Sequence[Mapping]) -> Encoded:
        """One conversation (as `to_messages` returns it); RecordError when the template cannot be masked."""
        return self._encode_plans([self._plan(messages)])[0]

    def encode_batch(self, conversations: Sequence[Sequence[Mapping]]) -> list[Encoded]:
        """`encode` for many, tokenized in one call (the fast tokenizer batches in Rust)."""
        return self._encode_plans([self._plan(m) for m in conversations])


def chat_encoder_from_spec(spec: dict, max_length: int) -> ChatEncoder:
    """A worker's encoder from the driver's plain-dict spec: name_or_path, revision, trust_remote_code,
    template (the resolved TEXT, not a name), train_on, overlong, packing."""
    tokenizer = load_tokenizer(spec["name_or_path"], spec.get("revision"), spec.get("trust_remote_code", False))
    return ChatEncoder(tokenizer, spec["template"], spec["train_on"], max_length, spec["overlong"],
                       packing=bool(spec.get("packing", False)))


def pack_groups(lengths: Sequence[int], max_length: int) -> list[list[int]]:
    """Indices grouped into rows of total length <= max_length: greedy first fit in the given order
    (deterministic); every index exactly once."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        if n > max_length:
            raise ValueError(f"length {n} at index {i} exceeds max_length {max_length}")
        for r, free in enumerate(room):
            if n <= free:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max_length - n)
    return rows


def packed_row(examples: Sequence[Encoded]) -> dict:
    """Examples concatenated into one row: input_ids, labels, position_ids (restarting at 0 per example).
    Each example's first label is IGNORE: the model shifts labels by one, so the last token of example k
    would otherwise be trained to predict example k+1's first token."""
    input_ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for e in examples:
        input_ids += e.input_ids
        labels += ([IGNORE] + e.labels[1:]) if e.labels else []
        positions += range(len(e.input_ids))
    return {"input_ids": input_ids, "labels": labels, "position_ids": positions}


SFT_SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())), ("position_ids", pa.list_(pa.int32())),
    ("n_tokens", pa.list_(pa.int32())), ("n_truncated", pa.int32()), ("prompt_ids", pa.list_(pa.int32())),
    ("reference", pa.string()), ("text", pa.string()), ("source_id", pa.string()),
])


def sft_table(encoder: ChatEncoder, table: pa.Table) -> pa.Table:
    """A batch of canonical conversations (`text`: the messages as JSON; `source_id`) -> SFT_SCHEMA rows,
    packed within the batch when `encoder.packing`. Examples dropped as too long are left out (the caller
    counts them as input rows minus sum(len(n_tokens))). Raises UserError naming the record when the
    template cannot be masked for it."""
    texts = table.column("text").to_pylist()
    sources = table.column("source_id").cast(pa.string()).to_pylist()
    plans = []
    for text, source in zip(texts, sources):
        try:
            plans.append(encoder._plan(json.loads(text)))
        except RecordError as e:
            raise UserError(f"data.chat_template: {source}: {e.reason}: {e.detail}") from None
    kept = [(e, t, s) for e, t, s in zip(encoder._encode_plans(plans), texts, sources) if e.dropped is None]
    if encoder.packing:
        groups = pack_groups([len(e.input_ids) for e, _, _ in kept], encoder.max_length)
    else:
        groups = [[i] for i in range(len(kept))]
    rows = [packed_row([kept[i][0] for i in g]) for g in groups]
    one = not encoder.packing
    return pa.table({
        "input_ids": ids_to_arrow([r["input_ids"] for r in rows]),
        "labels": ids_to_arrow([r["labels"] for r in rows]),
        "position_ids": ids_to_arrow([r["position_ids"] for r in rows]),
        "n_tokens": ids_to_arrow([[kept[i][0].n_tokens for i in g] for g in groups]),
        "n_truncated": pa.array([sum(kept[i][0].truncated for i in g) for g in groups], pa.int32()),
        "prompt_ids": ids_to_arrow([kept[g[0]][0].prompt_ids if one else [] for g in groups]),
        "reference": pa.array([kept[g[0]][0].reference if one else "" for g in groups], pa.string()),
        "text": pa.array([kept[g[0]][1] if one else json.dumps([kept[i][1] for i in g], ensure_ascii=False)
                          for g in groups], pa.string()),
        "source_id": pa.array([",".join(kept[i][2] for i in g) for g in groups], pa.string()),
    }, schema=SFT_SCHEMA)


def length_histogram(lengths: Sequence[int], max_length: int, bins: int = 8) -> list[dict]:
    """Token lengths in equal-width bins up to max_length ({"from", "to", "count"}, bounds inclusive), then
    one bin for the overlong ones: {"from": max_length + 1, "to": None, "count": n}."""
    if max_length < 1 or bins < 1:
        raise ValueError("max_length and bins must be positive")
    width = -(-max_length // bins)
    edges = [(lo, min(lo + width - 1, max_length)) for lo in range(1, max_length + 1, width)]
    arr = np.asarray(lengths, dtype=np.int64).reshape(-1)
    inside = arr[arr <= max_length]
    counts = np.bincount(np.clip((inside - 1) // width, 0, len(edges) - 1), minlength=len(edges))
    out = [{"from": lo, "to": hi, "count": int(c)} for (lo, hi), c in zip(edges, counts)]
    return out + [{"from": max_length + 1, "to": None, "count": int((arr > max_length).sum())}]
