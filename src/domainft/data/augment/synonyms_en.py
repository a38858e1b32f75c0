"""English synonyms from NLTK WordNet, as a word -> synonyms table built once per machine.

NLTK's WordNet reader takes 4-8 s to load in every process; the table it yields (single
words -> synonyms from their most frequent senses) is pickled under ~/.cache/domainft and
loads in a fraction of a second, so every Ray worker pays little. The table is rebuilt when the
WordNet files or the build rules change.

Rules (safer than EDA's): a synonym comes from a sense in which the word itself is a lemma
(so "running" does not get the synonyms of "run"), from the first `MAX_SENSES` senses per part
of speech (WordNet orders senses by frequency), lower-case only (no proper names), letters,
spaces, hyphens and apostrophes only. Irregular inflections listed by WordNet ("rose" of rise,
"left" of leave, "data" of datum) get no synonyms at all: without a tagger, "profits rose" would
become "profits rosebush".
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from functools import lru_cache
from pathlib import Path
from typing import Optional

from domainft.data.augment.wordnet_setup import default_data_dir, ensure_wordnet_on_path, file_lock

MAX_SENSES = 3
_TABLE_VERSION = 2
_OK_SYNONYM = re.compile(r"^[a-z][a-z' -]*[a-z]$")
_OK_KEY = re.compile(r"^[a-z][a-z'-]*$")

# EDA's stop words (Wei & Zou 2019): never replaced, and never sources of insertions.
STOPWORDS = frozenset("""
i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves what which who whom this that these those am is
are was were be been being have has had having do does did doing a an the and but if or because as until
while of at by for with about against between into through during before after above below to from up down
in out on off over under again further then once here there when where why how all any both each few more
most other some such no nor not only own same so than too very s t can will just don should now
""".split())


def _table_path(root: Path) -> Path:
    stamp = []
    for name in ("index.noun", "data.noun", "index.verb", "data.adj"):
        f = root / "corpora" / "wordnet" / name
        if f.is_file():
            st = f.stat()
            stamp.append(f"{name}:{st.st_size}:{int(st.st_mtime)}")
    if (root / "corpora" / "wordnet.zip").is_file():
        st = (root / "corpora" / "wordnet.zip").stat()
        stamp.append(f"zip:{st.st_size}:{int(st.st_mtime)}")
    key = hashlib.sha1(f"{_TABLE_VERSION}|{MAX_SENSES}|{root}|{'|'.join(stamp)}".encode()).hexdigest()[:16]
    return default_data_dir().parent / f"wordnet_synonyms-{key}.pickle"


def build_table() -> dict[str, tuple[str, ...]]:
    """Word -> synonyms, from NLTK's WordNet reader (about 10 s). See the module notes for the rules."""
    ensure_wordnet_on_path()
    from nltk.corpus import wordnet as wn

    wn.ensure_loaded()
    # One pass over the data files, then the sense order from the index (private but stable since
    # NLTK 3.0; the public fallback is 3x slower).
    lemmas: dict[tuple[str, int], list[str]] = {}
    for ss in wn.all_synsets():
        pos = "a" if ss.pos() == "s" else ss.pos()
        lemmas[(pos, ss.offset())] = ss.lemma_names()
    index = getattr(wn, "_lemma_pos_offset_map", None)
    inflected = {form for forms in getattr(wn, "_exception_map", {}).values()
                 for form, bases in forms.items() if any(b != form for b in bases)}
    table: dict[str, tuple[str, ...]] = {}
    for word in wn.all_lemma_names():
        if not _OK_KEY.match(word) or word in inflected:
            continue
        if index is not None:
            senses = [lemmas.get(("a" if pos == "s" else pos, off), [])
                      for pos, offs in index.get(word, {}).items() for off in offs[:MAX_SENSES]]
        else:  # pragma: no cover - only without NLTK's index map
            by_pos: dict[str, int] = {}
            senses = []
            for ss in wn.synsets(word):
                if by_pos.get(ss.pos(), 0) < MAX_SENSES:
                    by_pos[ss.pos()] = by_pos.get(ss.pos(), 0) + 1
                    senses.append(ss.lemma_names())
        out: list[str] = []
        for names in senses:
            if word not in names:
                continue
            for name in names:
                syn = name.replace("_", " ")
                if syn != word and syn not in out and _OK_SYNONYM.match(syn):
                    out.append(syn)
        if out:
            table[word] = tuple(out)
    return table


@lru_cache(maxsize=1)
def load_table() -> dict[str, tuple[str, ...]]:
    """The synonym table, from the on-disk cache or built (and cached) once. Cached per process.

    Raises RuntimeError with set-up instructions when no WordNet data can be found.
    """
    root = ensure_wordnet_on_path()
    path = _table_path(root)
    if not path.is_file():
        with file_lock(path.with_suffix(".lock")):
            if not path.is_file():  # another process may have built it while we waited
                table = build_table()
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                with open(tmp, "wb") as fh:
                    pickle.dump(table, fh, protocol=pickle.HIGHEST_PROTOCOL)
                os.replace(tmp, path)
                return table
    with open(path, "rb") as fh:
        return pickle.load(fh)


class EnglishSynonyms:
    """Synonyms for an English token, with the token's capitalisation carried over."""

    def __init__(self, table: Optional[dict[str, tuple[str, ...]]] = None):
        self.table = load_table() if table is None else table

    def candidates(self, token: str) -> tuple[str, ...]:
        low = token.lower()
        if low in STOPWORDS or len(low) < 2:
            return ()
        syns = self.table.get(low, ())
        if not syns or token == low:
            return syns
        if token[:1].isupper() and token[1:] == low[1:]:
            return tuple(s[:1].upper() + s[1:] for s in syns)
        return ()  # mixed case: a name or a code, leave it


@lru_cache(maxsize=1)
def english_synonyms() -> EnglishSynonyms:
    """One EnglishSynonyms per process."""
    return EnglishSynonyms()
