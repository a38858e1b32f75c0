"""Chat SFT rows: packing, the prepared table (schema, dropped rows), the length histogram."""
import json

import pyarrow as pa
import pytest
from chat_fixtures import chat_tokenizer

from domainft.data.chat import (SFT_SCHEMA, ChatEncoder, Encoded, length_histogram, pack_groups, packed_row,
                                sft_table)
from domainft.errors import UserError


def test_pack_groups_is_first_fit_in_order():
    assert pack_groups([5, 3, 4, 2, 6], 8) == [[0, 1], [2, 3], [4]]
    assert pack_groups([6, 5, 2, 3], 8) == [[0, 2], [1, 3]]  # first fit, not next fit
    assert pack_groups([], 8) == []
    lengths = [7, 1, 3, 8, 2, 2, 5, 4, 1]
    groups = pack_groups(lengths, 8)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in g) <= 8 for g in groups) and all(g == sorted(g) for g in groups)
    with pytest.raises(ValueError, match="exceeds max_length"):
        pack_groups([3, 9], 8)


def _ex(ids, labels):
    return Encoded(ids, labels, [], "", len(ids), False)


def test_packed_row_restarts_positions_and_ignores_each_first_label():
    row = packed_row([_ex([1, 2, 3], [-100, 2, 3]), _ex([4, 5], [4, 5]), _ex([6], [6])])
    assert row == {"input_ids": [1, 2, 3, 4, 5, 6], "labels": [-100, 2, 3, -100, 5, -100],
                   "position_ids": [0, 1, 2, 0, 1, 0]}


QA = [("What is the capital of France?", "Paris"), ("And of Italy?", "Rome"), ("Why?", "because " * 40),
      ("Hello", "Hi"), ("Tell me more please", "Yes")]


def _table(pairs):
    texts = [json.dumps([{"role": "user", "content": q}, {"role": "assistant", "content": a}], ensure_ascii=False)
             for q, a in pairs]
    return pa.table({"text": texts, "source_id": [f"f.jsonl:{i + 1}" for i in range(len(pairs))],
                     "split": ["train"] * len(pairs)})


def test_sft_table_unpacked_schema_and_dropped_rows():
    tok = chat_tokenizer("qwen")
    enc = ChatEncoder(tok, tok.chat_template, max_length=40)
    table = _table(QA)
    out = sft_table(enc, table)
    assert out.schema == SFT_SCHEMA
    assert out.column_names == ["input_ids", "labels", "position_ids", "n_tokens", "n_truncated", "prompt_ids",
                                "reference", "text", "source_id"]
    assert [f.type for f in out.schema][:4] == [pa.list_(pa.int32())] * 4
    assert out.num_rows == 4 and table.num_rows - sum(len(n) for n in out.column("n_tokens").to_pylist()) == 1
    rows = out.to_pylist()
    assert [r["source_id"] for r in rows] == ["f.jsonl:1", "f.jsonl:2", "f.jsonl:4", "f.jsonl:5"]
    first = rows[0]
    single = enc.encode(json.loads(table.column("text")[0].as_py()))
    assert first["input_ids"] == single.input_ids and first["labels"] == single.labels
    assert first["position_ids"] == list(range(len(single.input_ids)))
    assert (first["n_tokens"], first["n_truncated"], first["reference"]) == ([single.n_tokens], 0, "Paris")
    assert first["prompt_ids"] == single.prompt_ids and first["text"] == table.column("text")[0].as_py()


def test_sft_table_packs_within_the_batch():
    tok = chat_tokenizer("qwen")
    enc = ChatEncoder(tok, tok.chat_template, max_length=64, packing=True)
    table = _table(QA)
    singles = [enc.encode(json.loads(t)) for t in table.column("text").to_pylist()]
    kept = [i for i, e in enumerate(singles) if e.dropped is None]
    out = sft_table(enc, table).to_pylist()
    groups = pack_groups([len(singles[i].input_ids) for i in kept], 64)
    assert len(out) == len(groups) < len(kept)
    for row, g in zip(out, groups):
        members = [kept[i] for i in g]
        assert row["input_ids"] == [t for i in members for t in singles[i].input_ids]
        assert len(row["input_ids"]) <= 64
        assert row["n_tokens"] == [singles[i].n_tokens for i in members]
        assert row["source_id"] == ",".join(f"f.jsonl:{i + 1}" for i in members)
        assert json.loads(row["text"]) == [table.column("text")[i].as_py() for i in members]
        assert (row["prompt_ids"], row["reference"]) == ([], "")
        starts = [p for p, pos in enumerate(row["position_ids"]) if pos == 0]
        assert len(starts) == len(members) and all(row["labels"][p] == -100 for p in starts)
    truncated = ChatEncoder(tok, tok.chat_template, max_length=24, packing=True)
    assert sum(r["n_truncated"] for r in sft_table(truncated, table).to_pylist()) >= 1


def test_sft_table_of_an_empty_batch_has_the_schema():
    tok = chat_tokenizer("qwen")
    out = sft_table(ChatEncoder(tok, tok.chat_template), _table([]))
    assert out.num_rows == 0 and out.schema == SFT_SCHEMA


def test_sft_table_names_the_record_the_template_cannot_mask():
    tok = chat_tokenizer("qwen")
    enc = ChatEncoder(tok, "{% for m in messages %}{{ m['content'] if loop.last else 'x' }}{% endfor %}"
                           "{% if add_generation_prompt %}A: {% endif %}" + "{{ eos_token }}")
    with pytest.raises(UserError, match=r"^data.chat_template: f.jsonl:1: template_not_incremental: "):
        sft_table(enc, _table(QA[:1]))


def test_length_histogram():
    hist = length_histogram([1, 5, 256, 257, 2048, 2049, 5000, 0], 2048)
    assert len(hist) == 9
    assert hist[0] == {"from": 1, "to": 256, "count": 4}
    assert hist[1] == {"from": 257, "to": 512, "count": 1}
    assert hist[7] == {"from": 1793, "to": 2048, "count": 1}
    assert hist[8] == {"from": 2049, "to": None, "count": 2}
    assert sum(h["count"] for h in hist) == 8
    assert length_histogram([3, 4], 10, bins=4) == [
        {"from": 1, "to": 3, "count": 1}, {"from": 4, "to": 6, "count": 1}, {"from": 7, "to": 9, "count": 0},
        {"from": 10, "to": 10, "count": 0}, {"from": 11, "to": None, "count": 0}]
    assert length_histogram([], 4, bins=8)[-1] == {"from": 5, "to": None, "count": 0}
