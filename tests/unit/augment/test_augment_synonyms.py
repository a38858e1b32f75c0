"""Synonym sources: WordNet through NLTK (offline set-up, clear errors) and Cilin for Chinese."""
from __future__ import annotations

import os

import pytest

from domainft.data.augment import wordnet_setup
from domainft.data.augment.synonyms_en import STOPWORDS, EnglishSynonyms
from domainft.data.augment.synonyms_zh import ChineseSynonyms, cilin_table


def test_wordnet_table_rules(wordnet_table):
    assert {"gain", "earnings"} <= set(wordnet_table["profit"])
    # Irregular inflections ("rose" of rise) and non-lemmas ("jumped") get nothing: no "profits rosebush".
    assert "rose" not in wordnet_table and "left" not in wordnet_table and "jumped" not in wordnet_table
    assert all(s == s.lower() for syns in list(wordnet_table.values())[:5000] for s in syns)  # no proper names
    assert not STOPWORDS & set(EnglishSynonyms(wordnet_table).candidates(w) for w in ("the", "and")) - {()}


def test_english_candidates_keep_capitalisation(wordnet_table):
    s = EnglishSynonyms(wordnet_table)
    assert "Gain" in s.candidates("Profit") and "gain" in s.candidates("profit")
    assert s.candidates("the") == () and s.candidates("PrOfit") == ()


def test_cilin_table_true_synonyms_only():
    table = cilin_table()
    assert "计算机" in table["电脑"]
    assert all(len(w) >= 2 for syns in table.values() for w in syns)
    zh = ChineseSynonyms(table)
    assert zh.candidates("我们") == () and zh.candidates("口") == ()


@pytest.fixture()
def isolated_nltk_path(tmp_path, monkeypatch):
    """NLTK's search path and domainft's folder pointed at empty temporary folders (no network)."""
    import nltk

    monkeypatch.setenv("DOMAINFT_NLTK_DATA", str(tmp_path / "domainft_nltk"))
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "user_nltk")])
    return tmp_path


def test_build_from_debian_and_prefer_existing_user_data(isolated_nltk_path):
    assert wordnet_setup.debian_wordnet_available(), "the Makefile installs wordnet-base wordnet-sense-index"
    tmp = isolated_nltk_path
    assert wordnet_setup.find_wordnet_root() is None
    # A user who already has NLTK's wordnet: it is found on NLTK's own path and used as is.
    user = wordnet_setup.build_wordnet(tmp / "user_nltk")
    assert wordnet_setup.find_wordnet_root() == user
    lex = (user / "corpora" / "wordnet" / "lexnames").read_text().splitlines()
    assert len(lex) == 45 and lex[3].split("\t") == ["03", "noun.Tops", "1"]
    assert wordnet_setup.ensure_wordnet_on_path() == user
    assert not (tmp / "domainft_nltk").exists()


def test_missing_wordnet_error_says_how_to_get_it(isolated_nltk_path):
    with pytest.raises(RuntimeError) as e:
        wordnet_setup.ensure_wordnet_on_path(build=False)
    msg = str(e.value)
    assert "apt-get install wordnet-base" in msg and "nltk.downloader wordnet" in msg and "NLTK_DATA" in msg


def test_ensure_builds_from_debian_when_nothing_is_there(isolated_nltk_path):
    root = wordnet_setup.ensure_wordnet_on_path()
    assert root == isolated_nltk_path / "domainft_nltk"
    assert (root / "corpora" / "wordnet" / "data.noun").stat().st_size > 10_000_000
    import nltk

    assert nltk.data.path[0] == str(root)
    assert os.environ["DOMAINFT_NLTK_DATA"] == str(root)
