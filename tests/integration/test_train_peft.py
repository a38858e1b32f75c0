"""Every PEFT regime through `train_prepared`: Ray Train, 2 workers, real DeepSpeed, checkpoints, export.

Ray fits are expensive on a small machine, so each fit checks several things. ZeRO-stage x precision
coverage of the same code without Ray is in test_zero_peft.py.
"""
import glob
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from run_configs import run_config
from domainft.commands.train import train_prepared


def _cfg(out, data, model_dir, *overrides):
    return run_config(out, data["train_dir"], model_dir, *overrides,
                      data={"max_length": 64},  # rows are <= 41 tokens
                      optim={"lr": 5e-3, "layer_decay": 0.8}, train_={"log_every_steps": 10, "max_steps_per_epoch": 12},
                      run={"max_failures": 0})


@pytest.fixture(scope="module")
def splits(tmp_path_factory, token_splits):
    return token_splits(tmp_path_factory.mktemp("splits"), n_train=800, n_eval=120, eval_files=3)


def _logits(model, splits):
    import pyarrow.parquet as pq

    from domainft.core.batching import pad_batch

    table = pq.read_table(splits["eval_dir"])
    batch = pad_batch({"input_ids": table.column("input_ids").to_pylist(), "label": table.column("label").to_numpy()})
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]


def _confusion(logits, labels, k):
    return torch.bincount(labels * k + logits.argmax(-1), minlength=k * k).view(k, k).tolist()


def _adapter_model(adapter_dir, base_dir, k):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    base = AutoModelForSequenceClassification.from_pretrained(str(base_dir), num_labels=k)
    return PeftModel.from_pretrained(base, str(adapter_dir)).eval()


def _optimizer_state_keys(checkpoint_dir):
    """Every key of the optimizer states DeepSpeed saved (all ranks), searched through nested dicts."""
    keys = set()

    def walk(obj):
        if isinstance(obj, dict):
            for k, v in obj.items():
                keys.add(str(k))
                walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    for path in glob.glob(os.path.join(checkpoint_dir, "ds", "*optim_states.pt")):
        walk(torch.load(path, map_location="cpu", weights_only=False))  # our own workers' files
    return keys


