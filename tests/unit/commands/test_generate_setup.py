"""`domainft generate`'s setup, before Ray: the model folder must be a causal LM, the prompts file must exist and
every record parse (error mode names file:line), prompts and references are split out of every chat format,
and the stop tokens come from generation_config.json or the tokenizer and template. No Ray."""
import json

import pytest

from domainft.cli import main
from domainft.commands.generate import (check_model_dir, default_out, model_settings, read_records, side_file,
                                        to_prompt)
from domainft.errors import UserError

CAUSAL = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "max_position_embeddings": 64}


def _folder(tmp_path, config):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(config))
    return d


def _run(capsys, *argv):
    rc = main(["generate", *map(str, argv)])
    return rc, capsys.readouterr().err


def test_a_classifier_folder_is_not_a_causal_lm(tmp_path, capsys):
    from tiny_models import save_tiny_decoder

    model = save_tiny_decoder(tmp_path / "clf", "llama", num_layers=1)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    rc, err = _run(capsys, model, "--prompts", prompts)
    assert rc == 2
    assert "is not a causal language model" in err and "LlamaForSequenceClassification" in err
    assert "Traceback" not in err


def test_missing_model_folder_config_and_prompts_file(tmp_path, capsys):
    rc, err = _run(capsys, tmp_path / "nowhere", "--prompts", tmp_path / "p.jsonl")
    assert rc == 2 and "is not a folder" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no config.json"):
        check_model_dir(str(tmp_path / "empty"))
    model = _folder(tmp_path, CAUSAL)
    rc, err = _run(capsys, model, "--prompts", tmp_path / "missing.jsonl")
    assert rc == 2 and "missing.jsonl" in err and "no such file" in err


def test_a_bad_line_in_error_mode_names_file_and_line(tmp_path, capsys):
    model = _folder(tmp_path, CAUSAL)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a", "completion": "b"}\n\n{"prompt": 3, "completion": "b"}\n')
    rc, err = _run(capsys, model, "--prompts", prompts)
    assert rc == 2
    assert f"{prompts}:3: bad_type: prompt is a number" in err
    assert "--on-bad-record skip" in err and "p.answers.rejects.jsonl" in err
    prompts.write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(UserError, match=r"p\.jsonl:2: bad_json"):
        read_records(str(prompts))


def test_skip_mode_keeps_the_good_records_and_lists_the_bad_ones(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n{oops\n{"messages": [{"role": "assistant", "content": "x"}]}\n'
                       '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]}\n')
    got = read_records(str(prompts), "skip")
    assert [(p.line, p.reference) for p in got.prompts] == [(1, None), (4, "r")]
    assert [(r["line"], r["reason"]) for r in got.rejects] == [(2, "bad_json"), (3, "no_user_turn")]
    assert got.rejects[0]["record"] == "{oops"
    prompts.write_text("{oops\n")
    with pytest.raises(UserError, match="no usable record"):
        read_records(str(prompts), "skip")


@pytest.mark.parametrize("record, messages, reference", [
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"},
                   {"role": "assistant", "content": "a"}]},
     [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}], "a"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"},
                   {"role": "user", "content": "q2"}]},
     [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2"}], None),
    ({"messages": [{"role": "user", "content": "q"}]}, [{"role": "user", "content": "q"}], None),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
     [{"role": "user", "content": "q"}], "a"),
    ({"conversations": [{"from": "human", "value": "q"}]}, [{"role": "user", "content": "q"}], None),
    ({"instruction": "do", "input": "this", "output": "done"}, [{"role": "user", "content": "do\n\nthis"}], "done"),
    ({"instruction": "do", "input": ""}, [{"role": "user", "content": "do"}], None),
    ({"prompt": "p", "completion": "c", "system": "s"},
     [{"role": "system", "content": "s"}, {"role": "user", "content": "p"}], "c"),
    ({"prompt": "p"}, [{"role": "user", "content": "p"}], None),
])
def test_prompt_and_reference_of_every_format(record, messages, reference):
    p = to_prompt(record, 1)
    assert (p.messages, p.reference) == (messages, reference)


def test_a_prompt_must_end_with_a_user_turn():
    from domainft.data.chat import RecordError

    with pytest.raises(RecordError) as e:
        to_prompt({"messages": [{"role": "system", "content": "s"}]})
    assert e.value.reason == "no_user_turn"
    with pytest.raises(RecordError):
        to_prompt({"text": "no chat format"})


def test_output_files_beside_the_prompts():
    assert default_out("data/eval.jsonl") == "data/eval.answers.jsonl"
    assert default_out("data/eval.parquet") == "data/eval.answers.jsonl"
    assert side_file("data/eval.answers.jsonl", ".metrics.json") == "data/eval.answers.metrics.json"


