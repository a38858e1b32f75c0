"""task sft's part of data_report.json, read back from the written splits (their small columns only): the
token lengths and their histogram, conversations truncated or dropped as too long, packing, the chat
template and the tokens that end an answer; and the eval rows that generation samples. No Ray."""
from __future__ import annotations

import json
from typing import Any, Mapping

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from domainft.config import Config


def sft_report(cfg: Config, report: Mapping, planned: Mapping[str, int]) -> dict:
    """{"task": "sft", "sft": {...}} for the data report, from the written Parquet of both splits."""
    from domainft.data.chat import resolve_template
    from domainft.data.tokenize import load_tokenizer

    d, m = cfg.data, cfg.model
    tokenizer = load_tokenizer(m.name_or_path, m.revision, m.trust_remote_code)
    template = resolve_template(tokenizer, d.chat_template)
    splits = {}
    for split, path in (("train", report["train_dir"]), ("eval", report["eval_dir"])):
        table = pads.dataset(path, format="parquet").to_table(columns=["n_tokens", "n_truncated", "labels"])
        lengths = pc.list_flatten(table.column("n_tokens")).to_numpy(zero_copy_only=False)
        answer_tokens = int(sum(int(np.count_nonzero(np.asarray(r) != -100)) for r in
                                table.column("labels").to_pylist()))
        examples = int(len(lengths))
        splits[split] = {
            "conversations": examples, "rows": table.num_rows,
            "dropped_too_long": int(planned[split]) - examples,
            "truncated": int(pc.sum(table.column("n_truncated")).as_py() or 0),
            "tokens": int(lengths.sum()), "answer_tokens": answer_tokens,
            "length_mean": round(float(lengths.mean()), 1) if examples else 0.0,
            "length_max": int(lengths.max()) if examples else 0,
            "length_histogram": _histogram(lengths, d.max_length),
        }
    stop_ids = end_of_turn_ids(tokenizer, template)
    return {"task": "sft", "sft": {
        "chat_template": template, "template_source": d.chat_template, "train_on": d.train_on, "overlong": d.overlong,
        "packing": d.packing, "max_length": d.max_length, "stop_token_ids": stop_ids,
        "stop_tokens": tokenizer.convert_ids_to_tokens(stop_ids), **{f"{k}": v for k, v in splits.items()}}}


def end_of_turn_ids(tokenizer: Any, template: str) -> list[int]:
    """The ids generation stops at: the template's end-of-turn token (e.g. <|im_end|>), then the EOS token."""
    from domainft.data.chat import ChatEncoder

    token, _ = ChatEncoder(tokenizer, template).end_of_turn()
    ids = []
    if token:
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and found != tokenizer.unk_token_id:
            ids.append(found)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))


def _histogram(lengths: np.ndarray, max_length: int) -> list[dict]:
    from domainft.data.chat import length_histogram

    return length_histogram([int(x) for x in lengths], max_length)


def format_sft_report(r: Mapping) -> list[str]:
    """The report table's SFT lines (in place of the label table)."""
    s = r["sft"]
    lines = [f"  {'chat template':<28}{s['template_source']:>10}   (loss on {s['train_on'].replace('_', ' ')} turns; "
             f"answers end with {', '.join(s['stop_tokens'])})"]
    for split in ("train", "eval"):
        x = s[split]
        rows = f", {x['rows']} packed rows" if s["packing"] and split == "train" else ""
        lines.append(f"  {split + ' conversations':<28}{x['conversations']:>10}   ({x['tokens']:,} tokens, "
                     f"{x['answer_tokens']:,} in the loss{rows}; mean {x['length_mean']}, longest {x['length_max']})")
        if x["truncated"] or x["dropped_too_long"]:
            lines.append(f"  {'  over max_length':<28}{x['truncated'] + x['dropped_too_long']:>10}   "
                         f"({x['truncated']} cut from the left, {x['dropped_too_long']} dropped: data.overlong "
                         f"{s['overlong']}, data.max_length {s['max_length']})")
    hist = s["train"]["length_histogram"]
    if hist:
        top = max(b["count"] for b in hist) or 1
        lines.append("  train tokens per conversation (before truncation):")
        for b in hist:
            span = f"{b['from']}-{b['to']}" if b.get("to") is not None else f"> {b['from'] - 1}"
            lines.append(f"    {span:>13} {b['count']:>8}  {'#' * max(0, round(30 * b['count'] / top))}")
    return lines


def eval_samples(eval_dir: str, n: int) -> list[dict]:
    """The first `n` eval rows (in source order) to generate from: prompt ids, reference, messages."""
    table = pads.dataset(eval_dir, format="parquet").to_table(columns=["prompt_ids", "reference", "text", "source_id"])
    order = sorted(range(table.num_rows), key=lambda i: _source_key(table.column("source_id")[i].as_py()))[:n]
    rows = table.take(order).to_pylist()
    return [{"prompt_ids": r["prompt_ids"], "reference": r["reference"], "source_id": r["source_id"],
             "messages": _prompt_messages(r["text"])} for r in rows]


def _source_key(source_id: str) -> tuple:
    name, _, where = source_id.rpartition(":")
    digits = "".join(ch for ch in where if ch.isdigit())
    return (name, int(digits) if digits else 0)


def _prompt_messages(text: str) -> Any:
    messages = json.loads(text)
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return messages[:last]
