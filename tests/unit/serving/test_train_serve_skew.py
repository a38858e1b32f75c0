"""No train/serve skew, end to end without Ray: a classifier fine-tuned at data.max_length 16 (prepare's encoder,
a few optimizer steps on CPU) and written by the training export (the task's `export`, from the run's RunSpec)
is served without --max-length at 16, so its answers on longer texts are the model's at its training length,
not those at the tokenizer's 512 (what a server took before the length was recorded)."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from domainft.serving.predictors import load_predictor
from run_configs import run_config
from tiny_models import MINILM_VOCAB, save_tiny

LABELS = ["fruit", "music", "nature"]
WORDS = {"fruit": "apple banana cherry grape lemon", "music": "guitar piano violin drum flute",
         "nature": "river mountain forest valley ocean"}
TRAIN_LENGTH = 16


def _words(rng: random.Random, label: str, n: int) -> str:
    return " ".join(rng.choice(WORDS[label].split()) for _ in range(n))


# Long texts whose first 14 words say one label and the next 100 another: at 16 tokens the model sees only the first.
LONG = [_words(random.Random(i), a, 14) + " " + _words(random.Random(i), b, 100)
        for i, (a, b) in enumerate((a, b) for a in LABELS for b in LABELS if a != b)]


@pytest.fixture(scope="module")
def best(tmp_path_factory, minilm_path) -> Path:
    from domainft.core.batching import pad_batch
    from domainft.data.tokenize import build_encoder, encoder_spec, load_tokenizer
    from domainft.planning import build_spec
    from domainft.tasks import get_task

    root = tmp_path_factory.mktemp("skew")
    # 512 positions: the tokenizer's 512 is a length the model takes, as for MiniLM itself
    base = save_tiny(root / "base", "bert", 2, len(LABELS), tokenizer=minilm_path, vocab_size=MINILM_VOCAB,
                     max_position_embeddings=512)
    rng = random.Random(0)
    rows = [(_words(rng, LABELS[i % 3], rng.randint(4, 30)), i % 3) for i in range(240)]
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "label": LABELS[y]}) + "\n" for t, y in rows))
    cfg = run_config(root / "out", corpus, base, data={"max_length": TRAIN_LENGTH}, scaling={"num_workers": 1},
                     deepspeed={"zero_stage": 0})
    spec = build_spec(cfg, {"label_names": LABELS, "train_rows": len(rows), "eval_rows": 30, "pad_token_id": 0})
    task = get_task(spec.task)

    encode = build_encoder(encoder_spec(load_tokenizer(str(base)), str(base)), spec.data.max_length)  # prepare's
    ids, labels = encode([t for t, _ in rows]), [y for _, y in rows]
    torch.manual_seed(0)
    model = task.build_model(str(base), LABELS).train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for epoch in range(3):
        order = np.random.default_rng(epoch).permutation(len(ids))
        for start in range(0, len(ids), 16):
            batch = pad_batch({"input_ids": [ids[i] for i in order[start:start + 16]],
                               "label": [labels[i] for i in order[start:start + 16]]})
            model(**batch).loss.backward()
            opt.step()
            opt.zero_grad()
    model.eval()
    exported = task.export(spec, dict(model.named_parameters()), [n for n, _ in model.named_parameters()])
    return Path(exported["best_model_dir"])


def _by_hand(folder: Path, texts: list[str], max_length: int) -> np.ndarray:
    """The exported model on each text alone, tokenised by transformers with truncation at `max_length`."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    with torch.no_grad():
        return np.stack([torch.softmax(model(**tok(t, truncation=True, max_length=max_length, return_tensors="pt"))
                                       .logits[0], -1).numpy() for t in texts])


def test_best_records_how_training_cut_its_texts(best):
    config = json.loads((best / "config.json").read_text())
    assert config["domainft"] == {"label_names": LABELS, "max_length": TRAIN_LENGTH, "truncation_side": "right"}
    assert json.loads((best / "tokenizer_config.json").read_text())["model_max_length"] == 512  # the trap


def test_served_answers_are_the_models_at_its_training_length(best, caplog):
    from domainft.export.runtime import warn_longer_than_trained

    served = load_predictor(best, "torch", threads=1)
    assert (served.max_length, served.truncation_side, served.trained_max_length) == (TRAIN_LENGTH, "right", 16)
    at_training = _by_hand(best, LONG, TRAIN_LENGTH)
    np.testing.assert_allclose(served.predict_proba(LONG), at_training, atol=1e-5)
    # the model learnt the task: at its training length each long text is the label of its first words
    assert [LABELS[k] for k in at_training.argmax(-1)] == [a for a in LABELS for b in LABELS if a != b]

    at_512 = _by_hand(best, LONG, 512)
    assert (at_512.argmax(-1) != at_training.argmax(-1)).any()  # what serving at the tokenizer's limit answered
    warn_longer_than_trained.cache_clear()
    with caplog.at_level("WARNING", logger="domainft.export"):
        asked = load_predictor(best, "torch", max_length=512, threads=1)  # an explicit length still wins
    np.testing.assert_allclose(asked.predict_proba(LONG), at_512, atol=1e-5)
    assert "the model was trained at max_length 16" in caplog.text