@pytest.mark.timeout(900)
def test_lora_zero3_gradual_unfreezing_export_and_resubmission(ray_cluster, tmp_path, splits, tiny_model_dir):
    """LoRA at ZeRO-3: adapters thaw top-down with their layers (LR 0 while frozen), the merged model
    and the adapter give the same logits, every frozen base weight is bit-identical, the reported eval
    is exactly that of the exported model, and an identical resubmission restores the LoRA checkpoint."""
    cfg = _cfg(tmp_path / "out", splits, tiny_model_dir, "peft.method=lora", "peft.r=4", "deepspeed.zero_stage=3",
               "train.epochs=2", "unfreeze.every_epochs=1", "unfreeze.initial_layers=1", "train.max_steps_per_epoch=10")
    summary = train_prepared(cfg, splits)
    k = len(splits["label_names"])
    hist = summary["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and [h["lowest_trainable"] for h in hist] == [2, 2]
    # the adapters of layer_2 (depth 2) thaw after epoch 1; deeper ones never do in this run
    assert [(e["step"], e["depth"], e["name"]) for e in summary["unfreeze_events"]] == [(10, 2, "layer_2")]
    lrs = summary["lr_trace"][0]["lrs"]
    assert lrs["layer_3"] > 0 and lrs["layer_2"] == 0.0 and "layer_1" not in lrs
    metrics = json.loads(open(os.path.join(cfg.output_dir, "metrics.json")).read())
    head = 32 * 32 + 32 + 3 * 32 + 3  # pooler + classifier of the tiny BERT
    lora_per_layer = 2 * 2 * 4 * 32  # query and value, A (4x32) and B (32x4)
    assert metrics["trainable_params"] == head + 2 * lora_per_layer  # layers 3 and 2: trained in this run
    from transformers import AutoModelForSequenceClassification

    plain = sum(p.numel() for p in AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).parameters())
    assert metrics["total_params"] == plain + 4 * lora_per_layer
    assert metrics["merged"] and metrics["adapter_dir"] == os.path.join(cfg.output_dir, "best_adapter")

    best, adapter = summary["best_model_dir"], summary["adapter_dir"]
    before = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    after = load_file(os.path.join(best, "model.safetensors"))
    assert set(after) == set(before)
    changed = sorted(n for n in after if not torch.equal(before[n], after[n]))
    assert changed and all(n.startswith(("bert.pooler.", "classifier.", "bert.encoder.layer.3.attention.self.",
                                         "bert.encoder.layer.2.attention.self.")) for n in changed), changed
    assert all(".key." not in n and ".bias" not in n for n in changed if "attention.self" in n)

    merged_logits, labels = _logits(AutoModelForSequenceClassification.from_pretrained(best).eval(), splits)
    adapter_logits, _ = _logits(_adapter_model(adapter, tiny_model_dir, k), splits)
    assert (merged_logits - adapter_logits).abs().max() <= 1e-4
    assert _confusion(adapter_logits, labels, k) == summary["best"]["confusion"]  # the export is the trained model
    code = "import sys; from transformers import AutoModelForSequenceClassification as M; M.from_pretrained(sys.argv[1]);" \
           "assert 'peft' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code, best], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr

    saved = {p: os.path.getmtime(p) for p in glob.glob(os.path.join(cfg.output_dir, "ray", "*", "epoch_*"))}
    again = train_prepared(cfg, splits)  # same run: restored from the last checkpoint, nothing retrained
    assert again["history"] == hist and again["best"]["confusion"] == summary["best"]["confusion"]
    assert saved and {p: os.path.getmtime(p) for p in glob.glob(os.path.join(cfg.output_dir, "ray", "*", "epoch_*"))
                      } == saved  # no epoch was trained (or checkpointed) again
    assert _confusion(_logits(_adapter_model(adapter, tiny_model_dir, k), splits)[0], labels, k) == \
        summary["best"]["confusion"]  # re-exported from the restored LoRA checkpoint


@pytest.mark.timeout(900)
def test_decoder_lora_zero2_bf16_int8_base_8bit_adamw_and_gradient_checkpointing(ray_cluster, tmp_path, splits,
                                                                                  minilm_path):
    """A decoder LLM (DeepSeek-V3's architecture: MoE layers, multi-head latent attention) as a classifier on
    2 workers at ZeRO-2, LoRA with gradient checkpointing, model.load_in_8bit on CPU (the base trains frozen as
    LLM.int8: the checkpoint holds int8 weights) and bitsandbytes AdamW8bit: it learns the task; best/ is a
    plain transformers model merged into the full-precision base that scores as the run did, and best_adapter/
    loads with peft's AutoPeftModelForSequenceClassification to the same predictions. (4-bit NF4 bases:
    tests/unit/core/test_decoders.py and test_decoder_zero.py.)"""
    from peft import AutoPeftModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification

    from tiny_models import MINILM_VOCAB, save_tiny

    base = save_tiny(tmp_path / "base", "deepseek_v3", 3, tokenizer=minilm_path, vocab_size=MINILM_VOCAB)
    cfg = _cfg(tmp_path / "out", splits, base, "peft.method=lora", "model.load_in_8bit=true", "optim.eight_bit=true",
               "train.precision=bf16", "train.gradient_checkpointing=true", "optim.lr=1e-2")
    summary = train_prepared(cfg, splits)
    assert summary["best"]["accuracy"] > 0.6, summary["best"]  # 3 classes: chance is 1/3
    module = torch.load(os.path.join(summary["checkpoint"], "ds", "mp_rank_00_model_states.pt"), map_location="cpu",
                        weights_only=False)["module"]
    assert module["base_model.model.model.layers.2.self_attn.q_a_proj.base_layer.weight"].dtype == torch.int8
    keys = _optimizer_state_keys(summary["checkpoint"])
    assert "state1" in keys and "exp_avg" not in keys, sorted(keys)[:30]  # bitsandbytes' state, not torch's
    before = load_file(os.path.join(base, "model.safetensors"))
    after = load_file(os.path.join(summary["best_model_dir"], "model.safetensors"))
    frozen = "model.layers.2.mlp.shared_experts.up_proj.weight"  # not a LoRA target: exactly as pretrained
    assert after[frozen].dtype == torch.float32 and torch.equal(after[frozen], before[frozen])
    top = "model.layers.2.self_attn.q_a_proj.weight"  # trained: the merged adapter moved it
    assert not torch.equal(after[top], before[top])
    k = len(splits["label_names"])
    merged = AutoModelForSequenceClassification.from_pretrained(summary["best_model_dir"]).eval()
    assert type(merged).__name__ == "DeepseekV3ForSequenceClassification"
    logits, labels = _logits(merged, splits)
    # the run scored with the base in int8; the export merges into the full-precision base
    assert abs(float((logits.argmax(-1) == labels).float().mean()) - summary["best"]["accuracy"]) <= 0.05
    adapter = AutoPeftModelForSequenceClassification.from_pretrained(summary["adapter_dir"], num_labels=k).eval()
    assert torch.equal(_logits(adapter, splits)[0].argmax(-1), logits.argmax(-1))


