"""Augmentation of a batch (a dict of columns), deterministic per row.

Every output depends only on (seed, source_id, copy index, text): never on batch boundaries,
worker count or row order. For each original row, `n_aug` copies are planned; each copy is one
family of operations:
- "synonym": synonym replacement (WordNet for English rows, Cilin + jieba for Chinese rows);
- "eda": random insertion (of synonyms), swap and deletion, each with its own strength; the
  copy's `aug_op` names the ones that changed something, e.g. "eda:swap+delete";
- "backtranslate": with probability `ops.backtranslate`; the copy is marked pending and a later
  stage (`apply_backtranslation`) translates it, so that the translator can be a GPU actor.
Families alternate over the copies of a row (from a per-row random offset), so n_aug=2 gives one
of each. Only originals get copies: the extra copies balancing adds (aug_op "oversample") would give
the same copies again, which de-duplication would drop. Candidates that equal the original or changed a protected term are kept in the batch
with a drop reason (`_drop`) so that the driver can count them; `distributed.augment` removes them.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import pyarrow as pa

from domainft.data.augment.backtranslate import backtranslate_texts, protected_drift
from domainft.data.augment.eda import random_delete, random_insert, random_swap, synonym_replace
from domainft.data.augment.protect import ProtectedMatcher, build_matcher
from domainft.data.clean import text_hash
from domainft.data.augment.tokens import detect_language, detokenize, tokenize
from domainft.data.plan import OVERSAMPLE_OP

TEXT, SOURCE_ID, AUG_OP, IS_AUGMENTED = "text", "source_id", "aug_op", "is_augmented"
# Internal columns, removed before the dataset leaves domainft.distributed.augment.
COPY, DROP, PENDING_BT, LANG = "_copy", "_drop", "_bt", "_lang"
INTERNAL_COLUMNS = (COPY, DROP, PENDING_BT, LANG)

IDENTICAL = "identical_to_original"
DUPLICATE = "duplicate"
IDENTICAL_TO_EVAL = "identical_to_eval"
PROTECTED_CHANGED = "protected_term_changed"
PROTECTED_ADDED = "protected_term_added"
DROP_REASONS = (IDENTICAL, DUPLICATE, IDENTICAL_TO_EVAL, PROTECTED_ADDED, PROTECTED_CHANGED, "lost_placeholder",
                "empty_translation", "translation_failed", "placeholder_collision")

SYNONYM, EDA, BACKTRANSLATE = "synonym", "eda", "backtranslate"


@dataclass(frozen=True)
class AugmentSettings:
    """Flat, picklable augmentation settings (what crosses into Ray workers)."""

    n_aug: int = 2
    language: str = "auto"
    synonym: float = 0.1
    swap: float = 0.05
    delete: float = 0.05
    insert: float = 0.05
    backtranslate: float = 0.0
    seed: int = 42
    terms: tuple[str, ...] = ()
    builtin_patterns: bool = True
    # Languages the back-translation backend handles; empty = any (a Marian pair is the user's choice).
    backtranslate_languages: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, aug: Any, default_seed: int, terms: Sequence[str] = ()) -> "AugmentSettings":
        """From a `config.schema.AugmentConfig` and the lines of its protected-terms file."""
        o = aug.ops
        langs = ("en",) if aug.backtranslation.backend == "apertium" else ()
        return cls(n_aug=aug.n_aug, language=aug.language, synonym=o.synonym, swap=o.swap, delete=o.delete,
                   insert=o.insert, backtranslate=o.backtranslate,
                   seed=default_seed if aug.seed is None else aug.seed, terms=tuple(terms),
                   backtranslate_languages=langs)

    @property
    def matcher(self) -> ProtectedMatcher:
        return build_matcher(self.terms, self.builtin_patterns)

    def families(self) -> list[str]:
        fams = []
        if self.synonym > 0:
            fams.append(SYNONYM)
        if self.swap > 0 or self.delete > 0 or self.insert > 0:
            fams.append(EDA)
        return fams


def row_rng(seed: int, source_id: str, copy: int, text: str) -> random.Random:
    """The generator for one copy of one row: a function of (seed, source_id, copy, text) only."""
    h = hashlib.blake2b(digest_size=8)
    h.update(f"{seed}\x1f{source_id}\x1f{copy}\x1f".encode())
    h.update(text.encode("utf-8", "surrogatepass"))
    return random.Random(int.from_bytes(h.digest(), "big"))


def row_uids(table: pa.Table) -> pa.Array:
    """A non-negative 63-bit id per row: a hash of the row's values in every column, in name order.

    A function of the row alone (never of its batch, block or position), so a recomputed block gets
    the same ids, and two rows get the same id only when they are equal in every column (then
    which of them is kept does not matter).
    """
    names = sorted(table.column_names)
    columns = [table.column(n).to_pylist() for n in names]
    out = []
    for values in zip(*columns):
        h = hashlib.blake2b(digest_size=8)
        for name, v in zip(names, values):
            h.update(f"{name}\x1e{type(v).__name__}\x1e{v!r}\x1f".encode("utf-8", "surrogatepass"))
        out.append(int.from_bytes(h.digest(), "big") >> 1)
    return pa.array(out, type=pa.int64())


def row_language(text: str, setting: str) -> str:
    return detect_language(text) if setting == "auto" else setting


def plan_copies(settings: AugmentSettings, source_id: str, text: str, language: str) -> list[Optional[str]]:
    """The family of each of the row's n_aug copies (None: nothing to do)."""
    fams = settings.families()
    offset = row_rng(settings.seed, source_id, -1, text).randrange(len(fams)) if fams else 0
    bt_ok = settings.backtranslate > 0 and (not settings.backtranslate_languages
                                            or language in settings.backtranslate_languages)
    plan: list[Optional[str]] = []
    for k in range(settings.n_aug):
        if bt_ok and row_rng(settings.seed, source_id, k, text).random() < settings.backtranslate:
            plan.append(BACKTRANSLATE)
        else:
            plan.append(fams[(k + offset) % len(fams)] if fams else None)
    return plan


