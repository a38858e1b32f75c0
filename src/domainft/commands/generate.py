"""`domainft generate MODEL_DIR --prompts FILE`: answers from a causal LM for a file of conversations.

setup (no Ray): MODEL_DIR is a causal LM (config.json), its tokenizer and chat template load, the stop tokens
are known; every record of FILE (JSONL or Parquet, any chat format of domainft.data.chat) parses. A record
whose last message is an assistant turn has that turn as its reference (removed from the prompt); any other
must end with a user turn. Bad records stop the command (--on-bad-record error) or go to <out>.rejects.jsonl.
run: distributed/generate.py on a Ray Data actor pool.
finish: <out> (one JSON line per record, input order), and with references the exact match / token F1 /
ROUGE-L means: printed and in <out>.metrics.json.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

from domainft.errors import UserError

ON_BAD_RECORD = ("error", "skip")
_PLACEHOLDER = "\x00domainft-generate-placeholder\x00"


@dataclass
class Prompt:
    line: int                      # 1-based line of a JSONL file, row of a Parquet file
    messages: list[dict]           # the prompt: ends with a user turn
    reference: Optional[str]       # the removed final assistant turn, if any


@dataclass
class Records:
    prompts: list[Prompt] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)  # {"line", "reason", "detail", "record"}


def default_out(prompts: str) -> str:
    """FILE's path with its extension replaced by `.answers.jsonl`."""
    return str(Path(prompts).with_suffix(".answers.jsonl"))


def side_file(out: str, what: str) -> str:
    """`answers.jsonl` -> `answers.metrics.json` / `answers.rejects.jsonl`."""
    return str(Path(out).with_suffix(what))


def run_generate(model_dir: str, prompts: str, out: Optional[str] = None, max_new_tokens: int = 256,
                 temperature: float = 0.0, top_p: float = 1.0, seed: Optional[int] = None, batch_size: int = 8,
                 num_actors: Optional[int] = None, chat_template: str = "auto",
                 on_bad_record: str = "error") -> dict:
    """Setup checks (before Ray), generation on Ray, then the answers file and the scores.

    Returns:
        The summary written to <out>.metrics.json (scores only when some record has a reference).
    """
    from domainft import console

    t0 = time.time()
    out = out or default_out(prompts)
    if os.path.abspath(out) == os.path.abspath(prompts):
        raise UserError(f"--out {out} is the prompts file itself; give another path")
    # setup: everything that can be wrong with the input fails here, before Ray starts
    config = check_model_dir(model_dir)
    records = read_records(prompts, on_bad_record, side_file(out, ".rejects.jsonl"))
    settings, notes = model_settings(model_dir, config, chat_template, max_new_tokens, batch_size, temperature,
                                     top_p, seed)
    for line in notes:
        print(line)
    _write_rejects(side_file(out, ".rejects.jsonl"), records.rejects)
    if records.rejects:
        print(f"skipped {len(records.rejects)} bad record(s) of {prompts}: {side_file(out, '.rejects.jsonl')}")
    console.setup_logging(str(Path.home() / ".cache" / "domainft" / "generate"))  # logs/domainft.log there
    # run: the actor pool
    from domainft.distributed.generate import generate_on_ray

    with console.native_to_log():
        answers = generate_on_ray([p.messages for p in records.prompts], settings, num_actors)
    # finish: the answers in input order, the scores
    _write_answers(out, records.prompts, answers)
    truncated = sum(a["truncated"] for a in answers)
    if truncated:
        print(f"{truncated} prompt(s) longer than {settings['max_prompt_tokens']} tokens (the model's positions less "
              f"--max-new-tokens) lost their start (left-truncated)")
    summary = {"model_dir": model_dir, "prompts": prompts, "answers": out, "records": len(records.prompts),
               "skipped": len(records.rejects), "truncated": truncated,
               "answer_tokens": sum(a["answer_tokens"] for a in answers),
               "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "seed": seed,
               "seconds": round(time.time() - t0, 1)}
    print(f"{len(answers)} answer(s) -> {out}")
    scored = [(a["answer"], p.reference) for p, a in zip(records.prompts, answers) if p.reference is not None]
    if scored:
        from domainft.core.textmetrics import score_samples

        summary["scores"] = score_samples([a for a, _ in scored], [r for _, r in scored])
        summary["scored"] = len(scored)
        print(format_scores(summary["scores"], len(scored)))
        _write_json(side_file(out, ".metrics.json"), summary)
        print(f"scores: {side_file(out, '.metrics.json')}")
    for line in console.closing_lines(str(Path.home() / ".cache" / "domainft" / "generate")):
        print(line)
    return summary


def format_scores(scores: dict, n: int) -> str:
    rows = [("exact match", scores["exact_match"]), ("token F1", scores["token_f1"]), ("ROUGE-L", scores["rouge_l"])]
    return "\n".join([f"scores against the {n} reference answer(s) (means):"]
                     + [f"  {name:<12} {value:.4f}" for name, value in rows])


def check_model_dir(model_dir: str) -> dict:
    """MODEL_DIR's config.json, when it is a causal LM; else a UserError saying what it is."""
    from domainft.serving.llm.model import read_causal_lm_config

    return read_causal_lm_config(model_dir, "MODEL_DIR")


