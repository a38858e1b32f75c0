"""task sft's records as prepare reads them (no Ray): every chat format of a JSONL or Parquet file becomes one
canonical conversation, and each bad record is rejected at its line with its reason, including the ones only
the run's chat template can find."""
import json

import pyarrow as pa
import pyarrow.parquet as pq

from chat_fixtures import R1_LIKE_TEMPLATE, chat_tokenizer
from test_data_readers import bad, parse, records

GOOD = [
    {"messages": [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]},
    {"instruction": "q2", "input": "ctx", "output": "a2"},
    {"conversations": [{"from": "human", "value": "q3"}, {"from": "gpt", "value": "a3"}]},
    {"prompt": "q4", "completion": "a4"},
]
# The same reasoning-bearing two-turn conversation: R1-like templates drop the first answer's reasoning
# when a later turn follows, so its first answer cannot be masked in the rendering of the whole.
R1_TWO_TURNS = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "<think>x</think>a"},
                             {"role": "user", "content": "q2"}, {"role": "assistant", "content": "b"}]}


def _spec(tmp_path, train_on="all_assistant"):
    folder = tmp_path / "tok"
    tok = chat_tokenizer("deepseek")
    tok.save_pretrained(folder)
    return json.dumps({"name_or_path": str(folder), "template": R1_LIKE_TEMPLATE, "train_on": train_on,
                       "overlong": "truncate_prompt", "packing": False})


def test_every_chat_format_in_jsonl_becomes_one_conversation_and_bad_records_are_rejected_at_their_line(tmp_path):
    path = tmp_path / "chats.jsonl"
    lines = [json.dumps(r) for r in GOOD] + [
        "{broken", json.dumps({"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}),
        json.dumps({"prompt": "q", "completion": "   "}), json.dumps({"text": "a", "label": "b"})]
    path.write_text("\n".join(lines) + "\n")
    rows = parse(path, chat_format="auto")
    good = [r for r in records(rows) if not r["reason"]]
    assert [json.loads(r["text"])[-1]["content"] for r in good] == ["a1", "a2", "a3", "a4"]
    assert json.loads(good[1]["text"])[0]["content"] == "q2\n\nctx"
    assert bad(rows) == [("chats.jsonl:5", "malformed_json"), ("chats.jsonl:6", "unknown_role"),
                         ("chats.jsonl:7", "empty_answer"), ("chats.jsonl:8", "unknown_format")]
    named = parse(path, chat_format="alpaca")  # a named format: the others are bad records
    assert [r["source_id"] for r in records(named) if not r["reason"]] == ["chats.jsonl:2"]


def test_parquet_rows_are_chat_records_too(tmp_path):
    path = tmp_path / "chats.parquet"
    pq.write_table(pa.Table.from_pylist([{"messages": GOOD[0]["messages"]}, {"messages": []}]), path)
    rows = parse(path, chat_format="messages")
    assert [r["source_id"] for r in records(rows) if not r["reason"]] == ["chats.parquet:row1"]
    assert bad(rows) == [("chats.parquet:row2", "no_assistant_turn")]


def test_a_conversation_the_template_cannot_mask_is_a_bad_record_unless_only_the_last_turn_trains(tmp_path):
    path = tmp_path / "chats.jsonl"
    path.write_text(json.dumps(GOOD[0]) + "\n" + json.dumps(R1_TWO_TURNS) + "\n")
    rows = parse(path, chat_format="auto", chat_check=_spec(tmp_path))
    assert bad(rows) == [("chats.jsonl:2", "template_not_incremental")]
    rows = parse(path, chat_format="auto", chat_check=_spec(tmp_path, "last_turn"))
    assert bad(rows) == []