def _resources(language: str, matcher: ProtectedMatcher
               ) -> tuple[Callable[[str], Sequence[str]], Optional[Callable[[str], list[str]]], str]:
    """(synonyms, CJK segmenter, insertion separator) for a language; loaded once per process.

    Synonyms that are themselves protected terms (or hold one) are never offered: replacing "gain"
    by a protected "profit" would add a protected occurrence. Answers are memoised per matcher.
    """
    if language == "zh":
        from domainft.data.augment.synonyms_zh import chinese_synonyms, cut

        source, segmenter, sep = chinese_synonyms().candidates, cut, ""
    else:
        from domainft.data.augment.synonyms_en import english_synonyms

        source, segmenter, sep = english_synonyms().candidates, None, " "
    safe = matcher.memo.get(("synonyms", language))
    if safe is None:
        memo: dict[str, tuple[str, ...]] = {}

        def safe(word: str) -> tuple[str, ...]:
            got = memo.get(word)
            if got is None:
                got = memo[word] = tuple(s for s in source(word) if not matcher.spans(s))
            return got

        matcher.memo[("synonyms", language)] = safe
    return safe, segmenter, sep


def augment_text(text: str, source_id: str, copy: int, family: str, settings: AugmentSettings,
                 language: str, row_cache: Optional[dict] = None) -> tuple[str, str, str]:
    """One token-level copy. Returns (new text, aug_op, drop reason or "").

    `row_cache` (a dict per row) lets the copies of one row share its tokens and protected terms.
    """
    rng = row_rng(settings.seed, source_id, copy, text)
    rng.random()  # the draw plan_copies used for back-translation, so the streams stay independent
    matcher = settings.matcher
    synonyms, cut, sep = _resources(language, matcher)
    cache = row_cache if row_cache is not None else {}
    if "tokens" not in cache:
        cache["tokens"] = tokenize(text, matcher, cut)
    tokens = cache["tokens"]
    if family == SYNONYM:
        tokens, n = synonym_replace(tokens, settings.synonym, synonyms, rng)
        op = SYNONYM
    else:
        done = []
        if settings.insert > 0:
            tokens, n = random_insert(tokens, settings.insert, synonyms, rng, sep)
            done += ["insert"] if n else []
        if settings.swap > 0:
            tokens, n = random_swap(tokens, settings.swap, rng)
            done += ["swap"] if n else []
        if settings.delete > 0:
            tokens, n = random_delete(tokens, settings.delete, rng)
            done += ["delete"] if n else []
        op = f"{EDA}:{'+'.join(done)}" if done else EDA
    new = detokenize(tokens)
    if new == text:
        return new, op, IDENTICAL
    # The ops never edit a protected token, but an edit next to one could create a new match
    # (an inserted word completing a multi-word term): the multiset of protected strings must not move.
    if "terms" not in cache:
        cache["terms"] = matcher.terms_in(text)
    return new, op, protected_drift(matcher, text, new, cache["terms"])


