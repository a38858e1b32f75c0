"""task sft end to end on the session's Ray: chat records in every format (and bad ones) -> prepare (the
template, assistant-only labels, packing) -> 2 workers at ZeRO-3 -> best/ a causal-LM folder that scores and
generates as the run said; LoRA on DeepSeek-V3's architecture (MoE, multi-head latent attention, a template with
generation markers) -> best/ merged and best_adapter/ loading with peft."""
import json
import os

import numpy as np
import pyarrow.dataset as pads
import pytest
import torch

from corpora import chat_corpus
from run_configs import run_config
from tiny_models import save_tiny_chat_lm


def _eval_loss(model_dir, eval_dir, pad_id):
    """The token-weighted loss of a saved model over every eval row, computed here without domainft's loop."""
    from transformers import AutoModelForCausalLM

    from domainft.core.sft_batching import TokenLossEval, pad_sft_batch

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    table = pads.dataset(eval_dir, format="parquet").to_table(columns=["input_ids", "labels", "position_ids"])
    ev = TokenLossEval(torch.device("cpu"))
    rows = table.to_pydict()
    with torch.no_grad():
        for i in range(0, table.num_rows, 8):
            batch = pad_sft_batch({k: [np.asarray(x) for x in v[i:i + 8]] for k, v in rows.items()}, pad_id)
            ev.update(model(**batch), batch)
    return ev.result()["eval_loss"]


@pytest.mark.timeout(900)
def test_sft_zero3_packed_learns_the_answers_and_exports_a_model_that_scores_and_generates_as_the_run(
        ray_cluster, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from domainft.commands.train import run_train
    from domainft.core.generation import generate_ids

    base = save_tiny_chat_lm(tmp_path / "lm", "llama", "qwen", num_layers=2)
    corpus = chat_corpus(tmp_path / "chats.jsonl", 240, "mixed")
    with open(corpus, "a") as f:
        f.write('{"messages": [{"role": "tool", "content": "x"}, {"role": "assistant", "content": "y"}]}\nnot json\n')
    cfg = run_config(tmp_path / "out", corpus, base, "task=sft", "data.on_bad_record=skip", "data.max_length=200",
                     "data.packing=true", "optim.lr=1e-2", "deepspeed.zero_stage=3", "eval.generate_samples=3",
                     "eval.max_new_tokens=12", train_={"epochs": 2, "batch_size": 2})
    summary = run_train(cfg)

    report = json.loads((tmp_path / "out" / "data" / "data_report.json").read_text())
    assert report["rejected"] == {"malformed_json": 1, "unknown_role": 1}
    s = report["sft"]
    assert s["train"]["conversations"] + s["eval"]["conversations"] == 240 and s["stop_tokens"] == ["<|im_end|>"]
    assert s["train"]["rows"] < s["train"]["conversations"]  # packed
    history = summary["history"]
    base_loss = _eval_loss(base, report["eval_dir"], report["pad_token_id"])
    best = summary["best"]
    assert best["eval_loss"] < 0.7 * base_loss, (base_loss, history)  # it learnt the answers
    # best/ is the best epoch's model: it scores on the eval split exactly as the run reported
    assert _eval_loss(summary["best_model_dir"], report["eval_dir"], report["pad_token_id"]) == \
        pytest.approx(best["eval_loss"], rel=1e-3)
    tok = AutoTokenizer.from_pretrained(summary["best_model_dir"])
    assert GenerationConfig.from_pretrained(summary["best_model_dir"]).eos_token_id == \
        tok.convert_tokens_to_ids("<|im_end|>")
    assert tok.chat_template == AutoTokenizer.from_pretrained(base).chat_template
    # the samples the run generated (all ranks in step at ZeRO-3) are what the exported model generates
    samples = [json.loads(line) for line in
               open(tmp_path / "out" / f"eval_samples_epoch_{best['epoch']}.jsonl", encoding="utf-8")]
    assert len(samples) == 3 and all(s["reference"].startswith("the ") for s in samples)
    model = AutoModelForCausalLM.from_pretrained(summary["best_model_dir"]).eval()
    prompts = [tok.apply_chat_template(s["messages"], add_generation_prompt=True, tokenize=True, return_dict=False)
               for s in samples]
    new = generate_ids(model, prompts, tok.pad_token_id, [tok.convert_tokens_to_ids("<|im_end|>")], 12)
    assert [tok.decode(ids, skip_special_tokens=True) for ids in new] == [s["answer"] for s in samples]


@pytest.mark.timeout(900)
def test_sft_lora_on_deepseek_v3_last_turn_exports_merged_and_adapter(ray_cluster, tmp_path, repo_root):
    from peft import AutoPeftModelForCausalLM
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from domainft.commands.train import run_train

    base = repo_root / "models" / "tiny-deepseek-v3"
    corpus = chat_corpus(tmp_path / "chats.jsonl", 64, "messages", system="answer briefly")
    cfg = run_config(tmp_path / "out", corpus, base, "task=sft", "data.train_on=last_turn", "peft.method=lora",
                     "peft.dropout=0", "optim.lr=1e-2", "eval.generate_samples=2", "eval.max_new_tokens=8",
                     scaling={"num_workers": 1, "cpus_per_worker": 1}, train_={"epochs": 1, "batch_size": 8})
    summary = run_train(cfg)
    assert summary["adapter_dir"] and summary["trainable_params"] < summary["total_params"] / 5
    before, after = load_file(os.path.join(base, "model.safetensors")), \
        load_file(os.path.join(summary["best_model_dir"], "model.safetensors"))
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # frozen under LoRA
    assert not torch.equal(after["model.layers.3.self_attn.q_b_proj.weight"],
                           before["model.layers.3.self_attn.q_b_proj.weight"])  # merged adapter
    ids = torch.tensor([[0, 5, 6, 7, 8, 9]])
    with torch.no_grad():
        merged = AutoModelForCausalLM.from_pretrained(summary["best_model_dir"]).eval()(input_ids=ids).logits
        adapter = AutoPeftModelForCausalLM.from_pretrained(summary["adapter_dir"]).eval()(input_ids=ids).logits
    torch.testing.assert_close(adapter, merged, rtol=1e-4, atol=1e-4)
