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


# Question -> answer pairs a tiny model can learn in a few epochs: the answer is the department that treats
# the organ named in the question (the rest of the question is filler).
DEPARTMENTS = {"heart": "cardiology", "skin": "dermatology", "brain": "neurology", "lung": "pulmonology",
               "kidney": "nephrology", "bone": "orthopedics"}
_FILLER = "my father has had trouble with his for weeks and the doctor wants a second opinion".split()


def chat_corpus(path, n, fmt="messages", seed=0, system=None):
    """JSONL chat records in `fmt` (messages, alpaca, sharegpt, prompt_completion; `mixed`: in turn) whose
    answer follows from the organ in the question."""
    rng = random.Random(seed)
    formats = ("messages", "alpaca", "sharegpt", "prompt_completion") if fmt == "mixed" else (fmt,)
    organs = list(DEPARTMENTS)
    with open(path, "w") as f:
        for i in range(n):
            organ = organs[i % len(organs)]
            words = _FILLER[:]
            rng.shuffle(words)
            question = f"which department treats the {organ} ? " + " ".join(words[:6])
            answer = f"the {organ} is treated in {DEPARTMENTS[organ]} ."
            f.write(json.dumps(_record(formats[i % len(formats)], question, answer, system)) + "\n")
    return path


def _record(fmt, question, answer, system):
    if fmt == "messages":
        msgs = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return {"messages": msgs}
    if fmt == "alpaca":
        return {"instruction": question, "input": "", "output": answer, **({"system": system} if system else {})}
    if fmt == "sharegpt":
        return {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]}
    return {"prompt": question, "completion": answer}
