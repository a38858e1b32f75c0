"""Small synthetic corpora for the integration tests (a plain module: `from conftest import` would find
whichever conftest pytest imported first under that name)."""
import json
import random

WORDS = {"sport": "match goal team league coach", "tech": "software chip phone network data",
         "money": "bank shares profit market price"}


def word_corpus(path, n, labels=tuple(WORDS), seed=0, words=None):
    """JSONL rows whose label follows its marker words (shuffled with filler), labels in turn."""
    words = words or WORDS
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            label = labels[i % len(labels)]
            text = words[label].split() * 3 + "the a of and to in".split()
            rng.shuffle(text)
            f.write(json.dumps({"text": " ".join(text), "label": label}) + "\n")
    return path
