"""task sft behind the seam (no Ray): batches and packing, the per-token loss over an optimizer step, the
token-weighted eval sums, the export, the config rules of each task."""
import json

import numpy as np
import pytest
import torch

from domainft.core.loop import TorchEngine, train_epoch
from domainft.core.sft_batching import TokenLossEval, count_label_tokens, is_packed, pad_sft_batch
from domainft.data.chat import packed_row
from domainft.tasks import get_task, task_of_model_dir
from run_configs import run_config
from tiny_models import save_tiny_chat_lm, tiny_config

PACKING_FAMILIES = ["llama", "qwen2", "mistral", "deepseek_v3", "qwen3_moe"]


class _Example:
    """What packed_row reads of an encoded conversation."""

    def __init__(self, ids, labels):
        self.input_ids, self.labels = list(ids), list(labels)


def _examples(vocab: int, lengths=(7, 12, 5), seed=0):
    g = np.random.default_rng(seed)
    out = []
    for n in lengths:
        ids = g.integers(3, vocab, n).tolist()
        labels = [-100] * (n // 2) + ids[n // 2:]  # the second half is the answer
        out.append(_Example(ids, labels))
    return out


def _causal_lm(family: str):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(family, 2)).eval()


@pytest.mark.parametrize("family", PACKING_FAMILIES)
def test_packed_rows_give_the_unpacked_loss_and_no_token_attends_across_a_boundary(family):
    model = _causal_lm(family)
    examples = _examples(model.config.vocab_size)
    rows = {k: [np.asarray(e.input_ids if k == "input_ids" else e.labels if k == "labels" else range(len(e.input_ids)))
                for e in examples] for k in ("input_ids", "labels", "position_ids")}
    unpacked = pad_sft_batch(rows, pad_id=0)
    row = packed_row(examples)
    packed = pad_sft_batch({k: [np.asarray(row[k])] for k in ("input_ids", "labels", "position_ids")}, pad_id=0)
    assert "attention_mask" in unpacked and "attention_mask" not in packed and "position_ids" in packed
    tokens = count_label_tokens(unpacked)
    assert count_label_tokens(packed) == tokens
    with torch.no_grad():
        loose = model(**unpacked, use_cache=False, num_items_in_batch=tokens)
        tight = model(**packed, use_cache=False, num_items_in_batch=tokens)
        # the same tokens in one row, causally masked only: tokens of later conversations see earlier ones
        leaky = model(input_ids=packed["input_ids"], labels=packed["labels"], use_cache=False,
                      num_items_in_batch=tokens)
    torch.testing.assert_close(tight.loss, loose.loss, rtol=1e-5, atol=1e-6)
    start = 0
    for i, e in enumerate(examples):  # every token's logits are those of its own conversation alone
        n = len(e.input_ids)
        torch.testing.assert_close(tight.logits[0, start:start + n], loose.logits[i, :n], rtol=1e-4, atol=1e-5)
        start += n
    assert abs(float(leaky.loss) - float(loose.loss)) > 1e-4  # the check above can fail


def test_a_packed_row_never_trains_a_conversation_to_predict_the_next_ones_first_token():
    examples = _examples(100, (4, 4))
    examples[1].labels = list(examples[1].input_ids)  # even a conversation labelled from its first token
    row = packed_row(examples)
    assert row["position_ids"] == [0, 1, 2, 3, 0, 1, 2, 3]
    assert row["labels"][4] == -100
    assert is_packed([np.asarray(row["position_ids"])]) and not is_packed([np.arange(5), np.arange(3)])