def augment_batch(batch: dict[str, list], settings: AugmentSettings) -> dict[str, list]:
    """Originals plus their planned copies, as a dict of equal-length lists.

    Input columns: `text` (required), optional `source_id`, `aug_op`, `is_augmented`; any other
    column (label, ...) is copied unchanged to the row's copies. Rows already augmented pass
    through without copies, and so do balancing's extra copies (aug_op "oversample"): their copies
    would equal the original's. Output adds `_copy` (-1 for originals), `_drop` (drop reason),
    `_bt` (back-translation pending) and `_lang`.
    """
    texts = batch[TEXT]
    n = len(texts)
    source_ids = batch.get(SOURCE_ID) or [None] * n
    aug_ops = batch.get(AUG_OP) or [""] * n
    is_aug = batch.get(IS_AUGMENTED) or [False] * n
    others = [c for c in batch if c not in (TEXT, SOURCE_ID, AUG_OP, IS_AUGMENTED) + INTERNAL_COLUMNS]
    out: dict[str, list] = {c: [] for c in [TEXT, SOURCE_ID, AUG_OP, IS_AUGMENTED, *others, *INTERNAL_COLUMNS]}

    def emit(i: int, text: str, sid: str, op: str, aug: bool, copy: int, drop: str, bt: bool, lang: str):
        out[TEXT].append(text)
        out[SOURCE_ID].append(sid)
        out[AUG_OP].append(op)
        out[IS_AUGMENTED].append(aug)
        for c in others:
            out[c].append(batch[c][i])
        out[COPY].append(copy)
        out[DROP].append(drop)
        out[PENDING_BT].append(bt)
        out[LANG].append(lang)

    for i in range(n):
        text = texts[i] if texts[i] is not None else ""
        sid = str(source_ids[i]) if source_ids[i] is not None else f"h{text_hash(text) & 0xFFFFFFFFFFFF:012x}"
        lang = row_language(text, settings.language)
        emit(i, texts[i], sid, aug_ops[i] or "", bool(is_aug[i]), -1, "", False, lang)  # the original, as given
        if is_aug[i] or aug_ops[i] == OVERSAMPLE_OP or not text.strip():
            continue
        row_cache: dict = {}
        for k, family in enumerate(plan_copies(settings, sid, text, lang)):
            if family is None:
                continue
            if family == BACKTRANSLATE:
                emit(i, text, sid, BACKTRANSLATE, True, k, "", True, lang)
            else:
                new, op, drop = augment_text(text, sid, k, family, settings, lang, row_cache)
                emit(i, new, sid, op, True, k, drop, False, lang)
    return out


def apply_backtranslation(batch: dict[str, list], settings: AugmentSettings,
                          round_trip: Callable[[list[str]], list[str]]) -> dict[str, list]:
    """A copy of the batch with the rows marked `_bt` translated (or given a drop reason)."""
    todo = [i for i, (bt, drop) in enumerate(zip(batch[PENDING_BT], batch[DROP])) if bt and not drop]
    if not todo:
        return batch
    out = {c: list(v) for c, v in batch.items()}
    results = backtranslate_texts([batch[TEXT][i] for i in todo], settings.matcher, round_trip)
    for i, (text, reason) in zip(todo, results):
        out[PENDING_BT][i] = False
        if text is None:
            out[DROP][i] = reason
        else:
            out[TEXT][i] = text
            out[DROP][i] = IDENTICAL if text == batch[TEXT][i] else ""
    return out
