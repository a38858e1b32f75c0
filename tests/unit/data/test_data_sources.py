"""Resolving inputs: file, folder, glob, URI, folder-per-label; display names; chunk plans; freshness inputs."""
import gzip
import os

import pytest

from domainft.data.chunks import align_chunks, plan_chunks, scan_chunk
from domainft.data.sources import collect_sources, input_signature, resolve_files
from domainft.errors import UserError


@pytest.fixture()
def tree(tmp_path):
    for rel in ("a/p1.jsonl", "a/p2.jsonl", "a/sub/p3.jsonl", "a/notes.md", "a/.hidden.jsonl", "a/_SUCCESS",
                "b/x.csv", "b/y.tsv", "b/z.parquet", "labels/neg/1.txt", "labels/pos/2.txt", "labels/pos/.DS_Store"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x", encoding="utf-8")
    return tmp_path


def names(files, root):
    return [os.path.relpath(f.uri.removeprefix("file://"), root) for f in files]


def test_single_file(tree):
    (f,) = resolve_files(str(tree / "b/x.csv"), "auto", 0)
    assert (f.fmt, f.size, f.split) == ("csv", 1, 0) and f.mtime_ns


def test_folder_of_data_files_skips_hidden_and_unknown(tree):
    files = resolve_files(str(tree / "a"), "auto", 0)
    assert names(files, tree) == ["a/p1.jsonl", "a/p2.jsonl", "a/sub/p3.jsonl"]


def test_mixed_formats_by_extension(tree):
    assert [f.fmt for f in resolve_files(str(tree / "b"), "auto", 0)] == ["csv", "tsv", "parquet"]


def test_glob_star_stays_in_one_folder_and_doublestar_recurses(tree):
    assert names(resolve_files(str(tree / "a/*.jsonl"), "auto", 0), tree) == ["a/p1.jsonl", "a/p2.jsonl"]
    assert len(resolve_files(str(tree / "a/**/*.jsonl"), "auto", 0)) == 3


def test_folder_per_label_is_detected(tree):
    files = resolve_files(str(tree / "labels"), "auto", 0)
    assert [(f.fmt, f.label) for f in files] == [("text", "neg"), ("text", "pos")]
    assert resolve_files(str(tree / "labels"), "folders", 0) == files


def test_file_uri(tree):
    files = resolve_files("file://" + str(tree / "a/*.jsonl"), "auto", 0)
    assert [f.uri for f in files] == ["file://" + str(tree / "a/p1.jsonl"), "file://" + str(tree / "a/p2.jsonl")]
    assert files[0].mtime_ns is None


def test_errors_are_user_errors(tree):
    with pytest.raises(UserError, match="no such file"):
        resolve_files(str(tree / "nope.jsonl"), "auto", 0)
    with pytest.raises(UserError, match="no input files"):
        resolve_files(str(tree / "a/*.xml"), "auto", 0)
    with pytest.raises(UserError, match="cannot tell the format"):
        resolve_files(str(tree / "a/notes.md"), "auto", 0)
    with pytest.raises(UserError, match="both in data.train and data.eval"):
        collect_sources(str(tree / "a/p1.jsonl"), str(tree / "a/*.jsonl"), "auto")


def test_explicit_format_overrides_extension(tree):
    (f,) = resolve_files(str(tree / "a/notes.md"), "jsonl", 0)
    assert f.fmt == "jsonl"


def test_names_are_relative_to_each_input_and_unique(tree):
    files = collect_sources(str(tree / "a/**/*.jsonl"), str(tree / "b/x.csv"), "auto")
    assert [(f.name, f.split) for f in files] == [("p1.jsonl", 0), ("p2.jsonl", 0), ("sub/p3.jsonl", 0),
                                                   ("x.csv", 1)]
    assert [f.name for f in collect_sources(str(tree / "labels"), None, "auto")] == ["neg/1.txt", "pos/2.txt"]
    (tree / "c").mkdir()
    (tree / "c" / "p1.jsonl").write_text("x", encoding="utf-8")
    clash = collect_sources(str(tree / "a/p1.jsonl"), str(tree / "c/p1.jsonl"), "auto")
    assert [f.name for f in clash] == ["train/p1.jsonl", "eval/p1.jsonl"]


def test_input_signature_follows_size_and_mtime(tree):
    spec = str(tree / "a")
    before = input_signature(spec, "auto")
    os.utime(tree / "a/p1.jsonl", ns=(1, 1))
    assert input_signature(spec, "auto") != before
    assert input_signature("s3://bucket/data/*.jsonl", "auto") == ["s3://bucket/data/*.jsonl"]


def test_plan_chunks_cuts_big_text_files_and_aligns_them_to_record_starts(tmp_path):
    (tmp_path / "big.jsonl").write_text("x\n" * 50, encoding="utf-8")
    (tmp_path / "big.csv").write_text("text\n" + '"a\nb"\n' * 20, encoding="utf-8")  # records span two lines
    (tmp_path / "big.tsv.gz").write_bytes(gzip.compress(b"text\n" + b"x\n" * 50))
    files = collect_sources(str(tmp_path), None, "auto")
    chunks = plan_chunks(files, 30, True)
    assert [(c["name"], c["start"], c["end"]) for c in chunks] == [
        ("big.csv", 0, 30), ("big.csv", 30, 60), ("big.csv", 60, 90), ("big.csv", 90, 120), ("big.csv", 120, 125),
        ("big.jsonl", 0, 30), ("big.jsonl", 30, 60), ("big.jsonl", 60, 90), ("big.jsonl", 90, 100),
        ("big.tsv.gz", 0, -1)]  # compressed: streamed whole
    assert len(plan_chunks(files, 30, False)) == 3  # not ASCII-compatible: never cut
    aligned = align_chunks(chunks, [scan_chunk(c) if c["end"] >= 0 else None for c in chunks])
    assert [(c["name"], c["start"], c["end"], c["line0"]) for c in aligned] == [
        ("big.csv", 0, 35, 0), ("big.csv", 35, 65, 11), ("big.csv", 65, 95, 21), ("big.csv", 95, 125, 31),
        ("big.jsonl", 0, 30, 0), ("big.jsonl", 30, 60, 15), ("big.jsonl", 60, 90, 30), ("big.jsonl", 90, 100, 45),
        ("big.tsv.gz", 0, -1, 0)]
    assert [c["quoting"] for c in aligned] == ["csv"] * 4 + [""] * 4 + ["auto"]