def test_the_loss_is_per_token_over_an_optimizer_step_whatever_the_micro_batches_hold():
    """grad_accum 2, micro batches with 2 and 12 answer tokens: the step's gradient is that of the summed token
    loss over all 14 tokens / 14, not the mean of the two micro batches' means."""
    model = _causal_lm("llama")
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    batches = []
    for answer in (1, 6):
        ids = torch.randint(3, vocab, (2, 10), generator=g)
        labels = torch.full_like(ids, -100)
        labels[:, -answer:] = ids[:, -answer:]
        batches.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels})
    assert [int(count_label_tokens(b)) for b in batches] == [2, 12]

    def update(count_fn):
        torch.manual_seed(0)
        m = _causal_lm("llama").train()
        before = {n: p.detach().clone() for n, p in m.named_parameters()}
        engine = TorchEngine(m, torch.optim.SGD(m.parameters(), lr=1.0), grad_accum=2)
        stats = train_epoch(engine, batches, 2, torch.device("cpu"), forward_kwargs={"use_cache": False},
                            count_fn=count_fn, grad_accum=2)
        assert engine.global_steps == 1
        return {n: before[n] - p.detach() for n, p in m.named_parameters()}, stats["train_loss"]

    reference = _causal_lm("llama").train()
    for b in batches:
        reference(**b, use_cache=False, num_items_in_batch=torch.tensor(14.0)).loss.backward()
    exact, loss = update(count_label_tokens)
    naive, _ = update(None)
    for name, p in reference.named_parameters():
        torch.testing.assert_close(exact[name], p.grad, rtol=1e-4, atol=1e-6)
    assert max(float((naive[n] - p.grad).abs().max()) for n, p in reference.named_parameters()) > 1e-3
    with torch.no_grad():  # the epoch's train loss is per token too
        summed = sum(float(_causal_lm("llama")(**b, use_cache=False, num_items_in_batch=torch.tensor(1.0)).loss)
                     for b in batches)
    assert loss == pytest.approx(summed / 14, rel=1e-4)


def test_eval_sums_are_token_weighted_and_a_batch_without_answer_tokens_adds_nothing():
    ev = TokenLossEval(torch.device("cpu"))

    class Out:
        def __init__(self, loss):
            self.loss = torch.tensor(loss)

    def batch(answer_tokens, rows=2):
        labels = torch.full((rows, 6), -100)
        labels[0, 6 - answer_tokens:] = 1 if answer_tokens else -100
        return {"input_ids": torch.zeros(rows, 6, dtype=torch.long), "labels": labels}

    ev.update(Out(2.0), batch(1))  # 1 token at mean 2
    ev.update(Out(float("nan")), batch(0))  # the model's 0/0
    ev.update(Out(1.0), batch(3))  # 3 tokens at mean 1
    r = ev.result()
    assert r["eval_loss"] == pytest.approx(5 / 4) and r["eval_tokens"] == 4 and r["eval_rows"] == 6
    assert r["perplexity"] == pytest.approx(np.exp(5 / 4))


