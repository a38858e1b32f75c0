"""`domainft distill` on a local Ray cluster: a small (fewer layers, narrower) student learns from a tiny teacher,
through the same engine as `train` (2 workers, DeepSpeed ZeRO-2), and exports."""
import os

import pyarrow.parquet as pq
import pytest
import torch

from domainft.config import apply_overrides, validate_dict


@pytest.fixture(scope="module")
def splits(tmp_path_factory, token_splits):
    return token_splits(tmp_path_factory.mktemp("distill_splits"), n_train=800, n_eval=120)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, splits, tiny_model_dir):
    """The tiny BERT fine-tuned in-process (plain PyTorch) on the easy task, exported like a best/."""
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
    d = tmp_path_factory.mktemp("teacher") / "best"
    export_hf(dict(model.named_parameters()), str(tiny_model_dir), splits["label_names"], str(tiny_model_dir), d)
    return d


def _accuracy(model_dir, splits):
    from transformers import AutoModelForSequenceClassification

    from domainft.core.scoring import confusion_of

    t = pq.read_table(splits["eval_dir"])
    cm = confusion_of(AutoModelForSequenceClassification.from_pretrained(model_dir), t.column("input_ids").to_pylist(),
                      t.column("label").to_pylist(), len(splits["label_names"]))
    return cm.trace() / cm.sum()


@pytest.mark.timeout(900)
def test_small_student_learns_from_the_teacher_and_exports(ray_cluster, tmp_path, splits, teacher,
                                                                   tiny_model_dir):
    from domainft.commands.distill import STUDENT_INIT, distill_prepared, student_run_config

    raw = {"output_dir": str(tmp_path / "student"), "data": {"train": splits["train_dir"]},
           "model": {"name_or_path": str(tiny_model_dir)},
           # narrower than the teacher (16 of 32): its sliced initial weights score near chance
           "distill": {"teacher": str(teacher), "student_layers": [1, 3], "student_hidden_size": 16,
                       "temperature": 2.0, "alpha": 0.7},
           "optim": {"lr": 2e-3, "head_lr_mult": 1.0, "warmup_ratio": 0.05}, "unfreeze": {"every_epochs": 0},
           "train": {"epochs": 2, "batch_size": 16, "seed": 3, "max_steps_per_epoch": 15},
           "deepspeed": {"zero_stage": 2}, "scaling": {"num_workers": 2, "cpus_per_worker": 0.5}}
    cfg = validate_dict(apply_overrides(raw, []))
    student_cfg = student_run_config(cfg)
    init = os.path.join(cfg.output_dir, STUDENT_INIT)
    assert student_cfg.model.name_or_path == init
    before = _accuracy(init, splits)
    summary = distill_prepared(student_cfg, splits, quiet=True)
    d = summary["distillation"]
    assert d["student"]["params"] < d["teacher"]["params"]
    assert d["teacher"]["accuracy"] > 0.9
    assert summary["best"]["accuracy"] > before + 0.1, (before, summary["best"]["accuracy"])
    assert d["student"]["accuracy"] == pytest.approx(summary["best"]["accuracy"])  # best/ is the student
    assert d["student"]["cpu_latency_ms_b1_s128"] > 0 and "ratios" in d
    from transformers import AutoConfig

    exported = AutoConfig.from_pretrained(summary["best_model_dir"])
    assert (exported.num_hidden_layers, exported.hidden_size) == (2, 16)
