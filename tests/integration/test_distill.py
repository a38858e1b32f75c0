"""`domainft distill` on a local Ray cluster: a small (fewer layers, narrower) student learns from a tiny teacher,
through the same engine as `train` (2 workers, DeepSpeed ZeRO-2), and exports.

The teacher's answers are permuted (class i scored as class PERM[i]) and the student learns from the teacher
alone (alpha 1): it must end up predicting the teacher's labels, not the data's. A student that ignored the
teacher (cross-entropy on the labels) would predict the data's labels and fail."""
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from run_configs import run_config


@pytest.fixture(scope="module")
def splits(tmp_path_factory, token_splits):
    return token_splits(tmp_path_factory.mktemp("distill_splits"), n_train=800, n_eval=120)


PERM = [1, 2, 0]  # the teacher says PERM[y] where the data says y


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, splits, tiny_model_dir):
    """The tiny BERT fine-tuned in-process (plain PyTorch) on the easy task, its head's rows then permuted
    (it answers PERM[y] for a row of class y), exported like a best/."""
    from domainft.core import build_model
    from domainft.core.batching import pad_batch
    from domainft.core.export import export_hf
    from domainft.core.loop import TorchEngine, train_epoch

    torch.manual_seed(0)
    model = build_model(str(tiny_model_dir), splits["label_names"])
    engine = TorchEngine(model, torch.optim.AdamW(model.parameters(), lr=2e-3))
    t = pq.read_table(splits["train_dir"])
    ids, labels = t.column("input_ids").to_pylist(), t.column("label").to_numpy()
    for _ in range(2):
        batches = (pad_batch({"input_ids": ids[i:i + 32], "label": labels[i:i + 32]}) for i in range(0, 768, 32))
        train_epoch(engine, batches, 24, torch.device("cpu"))
    with torch.no_grad():
        inverse = [PERM.index(k) for k in range(len(PERM))]  # logit k is the old logit of the class mapped to k
        model.classifier.weight.copy_(model.classifier.weight[inverse].clone())
        model.classifier.bias.copy_(model.classifier.bias[inverse].clone())
    d = tmp_path_factory.mktemp("teacher") / "best"
    export_hf(dict(model.named_parameters()), str(tiny_model_dir), splits["label_names"], str(tiny_model_dir), d)
    return d


def _predictions(model_dir, splits):
    from transformers import AutoModelForSequenceClassification

    from domainft.core.scoring import predict_proba

    t = pq.read_table(splits["eval_dir"])
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return predict_proba(model, t.column("input_ids").to_pylist()).argmax(-1), t.column("label").to_numpy()


@pytest.mark.timeout(900)
def test_student_learns_the_teacher_not_the_labels_and_exports(ray_cluster, tmp_path, splits, teacher,
                                                                tiny_model_dir):
    from domainft.commands.distill import STUDENT_INIT, distill_prepared, student_run_config

    cfg = run_config(tmp_path / "student", splits["train_dir"], tiny_model_dir,
                     # narrower than the teacher (16 of 32): its sliced initial weights score near chance; the
                     # soft targets alone (alpha 1) train it
                     distill={"teacher": str(teacher), "student_layers": [1, 3], "student_hidden_size": 16,
                              "temperature": 2.0, "alpha": 1.0},
                     train_={"seed": 3, "max_steps_per_epoch": 30})
    student_cfg = student_run_config(cfg)
    init = os.path.join(cfg.output_dir, STUDENT_INIT)
    assert student_cfg.model.name_or_path == init
    teacher_says, labels = _predictions(teacher, splits)
    assert (teacher_says == np.array(PERM)[labels]).mean() > 0.9  # the teacher is sure, and permuted
    before, _ = _predictions(init, splits)
    summary = distill_prepared(student_cfg, splits, quiet=True)
    after, _ = _predictions(summary["best_model_dir"], splits)
    agree_before, agree_after = (before == teacher_says).mean(), (after == teacher_says).mean()
    print(f"student agrees with the teacher: {agree_before:.3f} before, {agree_after:.3f} after; "
          f"with the labels {(after == labels).mean():.3f}")
    assert agree_after > 0.8 and agree_after > agree_before + 0.3, (agree_before, agree_after)
    assert (after == labels).mean() < 0.2  # it learnt the teacher's labels, not the data's

    d = summary["distillation"]
    assert d["student"]["params"] < d["teacher"]["params"]
    assert d["teacher"]["accuracy"] < 0.1  # scored against the data's labels: the permuted teacher is wrong
    assert d["student"]["accuracy"] == pytest.approx(summary["best"]["accuracy"])  # best/ is the student
    assert d["student"]["accuracy"] == pytest.approx((after == labels).mean())
    assert d["student"]["cpu_latency_ms_b1_s128"] > 0 and "ratios" in d
    from transformers import AutoConfig

    exported = AutoConfig.from_pretrained(summary["best_model_dir"])
    assert (exported.num_hidden_layers, exported.hidden_size) == (2, 16)
