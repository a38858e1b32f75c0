"""Tiny classifier folders for the export tests: config-built models (random or briefly trained
weights, safetensors) with the real MiniLM tokenizer, in the layout of a `domainft train` best/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers as T

from tiny_models import MINILM_VOCAB, tiny_config

LABELS = ["neg", "neu", "pos"]
EASY_WORDS = {"neg": "awful terrible", "neu": "table chair", "pos": "wonderful great"}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded, and the machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _labels() -> dict:
    return {"id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}


def bert_config(**extra) -> T.BertConfig:
    # type_vocab_size 2 with distinct segment embeddings: feeding the mask as segment ids changes logits
    return tiny_config("bert", 2, len(LABELS), vocab_size=MINILM_VOCAB, max_position_embeddings=128, type_vocab_size=2,
                       **_labels(), **extra)


def distilbert_config() -> T.DistilBertConfig:
    return tiny_config("distilbert", 2, len(LABELS), vocab_size=MINILM_VOCAB, max_position_embeddings=128, **_labels())


def save_classifier(model: torch.nn.Module, dest: Path, tokenizer_dir: Path) -> Path:
    model.save_pretrained(dest, safe_serialization=True)
    T.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(dest)
    return dest


def easy_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A task a tiny model learns in seconds: the label's two marker words among neutral filler."""
    g = torch.Generator().manual_seed(seed)
    filler = "the of and a to in is was for on that with as by at from it".split()
    texts, labels = [], []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        words = [filler[j] for j in torch.randint(0, len(filler), (int(torch.randint(4, 20, (1,), generator=g)),),
                                                   generator=g)]
        words.insert(int(torch.randint(0, len(words), (1,), generator=g)), EASY_WORDS[label])
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def train_easy(model: torch.nn.Module, tokenizer, steps: int = 60) -> torch.nn.Module:
    texts, labels = easy_texts(240, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        idx = [(step * 16 + k) % len(texts) for k in range(16)]
        enc = tokenizer([texts[i] for i in idx], padding=True, return_tensors="pt")
        loss = model(**enc, labels=torch.tensor([LABELS.index(labels[i]) for i in idx])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    return model.eval()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_path) -> Path:
    torch.manual_seed(0)
    model = T.BertForSequenceClassification(bert_config())
    with torch.no_grad():  # segment 1 far from segment 0, so a swap with the mask cannot go unseen
        model.bert.embeddings.token_type_embeddings.weight[1].normal_(0, 1.0)
    return save_classifier(model, tmp_path_factory.mktemp("tiny_bert"), minilm_path)


@pytest.fixture(scope="session")
def tiny_distilbert_dir(tmp_path_factory, minilm_path) -> Path:
    torch.manual_seed(0)
    return save_classifier(T.DistilBertForSequenceClassification(distilbert_config()),
                           tmp_path_factory.mktemp("tiny_distilbert"), minilm_path)


@pytest.fixture(scope="session")
def easy_bert_dir(tmp_path_factory, minilm_path) -> Path:
    """A tiny BERT trained on `easy_texts`: confident answers, so int8 must keep them."""
    torch.manual_seed(0)
    tok = T.AutoTokenizer.from_pretrained(minilm_path)
    model = train_easy(T.BertForSequenceClassification(bert_config()), tok, steps=40)
    return save_classifier(model, tmp_path_factory.mktemp("easy_bert"), minilm_path)


@pytest.fixture(scope="session")
def easy_check_file(tmp_path_factory) -> Path:
    texts, labels = easy_texts(90, seed=2)
    path = tmp_path_factory.mktemp("check") / "check.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in zip(texts, labels)))
    return path


@pytest.fixture(scope="session")
def exported_bert(tmp_path_factory, tiny_bert_dir) -> tuple[Path, dict]:
    """tiny_bert_dir exported (fp32 + int8, no check data) once for the tests that only read it."""
    from domainft.export.pipeline import run_export

    out = tmp_path_factory.mktemp("tiny_bert_onnx")
    return out, run_export(tiny_bert_dir, out, quantize="int8", threads=1)


@pytest.fixture(scope="session")
def make_bert_config():
    """bert_config(**overrides): the tiny BERT's config (3 labels, 2 segment types)."""
    return bert_config


@pytest.fixture(scope="session")
def save_tiny(minilm_path):
    """save_tiny(model, dest): a classifier folder with the MiniLM tokenizer."""
    return lambda model, dest: save_classifier(model, dest, minilm_path)


@pytest.fixture(scope="session")
def make_easy_texts():
    """easy_texts(n, seed) -> (texts, labels) of the easy task."""
    return easy_texts
