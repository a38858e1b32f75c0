"""`domainft serve` on a causal LM: the options and the folders checked before Ray starts (no weights read), each
mistake one UserError naming the option, folder or file."""
from __future__ import annotations

import json
import shutil

import pytest

from domainft.cli import _adapters
from domainft.config.load import ConfigError
from domainft.config.serve import ServeConfig, validate_serve
from domainft.errors import UserError
from domainft.serving.llm.model import check_serving, default_sampling
from domainft.tasks import task_of_model_dir


def cfg(base, **options) -> ServeConfig:
    return ServeConfig(model_dir=str(base), **options)


def test_a_causal_lm_folder_is_served_by_the_sft_task_with_its_model_ids(tiny_chat_lm):
    task = task_of_model_dir(tiny_chat_lm["base"])
    assert task.name == "sft" and task.serve_api == "openai"
    served = task.check_model_dir(cfg(tiny_chat_lm["base"], adapters={"legal": str(tiny_chat_lm["legal"])},
                                      served_model_name="tiny"))
    assert served == ["tiny", "legal"]
    assert task.check_model_dir(cfg(tiny_chat_lm["base"]))[0].endswith("/base")  # default: the folder's last parts


@pytest.mark.parametrize("options,words", [
    ({"backend": "onnx"}, "--backend onnx serves classifiers"),
    ({"backend": "vllm", "replica_gpus": 1}, "--backend vllm cannot run here: the vllm package is not installed"),
    ({"max_length": 64}, "--max-length truncates a classifier's texts"),
    ({"max_model_len": 100_000}, "exceeds the model's 512 positions"),
    ({"chat_template": "nope"}, "--chat-template"),
    ({"adapters": {"x": "/nonexistent"}}, "--adapter x=/nonexistent: no adapter_config.json"),
])
def test_bad_options_are_refused_naming_them(tiny_chat_lm, options, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(")):
        check_serving(cfg(tiny_chat_lm["base"], **options))


def test_bad_adapter_folders_are_refused_naming_them(tiny_chat_lm, tmp_path):
    legal = tiny_chat_lm["legal"]
    with pytest.raises(UserError, match="the base model is served under that name"):
        check_serving(cfg(tiny_chat_lm["base"], served_model_name="legal", adapters={"legal": str(legal)}))
    prefix = shutil.copytree(legal, tmp_path / "prefix")
    config = json.loads((prefix / "adapter_config.json").read_text())
    (prefix / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "PREFIX_TUNING"}))
    with pytest.raises(UserError, match="a PREFIX_TUNING adapter; only LoRA"):
        check_serving(cfg(tiny_chat_lm["base"], adapters={"p": str(prefix)}))
    pickled = shutil.copytree(legal, tmp_path / "pickled")
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    with pytest.raises(UserError, match="no adapter_model.safetensors"):
        check_serving(cfg(tiny_chat_lm["base"], adapters={"b": str(pickled)}))


def test_an_adapter_of_another_base_does_not_load(tiny_chat_lm, tmp_path):
    from tiny_models import save_tiny_chat_lm

    from domainft.serving.llm.model import ChatModel

    other = save_tiny_chat_lm(tmp_path / "other", family="qwen2", style="qwen", hidden_size=48)
    with pytest.raises(UserError, match=f"--adapter legal={tiny_chat_lm['legal']} does not fit"):
        ChatModel(str(other), {"legal": str(tiny_chat_lm["legal"])})


def test_adapter_flags_and_names():
    assert _adapters(["legal=runs/a", "med=runs/b"]) == {"legal": "runs/a", "med": "runs/b"}
    assert _adapters(None) is None
    for pairs, words in ((["legal"], "write NAME=DIR"), (["=x"], "write NAME=DIR"),
                         (["a=x", "a=y"], "--adapter a is given twice")):
        with pytest.raises(UserError, match=words):
            _adapters(pairs)
    with pytest.raises(ConfigError, match="adapter name"):
        validate_serve({"model_dir": "m", "adapters": {"bad name!": "x"}})
    with pytest.raises(ConfigError, match="backend vllm needs a GPU per replica"):
        validate_serve({"model_dir": "m", "backend": "vllm"})


def test_default_sampling_follows_generation_config(tmp_path):
    assert default_sampling(str(tmp_path)) == (1.0, 1.0)  # no file: OpenAI's defaults
    for gen, want in (({"do_sample": True, "temperature": 0.6, "top_p": 0.95}, (0.6, 0.95)),
                      ({"do_sample": False}, (0.0, 1.0)), ({"eos_token_id": 2}, (1.0, 1.0))):
        (tmp_path / "generation_config.json").write_text(json.dumps(gen))
        assert default_sampling(str(tmp_path)) == want


def test_the_server_prompts_and_stops_as_the_folder_recorded(tmp_path):
    """A task: sft best/ carries its chat template (with the tokenizer) and its stop ids (generation_config.json):
    the served prompt is that template's rendering, and answers stop at those ids, not at a guess."""
    from tiny_models import save_tiny_chat_lm
    from transformers import AutoTokenizer

    from domainft.serving.llm.model import ChatModel

    folder = save_tiny_chat_lm(tmp_path / "best", family="llama", style="deepseek")
    tok = AutoTokenizer.from_pretrained(folder)
    stops = [tok.convert_tokens_to_ids("<｜User｜>"), tok.eos_token_id]  # what an export writes: end of turn, EOS
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": stops}))
    lm = ChatModel(str(folder), threads=1)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert lm.settings.eos_ids == stops
    want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "<｜Assistant｜>" in want and lm.tokenizer.decode(lm.chat_prompt(messages)) == want
