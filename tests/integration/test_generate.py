"""`domainft generate` end to end on the session's Ray: a tiny random Llama causal LM with a chat template, a JSONL
mixing the chat formats with one bad line (--on-bad-record skip). The answers come back in input order and equal
offline greedy generation of the same prompts; the bad line is in the rejects; the scores are written."""
import json

import pytest

TEMPLATE = ("{{ bos_token }}{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token + '\\n' }}"
            "{% endfor %}{% if add_generation_prompt %}{{ 'assistant:' }}{% endif %}")

RECORDS = [
    {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "the patient was given"},
                  {"role": "assistant", "content": "a dose of the drug"}]},
    {"instruction": "the court ruled that", "input": "", "output": "the contract was void"},
    "{this is not json",
    {"conversations": [{"from": "human", "value": "the bank said its profit"}]},  # no reference
    {"prompt": "the team won the", "completion": "title in the final"},
    None,  # a blank line
    {"prompt": "markets fell after the match"},  # a prompt alone
]


def save_tiny_causal_lm(dest):
    """A 2-layer random Llama *ForCausalLM with the tests' byte-level BPE tokenizer and a chat template that ends
    each turn with EOS (generation_config.json: eos_token_id = that EOS)."""
    import torch
    import transformers as T

    from tiny_models import decoder_tokenizer, tiny_config

    tok = decoder_tokenizer()
    tok.chat_template = TEMPLATE
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(tiny_config(
        "llama", 2, vocab_size=len(tok), pad_token_id=None, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, max_position_embeddings=64))
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest


@pytest.mark.timeout(300)
def test_generate_answers_in_order_like_offline_greedy_skips_the_bad_line_and_scores(ray_cluster, tmp_path, capsys):
    import torch
    import transformers as T

    from domainft.cli import main
    from domainft.core.generation import generate_ids
    from domainft.data.chat import render

    model_dir = save_tiny_causal_lm(tmp_path / "model")
    prompts = tmp_path / "eval.jsonl"
    prompts.write_text("".join(("" if r is None else r if isinstance(r, str) else json.dumps(r)) + "\n"
                               for r in RECORDS))

    rc = main(["generate", str(model_dir), "--prompts", str(prompts), "--max-new-tokens", "6", "--batch-size", "2",
               "--on-bad-record", "skip"])
    printed = capsys.readouterr().out
    assert rc == 0, printed

    answers = [json.loads(x) for x in (tmp_path / "eval.answers.jsonl").read_text().splitlines()]
    assert [a["line"] for a in answers] == [1, 2, 4, 5, 7]
    assert [a["reference"] for a in answers] == ["a dose of the drug", "the contract was void", None,
                                                 "title in the final", None]
    assert answers[0]["messages"] == RECORDS[0]["messages"][:2]
    assert answers[1]["messages"] == [{"role": "user", "content": "the court ruled that"}]
    assert answers[4]["messages"] == [{"role": "user", "content": "markets fell after the match"}]

    # offline: the same prompts rendered and encoded as a user would, greedy generate_ids on the same weights
    tok = T.AutoTokenizer.from_pretrained(model_dir)
    model = T.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ids = tok([render(tok, a["messages"], TEMPLATE, add_generation_prompt=True) for a in answers],
              add_special_tokens=False)["input_ids"]
    new = generate_ids(model, ids, tok.eos_token_id, [tok.eos_token_id], max_new_tokens=6)
    expected = tok.batch_decode(new, skip_special_tokens=True)
    assert [a["answer"] for a in answers] == expected
    assert any(expected)  # not a vacuous comparison of empty answers

    rejects = [json.loads(x) for x in (tmp_path / "eval.answers.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"], r["record"]) for r in rejects] == [(3, "bad_json", "{this is not json")]
    assert "skipped 1 bad record(s)" in printed

    metrics = json.loads((tmp_path / "eval.answers.metrics.json").read_text())
    assert metrics["scored"] == 3 and metrics["records"] == 5 and metrics["skipped"] == 1
    assert set(metrics["scores"]) == {"exact_match", "token_f1", "rouge_l"}
    assert "exact match" in printed and "ROUGE-L" in printed