@pytest.mark.timeout(900)
@pytest.mark.parametrize("method,stage", [("prompt_tuning", 2), ("prefix_tuning", 3)])
def test_virtual_tokens_train_and_export_as_an_adapter(ray_cluster, tmp_path, splits, tiny_model_dir, method, stage):
    cfg = _cfg(tmp_path / "out", splits, tiny_model_dir, f"peft.method={method}", "peft.num_virtual_tokens=8",
               f"deepspeed.zero_stage={stage}", "optim.lr=3e-2")
    summary = train_prepared(cfg, splits)
    k = len(splits["label_names"])
    best, adapter = summary["best_model_dir"], summary["adapter_dir"]
    assert not summary["merged"] and os.path.isfile(os.path.join(best, "adapter_config.json"))
    assert not os.path.exists(os.path.join(best, "model.safetensors"))
    assert "PeftModel.from_pretrained" in open(os.path.join(best, "README.md")).read()
    assert summary["trainable_params"] == 32 * 32 + 32 + 3 * 32 + 3 + 8 * (32 if method == "prompt_tuning" else
                                                                           2 * 4 * 32)
    logits, labels = _logits(_adapter_model(best, tiny_model_dir, k), splits)
    assert _confusion(logits, labels, k) == summary["best"]["confusion"]  # the export is the trained model
    assert load_file(os.path.join(adapter, "adapter_model.safetensors"))["prompt_embeddings"].abs().sum() > 0


@pytest.mark.timeout(900)
def test_selective_ffn_and_bias_zero1_8bit(ray_cluster, tmp_path, splits, tiny_model_dir):
    """Selective [ffn, bias] (BitFit on top of the FFNs) at ZeRO-1 with 8-bit AdamW: only those
    parameters and the head change; best/ is a plain model and there is no adapter."""
    cfg = _cfg(tmp_path / "out", splits, tiny_model_dir, "peft.method=selective", "peft.trainable=[ffn, bias]",
               "deepspeed.zero_stage=1", "optim.eight_bit=true", "optim.lr=2e-3")
    summary = train_prepared(cfg, splits)
    assert summary["adapter_dir"] is None
    before = load_file(os.path.join(tiny_model_dir, "model.safetensors"))
    after = load_file(os.path.join(summary["best_model_dir"], "model.safetensors"))
    changed = {n for n in after if not torch.equal(before[n], after[n])}
    assert "bert.encoder.layer.0.intermediate.dense.weight" in changed
    assert "bert.encoder.layer.0.attention.self.query.bias" in changed
    frozen = [n for n in after if n.endswith(".weight") and ("attention" in n or "LayerNorm" in n or "embeddings" in n)]
    assert frozen and not changed & set(frozen)
    keys = _optimizer_state_keys(summary["checkpoint"])
    assert "state1" in keys and "exp_avg" not in keys, sorted(keys)[:30]

