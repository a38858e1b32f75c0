"""Distillation in plain PyTorch: the loss, students built from a teacher, and the config checks."""
import json

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification

from domainft.config import ConfigError, apply_overrides, validate_dict
from domainft.core.distill import (distill_loss_fn, distillation_loss, hidden_matching_loss, init_student_from_teacher,
                                   layer_pairs, student_config)


def test_loss_blends_soft_and_hard_terms():
    s, t = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)), torch.randn(6, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert torch.allclose(distillation_loss(s, t, y, 2.0, 0.0), F.cross_entropy(s, y))
    assert distillation_loss(t, t, y, 2.0, 1.0).abs() < 1e-6  # the student equals the teacher: no soft loss
    kl = F.kl_div(F.log_softmax(s / 4, -1), F.softmax(t / 4, -1), reduction="batchmean") * 16
    assert torch.allclose(distillation_loss(s, t, y, 4.0, 1.0), kl, atol=1e-6)


def test_hidden_matching_ignores_padding():
    mask = torch.tensor([[1, 1, 0]])
    a = [torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)]
    b = [torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)]
    b[1][0, 2] = 100.0  # only at the padded position
    assert hidden_matching_loss(a, b, [0], mask) == 0
    b[1][0, 0, 0] = 2.0
    assert hidden_matching_loss(a, b, [0], mask) == pytest.approx(4.0 / 8)


def test_the_loss_fn_runs_the_teacher_on_the_batch(make_model, make_batch):
    """The `loss_fn` the workers use scores the student against the teacher's logits on the same batch: a
    different teacher gives a different loss, and the loss is the blend computed from that teacher's output."""
    student, teacher, other = (make_model("bert", num_layers=2, seed=s).eval() for s in (0, 1, 2))  # no dropout
    batch = make_batch(seed=3)
    out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    with torch.no_grad():
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    loss = distill_loss_fn(teacher, temperature=2.0, alpha=0.7)(out, batch)
    assert torch.allclose(loss, distillation_loss(out.logits, t_logits, batch["labels"], 2.0, 0.7))
    assert not torch.allclose(loss, distill_loss_fn(other, temperature=2.0, alpha=0.7)(out, batch))
    assert not any(p.grad is not None for p in teacher.parameters())
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())  # no autograd through the teacher


def test_hidden_loss_adds_its_gradient(make_model, make_batch):
    """hidden_loss > 0 adds the hidden-state term: the student's gradient changes by exactly that term's."""
    teacher = make_model("bert", num_layers=4, seed=1).eval()  # no dropout: the runs differ by the loss only
    batch = make_batch(seed=3)
    layers = [1, 3]

    def grads(weight, only_hidden=False):
        student = AutoModelForSequenceClassification.from_config(student_config(teacher.config, layers))
        init_student_from_teacher(student, teacher, layers)
        student.eval()
        out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True)
        if only_hidden:
            with torch.no_grad():
                t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                            output_hidden_states=True)
            loss = weight * hidden_matching_loss(out.hidden_states, t.hidden_states, layers, batch["attention_mask"])
        else:
            loss = distill_loss_fn(teacher, 2.0, 0.5, weight, layers)(out, batch)
        loss.backward()
        return {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}

    plain, matched, hidden_only = grads(0.0), grads(5.0), grads(5.0, only_hidden=True)
    layer0 = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.allclose(plain[layer0], matched[layer0])
    for name, g in hidden_only.items():
        assert torch.allclose(matched[name], plain[name] + g, atol=1e-6), name
    with pytest.raises(ValueError, match="layer map"):
        distill_loss_fn(teacher, 2.0, 0.5, 1.0)


def test_layer_selected_student_copies_the_chosen_layers(make_model):
    teacher = make_model("bert", num_layers=4, seed=1)
    student = AutoModelForSequenceClassification.from_config(student_config(teacher.config, [1, 3]))
    assert student.config.num_hidden_layers == 2
    assert init_student_from_teacher(student, teacher, [1, 3]) == len(list(student.parameters()))
    sd, td = student.state_dict(), teacher.state_dict()
    for i, j in ((0, 1), (1, 3)):
        name = "bert.encoder.layer.{}.attention.self.query.weight"
        assert torch.equal(sd[name.format(i)], td[name.format(j)])
    assert torch.equal(sd["bert.embeddings.word_embeddings.weight"], td["bert.embeddings.word_embeddings.weight"])
    assert torch.equal(sd["classifier.weight"], td["classifier.weight"])