def _tokenizer_folder(tmp_path, template, generation_eos=None):
    from tiny_models import decoder_tokenizer

    d = _folder(tmp_path, CAUSAL)
    tok = decoder_tokenizer()
    if template:
        tok.chat_template = template
    tok.save_pretrained(d)
    if generation_eos is not None:
        (d / "generation_config.json").write_text(json.dumps({"eos_token_id": generation_eos}))
    return d, tok


def test_stop_tokens_from_generation_config_else_tokenizer_and_template(tmp_path):
    from domainft.data.chat_templates import CHATML

    eot = "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}"
    d, tok = _tokenizer_folder(tmp_path, eot, generation_eos=[7, 2])
    settings, notes = model_settings(str(d), CAUSAL, "auto", 16, 4, 0.0, 1.0, None)
    assert settings["eos_ids"] == [7, 2] and notes == []
    assert settings["max_prompt_tokens"] == 64 - 16 and settings["template"] == eot
    assert settings["pad_id"] == 7  # no pad token: the first stop token pads (masked out anyway)
    (d / "generation_config.json").unlink()
    settings, notes = model_settings(str(d), CAUSAL, "auto", 16, 4, 0.0, 1.0, None)
    assert settings["eos_ids"] == [tok.eos_token_id] and "no generation_config.json" in notes[0]
    settings, _ = model_settings(str(d), CAUSAL, "chatml", 16, 4, 0.0, 1.0, None)
    assert settings["template"] == CHATML and settings["eos_ids"] == [tok.eos_token_id]
    with pytest.raises(UserError, match="--max-new-tokens 64 leaves no room"):
        model_settings(str(d), CAUSAL, "auto", 64, 4, 0.0, 1.0, None)


def test_a_tokenizer_without_a_template_names_the_option(tmp_path):
    d, _ = _tokenizer_folder(tmp_path, None)
    with pytest.raises(UserError, match="--chat-template") as e:
        model_settings(str(d), CAUSAL, "auto", 16, 4, 0.0, 1.0, None)
    assert "data.chat_template" not in str(e.value)


def test_parquet_records_are_rows_and_a_null_column_is_an_absent_key(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "eval.parquet"
    pq.write_table(pa.table({
        "messages": [[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}], None],
        "prompt": [None, "p"], "completion": [None, "c"]}), path)
    got = read_records(str(path))
    assert [(p.line, p.messages, p.reference) for p in got.prompts] == [
        (1, [{"role": "user", "content": "q"}], "a"), (2, [{"role": "user", "content": "p"}], "c")]
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="cannot read it as Parquet"):
        read_records(str(tmp_path / "bad.parquet"))


def test_long_prompts_keep_their_end_and_are_counted():
    from domainft.distributed.generate import encode_prompts
    from tiny_models import decoder_tokenizer

    tok = decoder_tokenizer()
    template = "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}{{ 'A:' }}"
    short, long = [{"role": "user", "content": "the bank"}], [{"role": "user", "content": "the court ruled " * 20}]
    full = tok([c[0]["content"] + "<eos>A:" for c in (short, long)], add_special_tokens=False)["input_ids"]
    ids, cut = encode_prompts(tok, [short, long], template, max_tokens=10)
    assert ids == [full[0], full[1][-10:]] and cut == [False, True]
    assert len(full[0]) < 10 < len(full[1])


def test_actor_pool_one_per_gpu_else_cpu_actors_sharing_the_cpus():
    from domainft.distributed import generate

    def plan_pool(*args):
        p = generate.plan_pool(*args)
        return p.actors, p.gpus, p.cpus

    assert plan_pool(None, 100, {"CPU": 16, "GPU": 4}) == (4, 1, 1)
    assert plan_pool(8, 100, {"CPU": 16, "GPU": 4}) == (4, 1, 1)  # at most the GPUs
    assert plan_pool(None, 2, {"CPU": 16, "GPU": 4}) == (2, 1, 1)  # at most the prompts
    assert plan_pool(None, 100, {"CPU": 16}) == (1, 0, 16)
    assert plan_pool(3, 100, {"CPU": 16}) == (3, 0, 5)
    assert plan_pool(64, 100, {"CPU": 4}) == (4, 0, 1)


def test_out_may_not_overwrite_the_prompts(tmp_path, capsys):
    model = _folder(tmp_path, CAUSAL)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "a"}\n')
    rc, err = _run(capsys, model, "--prompts", prompts, "--out", prompts)
    assert rc == 2 and "is the prompts file itself" in err
