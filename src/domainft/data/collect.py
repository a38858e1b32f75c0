"""Driver-side pass over the parsed rows: counts, rejects, and the small columns the plan needs.

Fed one Arrow batch at a time (streamed from Ray), it keeps per good row only key, source split,
label code, empty flag and text hash; it writes rejects as it goes and remembers the first one.
No Ray.
"""
from __future__ import annotations

import json
from collections import Counter
from typing import IO, Optional

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from domainft.data.labels import build_label_names
from domainft.data.readers import FATAL, STATS, split_key
from domainft.data.sources import TEXT, SourceFile
from domainft.errors import BadRecordError, UserError

REASON_TEXT = {
    "malformed_json": "malformed JSON", "malformed_csv": "malformed CSV", "wrong_column_count": "wrong column count",
    "missing_text": "missing text", "missing_label": "missing label", "bad_type": "wrong value type",
    "empty_label": "empty label", "unknown_label": "label not in data.labels",
    "undecodable_bytes": "undecodable bytes",
    # task sft (domainft.data.chat)
    "unknown_format": "not a known chat record format", "unknown_role": "unknown role",
    "no_assistant_turn": "no assistant turn", "empty_answer": "empty answer", "empty_message": "empty message",
    "template_not_incremental": "chat template renders earlier turns differently",
    "template_error": "chat template failed",
}
COLUMNS = ["key", "split", "label", "source_id", "h", "empty", "reason", "detail", "raw"]


def where(fmt: str, line: int) -> str:
    return {"parquet": f"row {line}", TEXT: "whole file"}.get(fmt, f"line {line}")


class Collector:
    def __init__(self, files: list[SourceFile], rejects: Optional[IO[str]] = None,
                 fix_ids: Optional[list[str]] = None):
        self.files, self.rejects = files, rejects
        # data.label_fixes: the source_ids a fix names, and the key of each good record found for one
        self.fix_ids = pa.array(fix_ids, pa.string()) if fix_ids else None
        self.fix_hits: dict[str, int] = {}
        self.rows_read, self.blank_lines = 0, 0
        self.rejected: Counter = Counter()
        self.first_reject: Optional[dict] = None
        self.fatal: Optional[str] = None
        self.vocab: dict[str, int] = {}
        self._keys, self._src, self._lab, self._empty, self._h = [], [], [], [], []

    def add(self, t: pa.Table) -> None:
        reason = t.column("reason")
        control = pc.fill_null(pc.starts_with(reason, "__"), False).to_numpy(zero_copy_only=False)
        if control.any():
            for r, d in zip(reason.filter(control).to_pylist(), t.column("detail").filter(control).to_pylist()):
                if r == FATAL and self.fatal is None:
                    self.fatal = d
                elif r == STATS:
                    self.blank_lines += json.loads(d)["blank_lines"]
            t, reason = t.filter(~control), reason.filter(~control)
        self.rows_read += t.num_rows
        bad = reason.is_valid().to_numpy(zero_copy_only=False)
        if bad.any():
            self._rejects(t.filter(bad))
            t = t.filter(~bad)
        if self.fix_ids is not None:
            hit = pc.is_in(t.column("source_id"), value_set=self.fix_ids)
            found = t.filter(hit)
            self.fix_hits.update(zip(found.column("source_id").to_pylist(), found.column("key").to_pylist()))
        enc = pc.dictionary_encode(t.column("label")).combine_chunks()
        lut = np.array([self.vocab.setdefault(v, len(self.vocab)) for v in enc.dictionary.to_pylist()] or [0],
                       dtype=np.int32)
        self._lab.append(lut[enc.indices.to_numpy(zero_copy_only=False)])
        for out, col in ((self._keys, "key"), (self._src, "split"), (self._h, "h"), (self._empty, "empty")):
            out.append(t.column(col).to_numpy())

    def _rejects(self, t: pa.Table) -> None:
        for r in t.select(["key", "reason", "detail", "source_id", "raw"]).to_pylist():
            self.rejected[r["reason"]] += 1
            if self.first_reject is None or r["key"] < self.first_reject["key"]:
                self.first_reject = r
            if self.rejects is not None:
                fidx, line = split_key(r["key"])
                f = self.files[fidx]
                self.rejects.write(json.dumps({
                    "source": f.uri, "where": where(f.fmt, line), "source_id": r["source_id"],
                    "reason": r["reason"], "detail": r["detail"], "raw": r["raw"]}, ensure_ascii=False) + "\n")

    def raise_if_fatal(self) -> None:
        if self.fatal:
            raise UserError(self.fatal)

    def first_error(self) -> Optional[BadRecordError]:
        """The first bad record in file/line order, as the error a user sees in `error` mode."""
        r = self.first_reject
        if r is None:
            return None
        fidx, line = split_key(r["key"])
        f = self.files[fidx]
        return BadRecordError(f.uri, where(f.fmt, line), f"{REASON_TEXT.get(r['reason'], r['reason'])} "
                              f"[{r['reason']}]", r["detail"] or "")

    def arrays(self, explicit_labels: Optional[list[str]]) -> tuple[list[str], dict]:
        """(label names, per-row arrays for `make_plan`: keys, src, labels (ids), empty, hashes)."""
        names = build_label_names(explicit_labels, self.vocab)
        index = {n: i for i, n in enumerate(names)}
        remap = np.array([index[v] for v in self.vocab] or [0], dtype=np.int32)
        cat = (lambda parts, dt: np.concatenate(parts).astype(dt) if parts else np.zeros(0, dt))
        return names, {"keys": cat(self._keys, np.int64), "src": cat(self._src, np.int8),
                       "labels": remap[cat(self._lab, np.int32)], "empty": cat(self._empty, bool),
                       "hashes": cat(self._h, np.uint64)}