def test_all_layers_kept_gives_the_teacher_back(make_model, make_batch):
    teacher = make_model("bert", num_layers=3, seed=2).eval()
    student = AutoModelForSequenceClassification.from_config(student_config(teacher.config, [0, 1, 2])).eval()
    init_student_from_teacher(student, teacher, [0, 1, 2])
    batch = make_batch()
    with torch.no_grad():
        assert torch.allclose(student(input_ids=batch["input_ids"]).logits, teacher(input_ids=batch["input_ids"]).logits)


@pytest.mark.parametrize("family", ["bert", "distilbert", "roberta"])
def test_narrow_student_takes_the_leading_dimensions(make_model, family):
    teacher = make_model(family, num_layers=2, seed=3)
    cfg = student_config(teacher.config, None, 16)  # teacher hidden 32, head size 16
    student = AutoModelForSequenceClassification.from_config(cfg)
    init_student_from_teacher(student, teacher)
    t, s = dict(teacher.named_parameters()), dict(student.named_parameters())
    emb = next(n for n in s if "word_embeddings" in n)
    assert s[emb].shape[1] == 16 and torch.equal(s[emb], t[emb][:, :16])
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())


def test_bad_student_shapes_are_refused(make_model):
    teacher = make_model("bert", num_layers=4)
    for layers in ([3, 1], [0, 0], [4], []):
        with pytest.raises(ValueError, match="student_layers"):
            student_config(teacher.config, layers)
    for hidden in (32, 24):  # not narrower; not a multiple of the head size 16
        with pytest.raises(ValueError, match="student_hidden_size"):
            student_config(teacher.config, None, hidden)
    assert layer_pairs(2, teacher.config) == [1, 3]


@pytest.fixture
def teacher_dir(tmp_path, make_model):
    d = tmp_path / "teacher"
    model = make_model("bert", num_layers=4)
    model.config.id2label = {0: "a", 1: "b", 2: "c"}
    model.config.label2id = {"a": 0, "b": 1, "c": 2}
    model.save_pretrained(d)
    return d


def _cfg(corpus_and_model, teacher, *overrides):
    corpus, model = corpus_and_model
    raw = {"output_dir": str(corpus.parent / "out"), "data": {"train": str(corpus)}, "model": {"name_or_path": str(model)},
           "distill": {"teacher": str(teacher)}}
    return validate_dict(apply_overrides(raw, overrides))


def test_distill_config_problems_all_at_once(corpus_and_model, teacher_dir):
    with pytest.raises(ConfigError) as e:
        _cfg(corpus_and_model, teacher_dir, "distill.student_layers=[5,1]", "distill.student_hidden_size=24",
             "distill.hidden_loss=1.0")
    text = str(e.value)
    assert "distill.student_layers: [5, 1]: need increasing, distinct teacher layers in 0..3" in text
    assert "distill.student_hidden_size: 24: must be below the teacher's 32 and a multiple of its head size 16" in text
    assert "distill.hidden_loss" in text
    with pytest.raises(ConfigError, match="describe the student"):
        _cfg(corpus_and_model, teacher_dir)
    assert _cfg(corpus_and_model, teacher_dir, "distill.student_layers=[1,3]").distill.student_layers == [1, 3]


def test_a_teacher_that_is_not_a_classifier_is_refused(corpus_and_model, tmp_path):
    d = tmp_path / "base"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert", "architectures": ["BertModel"]}))
    with pytest.raises(ConfigError, match="not a sequence classifier"):
        _cfg(corpus_and_model, d, "distill.student_layers=[0]")
    with pytest.raises(ConfigError, match="distill.teacher: no such file"):
        _cfg(corpus_and_model, tmp_path / "nope", "distill.student_layers=[0]")
