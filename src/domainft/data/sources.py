"""Resolve a configured input (file, folder, glob or URI) into the files to read, and plan read chunks.

Works through pyarrow's filesystems, so s3://, gs://, hdfs:// and file:// read like local paths.
No Ray: the driver plans here; the Ray layer runs the plan.
"""
from __future__ import annotations

import functools
import os
import posixpath
import re
from dataclasses import dataclass, replace
from typing import Optional

import pyarrow.fs as pafs

from domainft.config.paths import is_uri
from domainft.errors import UserError

FORMAT_BY_EXT = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv",
                 ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet"}
COMPRESSION_EXTS = (".gz", ".bz2", ".zst", ".lz4")  # pyarrow decompresses by extension
TEXT = "text"  # folder-per-label: one document per file, label = its top folder


@dataclass(frozen=True)
class SourceFile:
    uri: str  # what a worker opens: a local absolute path or scheme://path
    fmt: str  # jsonl | csv | tsv | parquet | text
    size: int
    mtime_ns: Optional[int]
    split: int  # 0: from data.train, 1: from data.eval
    label: Optional[str] = None  # text files: the label folder ("" outside any label folder)
    name: str = ""  # display name, relative to the common folder of all inputs


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI. Filesystems are cached per process."""
    if not is_uri(uri):
        return _local(), os.path.abspath(uri)
    scheme, rest = uri.split("://", 1)
    if scheme == "file":
        return _local(), rest
    if scheme in ("s3", "gs", "gcs"):  # bucket/key: no per-file from_uri (it may resolve a region)
        return _remote(scheme, rest.split("/", 1)[0]), rest
    return pafs.FileSystem.from_uri(uri)


@functools.lru_cache(maxsize=None)
def _local() -> pafs.FileSystem:
    return pafs.LocalFileSystem()


@functools.lru_cache(maxsize=64)
def _remote(scheme: str, authority: str) -> pafs.FileSystem:
    fs, _ = pafs.FileSystem.from_uri(f"{scheme}://{authority}")
    return fs


def _uri_prefix(spec: str) -> str:
    if not is_uri(spec):
        return ""
    scheme = spec.split("://", 1)[0]
    return "file://" if scheme == "file" else f"{scheme}://"


def _format_of(path: str, fmt: str) -> Optional[str]:
    if fmt not in ("auto", "folders"):
        return fmt
    stem = path
    for ext in COMPRESSION_EXTS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
    return FORMAT_BY_EXT.get(posixpath.splitext(stem)[1].lower())


def _hidden(path: str, root: str) -> bool:
    rel = posixpath.relpath(path, root) if root else posixpath.basename(path)
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def _list(fs: pafs.FileSystem, root: str, recursive: bool = True) -> list[pafs.FileInfo]:
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=recursive))
    return sorted((i for i in infos if i.type == pafs.FileType.File and not _hidden(i.path, root)),
                  key=lambda i: i.path)


def glob_regex(pattern: str) -> "re.Pattern":
    """Shell-style glob as a regex: `*` and `?` stay within one folder, `**` crosses folders."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[" and "]" in pattern[i + 1:]:
            j = pattern.index("]", i + 2 if pattern[i + 1:i + 2] in ("!", "]") else i + 1)
            body = pattern[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = j
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z")


def _glob(fs: pafs.FileSystem, pattern: str) -> tuple[list[pafs.FileInfo], str]:
    parts = pattern.split("/")
    first = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
    base = "/".join(parts[:first]) or "/"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        return [], base
    rx = glob_regex(pattern)
    return [i for i in _list(fs, base, recursive=first < len(parts) - 1) if rx.match(i.path)], base


def resolve_files(spec: str, fmt: str, split: int) -> list[SourceFile]:
    """The files behind a configured input, in a stable order. Raises UserError when there are none.

    A folder whose files have no data extension (.jsonl .csv .tsv .parquet ...) is a folder-per-label
    corpus; so is any folder with `format: folders`. Hidden files (.x, _x) are skipped.
    """
    fs, path = filesystem(spec)
    prefix = _uri_prefix(spec)
    to_uri = (lambda p: prefix + p) if prefix else (lambda p: p)
    mtime = (lambda i: None) if prefix else (lambda i: i.mtime_ns)
    if any(c in path for c in "*?["):
        (infos, base), root = _glob(fs, path), None
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.NotFound:
            raise UserError(f"{spec}: no such file or folder")
        infos, root = ([info], None) if info.type == pafs.FileType.File else (_list(fs, path), path)
        base = root or posixpath.dirname(path)
    name = (lambda i: posixpath.relpath(i.path, base))  # display name: relative to the input's own folder
    if fmt == "folders" and root is None:
        raise UserError(f"{spec}: data.format folders needs a folder of label folders")
    if not infos:
        raise UserError(f"{spec}: no input files found")
    if root is not None and (fmt == "folders" or (fmt == "auto" and not any(_format_of(i.path, fmt) for i in infos))):
        out = []
        for i in infos:
            rel = posixpath.relpath(i.path, root).split("/")
            out.append(SourceFile(to_uri(i.path), TEXT, i.size, mtime(i), split, rel[0] if len(rel) > 1 else "",
                                  name(i)))
        return out
    if root is not None and fmt != "auto":
        matching = [i for i in infos if _format_of(i.path, "auto") == fmt]
        infos = matching or infos
    elif root is not None:
        infos = [i for i in infos if _format_of(i.path, fmt)]
    out = []
    for i in infos:
        f = _format_of(i.path, fmt)
        if f is None:
            raise UserError(f"{to_uri(i.path)}: cannot tell the format from the extension; set data.format")
        out.append(SourceFile(to_uri(i.path), f, i.size, mtime(i), split, None, name(i)))
    return out


def collect_sources(train: str, eval_: Optional[str], fmt: str) -> list[SourceFile]:
    """Train files (split 0) then eval files (split 1). Display names are relative to each input's
    folder; when a train and an eval name coincide, all names get a `train/` or `eval/` prefix."""
    files = resolve_files(train, fmt, 0) + (resolve_files(eval_, fmt, 1) if eval_ else [])
    both = {f.uri for f in files if f.split == 0} & {f.uri for f in files if f.split == 1}
    if both:
        raise UserError(f"{sorted(both)[0]}: is both in data.train and data.eval")
    if {f.name for f in files if f.split == 0} & {f.name for f in files if f.split == 1}:
        files = [replace(f, name=("eval/" if f.split else "train/") + f.name) for f in files]
    return files


def input_signature(spec: Optional[str], fmt: str) -> list:
    """What freshness depends on: each local file's path, size and mtime; a URI's path only."""
    if spec is None:
        return []
    if is_uri(spec):
        return [spec]
    try:
        return [[f.uri, f.size, f.mtime_ns] for f in resolve_files(spec, fmt, 0)]
    except UserError:
        return [spec, "missing"]
