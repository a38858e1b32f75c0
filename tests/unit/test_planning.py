"""`domainft plan`: groups, LRs, unfreezing timeline, DeepSpeed config and memory, without Ray or weights."""

from domainft.config import validate_dict
from domainft.planning import format_plan, make_plan
from prepared import write_report
from tiny_models import MINILM_VOCAB, save_tiny


def test_plan_from_a_model_folder_and_prepared_report(tmp_path, minilm_path):
    model_dir = save_tiny(tmp_path / "model", "bert", 4, num_labels=2, tokenizer=minilm_path,
                          vocab_size=MINILM_VOCAB, max_position_embeddings=512)
    (tmp_path / "train.jsonl").write_text("{}\n")
    cfg = validate_dict({"output_dir": str(tmp_path / "out"), "data": {"train": str(tmp_path / "train.jsonl")},
                         "model": {"name_or_path": str(model_dir)},
                         "optim": {"lr": 1e-3, "layer_decay": 0.5},
                         "unfreeze": {"every_epochs": 1, "initial_layers": 1},
                         "train": {"epochs": 3, "batch_size": 10}, "scaling": {"num_workers": 2},
                         "deepspeed": {"zero_stage": 2}})
    # no prepared data: the timeline is in epochs
    p = make_plan(cfg)
    assert p["steps_per_epoch"] is None
    by_name = {g["name"]: g for g in p["groups"]}
    assert by_name["head"]["trainable_from_epoch"] == 1 and by_name["layer_3"]["trainable_from_epoch"] == 1
    assert by_name["layer_2"]["trainable_from_epoch"] == 2 and by_name["layer_1"]["trainable_from_epoch"] == 3
    assert not by_name["layer_0"]["trained_in_run"] and not by_name["embeddings"]["trained_in_run"]
    assert by_name["layer_3"]["peak_lr"] == 1e-3 * 0.5 and by_name["layer_2"]["peak_lr"] == 1e-3 * 0.25
    assert p["total_params"] == sum(g["params"] for g in p["groups"])
    assert p["trainable_params"] < p["total_params"]
    assert [m["zero_stage"] for m in p["memory"]] == [0, 1, 2, 3]
    totals = [m["total"] for m in p["memory"]]
    assert totals == sorted(totals, reverse=True)  # each stage partitions more
    assert p["deepspeed"]["zero_optimization"]["stage"] == 2 and "scheduler" not in p["deepspeed"]

    # with a prepared report: step numbers (100 rows / 2 workers / batch 10 = 5 steps per epoch)
    write_report(cfg, train_rows=100)
    p = make_plan(cfg)
    assert p["steps_per_epoch"] == 5 and p["total_steps"] == 15
    assert {g["name"]: g["trainable_from_step"] for g in p["groups"]}["layer_2"] == 5
    text = format_plan(p)
    assert "layer_2" in text and "step 5 (epoch 2)" in text and "ZeRO-2" in text and "<- configured" in text