def test_a_trained_lora_exports_a_merged_causal_lm_and_an_adapter_that_generate_alike(tmp_path):
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM, GenerationConfig

    from domainft.core.causal_lm import build_causal_lm, export_causal_lm
    from domainft.core.peft import PeftSpec, apply_peft

    base = save_tiny_chat_lm(tmp_path / "base", "llama", "qwen")
    spec = PeftSpec(method="lora", r=4, dropout=0.0, causal=True)
    model = apply_peft(build_causal_lm(str(base)), spec)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)  # the LM head too
    torch.manual_seed(1)
    trained = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data.normal_(0, 0.2)
            trained[name] = p.detach().clone()
    out = export_causal_lm(trained, str(base), tmp_path / "best", chat_template="{{ 'x' }}", stop_ids=[5, 2],
                           peft_spec=spec, adapter_dir=tmp_path / "adapter", required=list(trained),
                           inference={"task": "sft", "max_length": 64})
    ids = torch.tensor([[3, 4, 5, 6, 7]])
    with torch.no_grad():
        want = model.eval()(input_ids=ids).logits
        merged = AutoModelForCausalLM.from_pretrained(out["best"]).eval()(input_ids=ids).logits
        adapter = AutoPeftModelForCausalLM.from_pretrained(out["adapter"]).eval()(input_ids=ids).logits
    torch.testing.assert_close(merged, want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(adapter, want, rtol=1e-4, atol=1e-5)
    assert GenerationConfig.from_pretrained(out["best"]).eos_token_id == [5, 2]
    assert json.loads((tmp_path / "best" / "config.json").read_text())["domainft"] == {"task": "sft", "max_length": 64}
    assert task_of_model_dir(out["best"]).name == "sft"


def test_each_task_refuses_the_others_keys(tmp_path):
    model = save_tiny_chat_lm(tmp_path / "lm", "llama", "qwen")
    (tmp_path / "c.csv").write_text("text,label\na,b\n")
    (tmp_path / "c.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    cfg = run_config(tmp_path / "o", tmp_path / "c.csv", model, "task=sft", "augment.enabled=true",
                     "train.metric_for_best=macro_f1", "train.class_weights=balanced")
    problems = get_task("sft").config_problems(cfg)
    assert any(p.startswith("data.format: task sft reads chat records from JSONL or Parquet") for p in problems)
    assert any(p.startswith("augment.enabled:") for p in problems)
    assert any(p.startswith("train.metric_for_best: macro_f1 is a classification metric") for p in problems)
    assert any(p.startswith("train.class_weights:") for p in problems)
    cfg = run_config(tmp_path / "o", tmp_path / "c.jsonl", model, "task=sft", "train.metric_for_best=rouge_l",
                     "eval.generate_samples=0")
    assert get_task("sft").config_problems(cfg) == [
        "train.metric_for_best: rouge_l scores generated samples; set eval.generate_samples > 0"]
    cfg = run_config(tmp_path / "o", tmp_path / "c.jsonl", model, "data.packing=true", "data.format=alpaca")
    assert get_task("classification").config_problems(cfg) == [
        "data.format: alpaca is a chat record format (task: sft); a classifier reads text and label columns",
        "data.packing: task sft only (this config's task is classification)"]


def test_sft_of_an_encoder_is_a_config_error(tmp_path):
    from tiny_models import save_tiny

    bert = save_tiny(tmp_path / "bert")
    (tmp_path / "c.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    cfg = run_config(tmp_path / "o", tmp_path / "c.jsonl", bert, "task=sft")
    assert any("task: sft fine-tunes a decoder LLM" in p and "'bert' encoder" in p
               for p in get_task("sft").config_problems(cfg))


@pytest.mark.parametrize("bits", [4, 8])
def test_a_quantized_causal_lm_base_trains_lora_with_gradient_checkpointing_and_keeps_its_lm_head(bits, tmp_path):
    """QLoRA / LLM.int8 for SFT: the base's linear layers quantized and frozen, the (tied) LM head kept in full
    precision, gradient checkpointing on, and the adapters of the bottom layer still get gradients after an eval
    forward (train / eval / train, as every epoch)."""
    from domainft.core.causal_lm import build_causal_lm
    from domainft.core.peft import PeftSpec, apply_peft

    base = save_tiny_chat_lm(tmp_path / "lm", "llama", "qwen", num_layers=2)
    model = build_causal_lm(str(base), **{f"load_in_{bits}bit": True})
    assert type(model.lm_head).__name__ == "Linear"  # the output layer is not quantized
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model = apply_peft(model, PeftSpec(method="lora", r=4, dropout=0.0, causal=True))
    quantized = [m for m in model.modules() if type(m).__name__ in ("Linear4bit", "Linear8bitLt")]
    assert quantized and all(not p.requires_grad for m in quantized for p in m.parameters(recurse=False))
    ids = torch.randint(3, model.config.vocab_size, (2, 9))
    labels = ids.clone()
    labels[:, :5] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    bottom = [p for n, p in model.named_parameters() if ".layers.0." in n and "lora_B" in n]
    for phase in ("train", "eval", "train"):
        model.train(phase == "train")
        model.zero_grad(set_to_none=True)
        if phase == "eval":
            with torch.no_grad():
                assert torch.isfinite(model(**batch).loss)
        else:
            model(**batch, use_cache=False).loss.backward()
            assert bottom and all(p.grad is not None and p.grad.abs().sum() > 0 for p in bottom), phase