def model_settings(model_dir: str, config: dict, chat_template: str, max_new_tokens: int, batch_size: int,
                   temperature: float, top_p: float, seed: Optional[int]):
    """The actors' settings from MODEL_DIR (a plain dict: it crosses the Ray boundary; the fields of
    distributed.generate.Settings): the template text, stop ids, pad id, the longest prompt.
    Returns (settings, lines to print)."""
    from domainft.serving.llm.model import lm_settings, load_lm_tokenizer

    if temperature < 0:
        raise UserError(f"--temperature must be 0 (greedy) or more, got {temperature}")
    if not 0 < top_p <= 1:
        raise UserError(f"--top-p must be in (0, 1], got {top_p}")
    lm = lm_settings(model_dir, config, load_lm_tokenizer(model_dir), chat_template)
    room = lm.positions - max_new_tokens if lm.positions else 1 << 30
    if room < 1:
        raise UserError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the model's "
                        f"{lm.positions} positions")
    return dict(model_dir=model_dir, template=lm.template, eos_ids=lm.eos_ids, pad_id=lm.pad_id,
                max_prompt_tokens=room, max_new_tokens=max_new_tokens, batch_size=batch_size,
                temperature=temperature, top_p=top_p, seed=seed), lm.notes


def read_records(path: str, on_bad_record: str = "error", rejects_path: Optional[str] = None) -> Records:
    """Every record of a JSONL or Parquet file as a Prompt. A bad one (bad JSON, a chat.RecordError, a
    conversation that ends with neither a user nor an assistant turn) raises a UserError naming file:line
    ("error") or goes to `rejects` ("skip")."""
    if on_bad_record not in ON_BAD_RECORD:
        raise ValueError(f"on_bad_record must be one of {ON_BAD_RECORD}, not {on_bad_record!r}")
    if not os.path.isfile(path):
        raise UserError(f"--prompts {path!r}: no such file")
    out = Records()
    for line, raw, obj, error in _raw_records(path):
        if error is None:
            try:
                out.prompts.append(to_prompt(obj, line))
                continue
            except ValueError as e:  # chat.RecordError, or the prompt's own checks
                error = (getattr(e, "reason", "bad_record"), getattr(e, "detail", str(e)))
        if on_bad_record == "error":
            hint = f" (--on-bad-record skip writes such records to {rejects_path} and goes on)" if rejects_path else ""
            raise UserError(f"{path}:{line}: {error[0]}: {error[1]}{hint}")
        out.rejects.append({"line": line, "reason": error[0], "detail": error[1], "record": raw})
    if not out.prompts:
        raise UserError(f"--prompts {path}: no usable record" + (
            f" ({len(out.rejects)} rejected; see {rejects_path})" if out.rejects else " (the file is empty)"))
    return out


def _raw_records(path: str) -> Iterator[tuple[int, str, Any, Optional[tuple[str, str]]]]:
    """(line, raw text, parsed object or None, (reason, detail) or None) per record; blank lines skipped."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a file that is not Parquet
            raise UserError(f"--prompts {path}: cannot read it as Parquet: {e}") from None
        for n, row in enumerate(rows, 1):
            row = {k: v for k, v in row.items() if v is not None}  # a null column: the key is absent in this row
            yield n, json.dumps(row, ensure_ascii=False, default=str), row, None
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                yield n, text.rstrip("\n"), json.loads(text), None
            except ValueError as e:
                yield n, text.rstrip("\n"), None, ("bad_json", str(e))


def to_prompt(obj: Any, line: int = 0) -> Prompt:
    """A record in any chat format -> its prompt (ending with a user turn) and reference (the final assistant
    turn, removed from the prompt), or None. Raises chat.RecordError / ValueError for a bad record."""
    messages = _messages(obj)
    reference = None
    if messages and messages[-1]["role"] == "assistant":
        reference = messages.pop()["content"]
    if not messages or messages[-1]["role"] != "user":
        last = messages[-1]["role"] if messages else "nothing"
        raise _record_error("no_user_turn", f"the prompt ends with {last}; it must end with a user turn (a final "
                                            f"assistant turn is the reference)")
    return Prompt(line, messages, reference)


def _messages(obj: Any) -> list[dict]:
    """chat.to_messages, also for a prompt without an answer (which it rejects, being made for training): the
    record gets a placeholder answer where its format keeps one, is read, and the placeholder is dropped."""
    from domainft.data.chat import RecordError, to_messages

    try:
        return to_messages(obj)
    except RecordError as e:
        if e.reason not in ("no_assistant_turn", "unknown_format") or not isinstance(obj, dict):
            raise
        probe = _with_placeholder(obj)
        if probe is None:
            raise
    messages = to_messages(probe)
    if messages[-1] != {"role": "assistant", "content": _PLACEHOLDER}:
        raise _record_error("bad_record", "the record could not be read as a prompt")
    return messages[:-1]


def _with_placeholder(obj: dict) -> Optional[dict]:
    if isinstance(obj.get("messages"), list):
        return {**obj, "messages": [*obj["messages"], {"role": "assistant", "content": _PLACEHOLDER}]}
    if isinstance(obj.get("conversations"), list):
        return {**obj, "conversations": [*obj["conversations"], {"from": "gpt", "value": _PLACEHOLDER}]}
    if "instruction" in obj and obj.get("output") is None:  # Alpaca without an output
        return {**obj, "output": _PLACEHOLDER}
    if "prompt" in obj and obj.get("completion") is None:
        return {**obj, "completion": _PLACEHOLDER}
    return None


def _record_error(reason: str, detail: str) -> ValueError:
    from domainft.data.chat import RecordError

    return RecordError(reason, detail)


def _write_rejects(path: str, rejects: list[dict]) -> None:
    if not rejects:
        if os.path.isfile(path):
            os.remove(path)  # a previous run's: it would describe another input
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for r in rejects:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def _write_answers(path: str, prompts: list[Prompt], answers: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for p, a in zip(prompts, answers):
            f.write(json.dumps({"line": p.line, "messages": p.messages, "answer": a["answer"],
                                "reference": p.reference}, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _write_json(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")
