"""The RunSpec from a config, a prepared-data report and the world size: no Ray, no weights (config.json).

What `plan` prints and what each worker builds come from this one function; the integration test
tests/integration/test_cli.py compares `domainft plan` with what the workers of a real run used.
"""
import json
import math

import pytest

from domainft.config import ConfigError, apply_overrides, validate_dict
from domainft.planning import build_spec, format_plan, make_plan
from domainft.planning.build import NOMINAL_STEPS_PER_EPOCH
from prepared import write_report
from domainft.runspec import RunSpec

REPORT = {"train_rows": 200, "eval_rows": 40, "label_names": ["business", "sport", "tech"], "pad_token_id": 0,
          "class_counts_after": {"business": 100, "sport": 60, "tech": 40}, "train_dir": "/d/train",
          "eval_dir": "/d/eval", "fingerprint": "fp"}


@pytest.fixture
def cfg_of(tmp_path, tiny_classifier_dir):
    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"text": "a", "label": "x"}\n')

    def make(*overrides):
        raw = {"output_dir": str(tmp_path / "out"), "data": {"train": str(corpus)},
               "model": {"name_or_path": str(tiny_classifier_dir)},  # 2 encoder layers: depths 0..3
               "optim": {"lr": 1e-3, "layer_decay": 0.5, "head_lr_mult": 10},
               "unfreeze": {"every_epochs": 1, "initial_layers": 1},
               "train": {"epochs": 3, "batch_size": 10}, "scaling": {"num_workers": 2}}
        return validate_dict(apply_overrides(raw, overrides))
    return make


def test_spec_holds_the_geometry_lrs_thaw_steps_and_deepspeed_config(cfg_of):
    spec = build_spec(cfg_of("deepspeed.zero_stage=2"), REPORT)
    g = spec.geometry
    assert (g.steps_per_epoch, g.total_steps, g.global_batch) == (10, 30, 20)  # 200 rows / 2 workers / batch 10
    assert [d.name for d in spec.depths] == ["head", "layer_1", "layer_0", "embeddings"]
    assert spec.peak_lrs == {0: 1e-2, 1: 5e-4, 2: 2.5e-4, 3: 1.25e-4}
    # head and top layer from step 0, one more depth per epoch; the embeddings would thaw at step 30, the end
    assert [d.scheduled_step for d in spec.depths] == [0, 0, 10, 20]
    assert spec.thaw_schedule == {0: 0, 1: 0, 2: 10, 3: 20}
    assert spec.lr.total_steps == 30 and spec.lr.warmup_steps == 3  # warmup_ratio 0.1
    assert spec.deepspeed["zero_optimization"]["stage"] == 2 and spec.deepspeed["train_batch_size"] == 20
    assert spec.loss == {"kind": "cross_entropy"} and spec.task == "classification"
    assert spec.ray.run_name.startswith("out-") and spec.ray.storage_path.endswith("/out/ray")
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec  # what crosses the Ray boundary


def test_a_depth_due_after_the_last_step_never_trains(cfg_of):
    spec = build_spec(cfg_of("train.epochs=2"), REPORT)
    assert [(d.scheduled_step, d.thaw_step, d.trained) for d in spec.depths][2:] == [(10, 10, True), (20, None, False)]


def test_lr_scaling_is_in_every_peak_lr_and_plan_prints_the_same(cfg_of, tmp_path):
    """Before the RunSpec, `plan` showed the LRs without optim.lr_scaling while the workers scaled them."""
    cfg = cfg_of("optim.lr_scaling=sqrt", "optim.lr_reference_batch=5")  # global batch 20: x2
    spec = build_spec(cfg, REPORT)
    assert spec.optimizer.lr_scale == 2.0 and spec.peak_lrs[0] == pytest.approx(2e-2)
    write_report(cfg, **{k: v for k, v in REPORT.items() if not k.endswith(("_dir", "fingerprint"))})
    plan = make_plan(cfg)
    assert [g["peak_lr"] for g in plan["groups"]] == [d.peak_lr for d in spec.depths]
    assert [g["trainable_from_step"] for g in plan["groups"]] == [d.scheduled_step for d in spec.depths]


def test_class_weights_come_from_the_balanced_train_counts(cfg_of):
    spec = build_spec(cfg_of("train.class_weights=balanced"), REPORT)
    w = spec.loss["class_weights"]
    assert spec.loss["kind"] == "weighted_cross_entropy" and w == pytest.approx([200 / 300, 200 / 180, 200 / 120])


def test_every_problem_with_the_model_and_the_data_is_one_config_error(cfg_of):
    cfg = cfg_of("train.batch_size=128", "optim.layer_lrs=[1e-4, 1e-5]")
    with pytest.raises(ConfigError) as e:
        build_spec(cfg, REPORT)
    p = e.value.problems
    assert len(p) == 2
    assert "200 train rows are too few for 2 workers x batch 128" in p[0] and p[0].startswith("/d/train:")
    assert p[1].startswith("optim.layer_lrs: layer_lrs has 2 values; expected 3")


def test_an_unsupported_architecture_is_named_with_the_supported_ones(cfg_of, tmp_path):
    t5 = tmp_path / "t5"
    t5.mkdir()
    (t5 / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5ForConditionalGeneration"]}))
    cfg = cfg_of(f"model.name_or_path={t5}")
    with pytest.raises(ConfigError) as e:
        build_spec(cfg, REPORT)
    assert e.value.problems == [f"model.name_or_path: {t5} is a 't5' model (T5ForConditionalGeneration); domainft "
                                "fine-tunes the model types bert, roberta, xlm-roberta, electra, distilbert, "
                                "deberta-v2, llama, mistral, mixtral, qwen2, qwen3, qwen2_moe, qwen3_moe, deepseek_v2, "
                                "deepseek_v3, gemma, gemma2, gemma3_text, phi3"]


def test_without_prepared_data_the_timeline_counts_epochs(cfg_of):
    spec = build_spec(cfg_of(), None)
    assert spec.geometry is None and spec.lr is None
    n = NOMINAL_STEPS_PER_EPOCH  # the timeline is laid out on nominal steps per epoch
    assert [d.scheduled_step for d in spec.depths] == [0, 0, n, 2 * n]
    assert spec.data.label_names == ["label_0", "label_1"] and math.isclose(spec.peak_lrs[1], 5e-4)


def test_a_thaw_every_half_epoch_lands_mid_epoch_before_prepare(cfg_of):
    """With 1 step per epoch before prepare, a thaw every 0.5 epochs was rounded to whole epochs."""
    plan = make_plan(cfg_of("unfreeze.every_epochs=0.5", "train.epochs=2"))
    assert plan["steps_per_epoch"] is None
    assert [(g["trainable_from_epoch"], g["trained_in_run"]) for g in plan["groups"]] == [
        (1, True), (1, True), (1.5, True), (2, True)]
    assert "epoch 1.5" in format_plan(plan)


def test_stale_prepared_data_gives_no_step_numbers(cfg_of, tmp_path):
    """Prepared data of another corpus or other settings: its row count is not this run's."""
    cfg = cfg_of()
    write_report(cfg, train_rows=200)
    assert make_plan(cfg)["steps_per_epoch"] == 10 and not make_plan(cfg)["stale_data"]
    changed = cfg_of("data.max_length=64")  # prepare would tokenize again: another row set
    plan = make_plan(changed)
    assert plan["steps_per_epoch"] is None and plan["stale_data"]
    assert "the prepared data is not this config's" in format_plan(plan)
