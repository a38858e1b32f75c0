"""The mined term file: one term per line, best first, `#` header lines (the format
`augment.protected_terms` reads, see `augment.protect.read_terms`), and a TSV of scores beside it
for the human who trims it. No Ray.
"""
from __future__ import annotations

import unicodedata
from pathlib import Path
from typing import Sequence

from domainft.data.terms import Term

TSV_COLUMNS = ("rank", "term", "score", "count", "docs", "language", "kind")


def sidecar_path(path: str | Path) -> Path:
    """Where the scores of a term file go: the same name with `.tsv`."""
    return Path(path).with_suffix(".tsv")


def term_file_header(source: str, texts: int, scores_name: str) -> list[str]:
    """The comment lines at the top of a mined term file: where it came from and how to use it."""
    return [f"Candidate domain terms mined by `domainft terms` from {source} ({texts:,} texts).",
            "One term per line, best first, as augment.protected_terms reads it (case-insensitive, whole words).",
            f"Trim it: delete what augmentation may change, from the bottom first. Scores: {scores_name}.",
            "English: keyness against general English (wordfreq); Chinese: TF-IDF with jieba's IDF.",
            "Codes and numbers with units are protected by the built-in patterns whether listed or not."]


def write_terms(terms: Sequence[Term], path: str | Path, header: Sequence[str] = ()) -> Path:
    """Write the term file (one term per line, best first, `#` header lines: the format
    `augment.protected_terms` reads) and its scores beside it (`sidecar_path`). Returns the TSV path."""
    path, tsv = Path(path), sidecar_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {h}" for h in header] + [t.text for t in terms]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rows = ["\t".join(TSV_COLUMNS)] + ["\t".join((str(i), t.text, f"{t.score:.6g}", str(t.count), str(t.docs),
                                                    t.language, t.kind)) for i, t in enumerate(terms, 1)]
    tsv.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return tsv


def format_table(terms: Sequence[Term], n: int = 20) -> str:
    """The first `n` terms as an aligned text table."""
    rows = [("#", "term", "kind", "lang", "count", "docs", "score")]
    rows += [(str(i), t.text, t.kind, t.language, str(t.count), str(t.docs), f"{t.score:.4g}")
             for i, t in enumerate(terms[:n], 1)]
    widths = [max(display_width(r[c]) for r in rows) for c in range(len(rows[0]))]
    right = {0, 4, 5, 6}  # numbers

    def cell(c: int, v: str) -> str:
        pad = " " * (widths[c] - display_width(v))
        return pad + v if c in right else v + pad

    return "\n".join("  ".join(cell(c, v) for c, v in enumerate(r)).rstrip() for r in rows)


def display_width(s: str) -> int:
    """Terminal columns: wide (CJK) characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in s)
