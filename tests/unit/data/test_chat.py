"""Chat SFT data: record formats, templates, and the assistant-only loss mask found by prefix rendering."""
import subprocess
import sys
from pathlib import Path

import pytest
from chat_fixtures import (ALTERNATING_TEMPLATE, CHATML_GENERATION_TEMPLATE, NO_EOS_TEMPLATE, QWEN_TEMPLATE,
                           R1_LIKE_TEMPLATE, chat_tokenizer)

from domainft.data.chat import (FALLBACK_TEMPLATES, REASONS, ChatEncoder, RecordError, chat_encoder_from_spec,
                                detect_format, render, resolve_template, to_messages)
from domainft.errors import UserError

TINY_DSV3 = Path(__file__).resolve().parents[3] / "models" / "tiny-deepseek-v3"

Q1, A1, Q2, A2 = "What is the capital of France?", "Paris", "And of Italy?", "Rome"
SYSTEM = "You answer with one word."
TWO_TURNS = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": Q1},
             {"role": "assistant", "content": A1}, {"role": "user", "content": Q2},
             {"role": "assistant", "content": A2}]


def trained_runs(enc, tok) -> list[str]:
    """The text of each contiguous run of labelled tokens (labels equal to the ids where set)."""
    runs, cur = [], []
    for i, label in zip(enc.input_ids, enc.labels):
        if label == -100:
            if cur:
                runs.append(cur)
            cur = []
        else:
            assert label == i
            cur.append(i)
    return [tok.decode(r) for r in runs + ([cur] if cur else [])]


def encoder(style, template=None, **kw):
    tok = chat_tokenizer(style)
    return ChatEncoder(tok, template or tok.chat_template, **kw), tok


# ---- records -> messages --------------------------------------------------------------------------------

def test_openai_messages_multi_turn_with_parts_developer_and_extra_keys():
    rec = {"messages": [{"role": "developer", "content": "Be brief."},
                        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}],
                         "name": "bob"},
                        {"role": "assistant", "content": "  Hello!\n"}, {"role": "user", "content": "Bye"}],
           "id": 7}
    assert detect_format(rec) == "messages"
    assert to_messages(rec) == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"},
                                {"role": "assistant", "content": "  Hello!\n"}, {"role": "user", "content": "Bye"}]


def test_sharegpt_roles_and_system_field():
    rec = {"system": "Sys", "conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"},
                                              {"from": "user", "value": "c"}, {"from": "model", "value": "d"},
                                              {"from": "Human", "value": "e"}, {"from": "assistant", "value": "f"}]}
    assert detect_format(rec) == "sharegpt"
    assert [(m["role"], m["content"]) for m in to_messages(rec)] == [
        ("system", "Sys"), ("user", "a"), ("assistant", "b"), ("user", "c"), ("assistant", "d"), ("user", "e"),
        ("assistant", "f")]
    no_system = {"system": "", "conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "a"},
                                                 {"from": "gpt", "value": "b"}]}
    assert [m["role"] for m in to_messages(no_system)] == ["system", "user", "assistant"]


def test_alpaca_joins_input_after_a_blank_line():
    rec = {"instruction": "Translate.", "input": "bonjour", "output": "hello", "system": "S"}
    assert detect_format(rec) == "alpaca"
    assert to_messages(rec) == [{"role": "system", "content": "S"}, {"role": "user", "content": "Translate.\n\nbonjour"},
                                {"role": "assistant", "content": "hello"}]
    assert to_messages({"instruction": "Say hi.", "input": "", "output": "hi"})[0] == {"role": "user",
                                                                                      "content": "Say hi."}
    assert to_messages({"instruction": "", "input": "2+2", "output": "4"}, "alpaca")[0]["content"] == "2+2"


def test_prompt_completion_keeps_text_unchanged():
    rec = {"prompt": "Q: 2+2?\n", "completion": " 4\n\n"}
    assert detect_format(rec) == "prompt_completion"
    assert to_messages(rec, "prompt_completion") == [{"role": "user", "content": "Q: 2+2?\n"},
                                                     {"role": "assistant", "content": " 4\n\n"}]


BAD = [
    ({"text": "x", "label": 1}, "unknown_format", "the record has keys label, text; expected messages, conversations, "
                                                 "instruction and output, or prompt and completion"),
    (["not", "a", "dict"], "bad_type", "the record is a list, expected an object"),
    ({"messages": "hi"}, "bad_type", "messages is a string, expected a list"),
    ({"messages": [{"role": "user", "content": "q"}, "a"]}, "bad_type", "messages[1] is a string, expected an object"),
    ({"messages": [{"content": "q"}]}, "bad_type", "messages[0].role is missing, expected a string"),
    ({"messages": [{"role": "user", "content": 5}]}, "bad_type",
     "messages[0].content is a number, expected a string or a list of text parts"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "bad_type",
     "messages[0].content[0].type 'image_url' is not 'text' (only text parts are supported)"),
    ({"instruction": "i", "output": None}, "bad_type", "output is null, expected a string"),
    ({"conversations": [{"from": "human", "value": ["x"]}]}, "bad_type",
     "conversations[0].value is a list, expected a string"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "{}"}]}, "unknown_role",
     "messages[1].role 'tool' is not one of system, user, assistant"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "{}"}]}, "unknown_role",
     "conversations[1].from 'function_call' is not one of system, human, user, gpt, assistant, model"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "system", "content": "s"},
                   {"role": "assistant", "content": "a"}]}, "unknown_role",
     "messages[1].role: a system message is only allowed first"),
    ({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]}, "no_assistant_turn",
     "messages has no assistant message"),
    ({"messages": [{"role": "assistant", "content": "hi"}, {"role": "user", "content": "q"}]}, "no_assistant_turn",
     "messages has no assistant message after a prompt (the only one is the first message)"),
    ({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " \n"}]}, "empty_answer",
     "messages[1].content (an assistant answer) is empty"),
    ({"prompt": "q", "completion": ""}, "empty_answer", "completion (an assistant answer) is empty"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": " "}]},
                   {"role": "assistant", "content": "a"}]}, "empty_message", "messages[0].content (user) is empty"),
    ({"instruction": " ", "input": "", "output": "a"}, "empty_message", "instruction (user) is empty"),
]


@pytest.mark.parametrize("record,reason,detail", BAD, ids=[f"{r}-{i}" for i, (_, r, _) in enumerate(BAD)])
def test_bad_records_say_why_and_where(record, reason, detail):
    with pytest.raises(RecordError) as e:
        to_messages(record)
    assert (e.value.reason, e.value.detail) == (reason, detail)
    assert reason in REASONS


def test_every_record_reason_is_covered():
    assert {r for _, r, _ in BAD} == set(REASONS) - {"template_not_incremental", "template_error"}


def test_explicit_format_needs_its_keys():
    with pytest.raises(RecordError, match="prompt is missing"):
        to_messages({"messages": []}, "prompt_completion")
    with pytest.raises(ValueError, match="fmt must be"):
        to_messages({"messages": []}, "jsonl")


# ---- templates ------------------------------------------------------------------------------------------

def test_resolve_template():
    plain, qwen = chat_tokenizer("plain"), chat_tokenizer("qwen")
    assert resolve_template(qwen) == QWEN_TEMPLATE
    assert resolve_template(plain, "mistral") == FALLBACK_TEMPLATES["mistral"]
    with pytest.raises(UserError) as e:
        resolve_template(plain)
    assert str(e.value) == ("data.chat_template: the tokenizer of test-plain has no chat template; set "
                            "data.chat_template to one of chatml, llama3, deepseek, mistral, alpaca")
    with pytest.raises(UserError, match="'vicuna' is not auto or one of chatml, llama3, deepseek, mistral, alpaca"):
        resolve_template(qwen, "vicuna")

    class Named:
        chat_template = {"tool_use": "T", "default": "D"}
    assert resolve_template(Named()) == "D"


# (tokenizer, template name, end-of-turn token, what is trained for each answer after the answer text)
FALLBACKS = [("qwen", "chatml", "<|im_end|>", "<|im_end|>\n"), ("llama3", "llama3", "<|eot_id|>", "<|eot_id|>"),
             ("deepseek", "deepseek", "<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
             ("plain", "mistral", "</s>", "</s>"), ("plain", "alpaca", "</s>", "</s>")]


@pytest.mark.parametrize("style,name,eot,after", FALLBACKS, ids=[f[1] for f in FALLBACKS])
def test_fallback_templates_mask_answers_and_their_end(style, name, eot, after):
    tok = chat_tokenizer(style)
    enc = ChatEncoder(tok, FALLBACK_TEMPLATES[name])
    assert enc.end_of_turn() == (eot, False)
    out = enc.encode(TWO_TURNS)
    assert trained_runs(out, tok) == [A1 + after, A2 + after]
    text = render(tok, TWO_TURNS, FALLBACK_TEMPLATES[name])
    assert SYSTEM in text and Q2 in text and text.count(A1) == 1
    # the same ids as transformers' own tokenization of the rendering
    assert out.input_ids == tok.apply_chat_template(TWO_TURNS, chat_template=FALLBACK_TEMPLATES[name],
                                                    return_dict=False)


def test_generation_prompt_of_the_fallbacks():
    for style, name, _, _ in FALLBACKS:
        tok = chat_tokenizer(style)
        prompt = render(tok, TWO_TURNS[:2], FALLBACK_TEMPLATES[name], add_generation_prompt=True)
        assert render(tok, TWO_TURNS[:3], FALLBACK_TEMPLATES[name]).startswith(prompt), name
    assert render(chat_tokenizer("qwen"), TWO_TURNS[:2], FALLBACK_TEMPLATES["chatml"], True).endswith(
        "<|im_start|>assistant\n")


# ---- the mask -------------------------------------------------------------------------------------------

def test_qwen_mask_is_exactly_the_answers_and_their_end_of_turn():
    enc, tok = encoder("qwen")
    assert enc.end_of_turn() == ("<|im_end|>", False)
    out = enc.encode(TWO_TURNS)
    assert trained_runs(out, tok) == ["Paris<|im_end|>\n", "Rome<|im_end|>\n"]
    assert out.input_ids == tok.apply_chat_template(TWO_TURNS, return_dict=False)
    assert (out.reference, out.truncated, out.dropped, out.n_tokens) == ("Rome", False, None, len(out.input_ids))
    # the default system prompt the template adds is not trained either
    default = enc.encode(TWO_TURNS[1:])
    assert "You are a helpful assistant." in tok.decode(default.input_ids)
    assert trained_runs(default, tok) == ["Paris<|im_end|>\n", "Rome<|im_end|>\n"]


def test_last_turn_trains_only_the_last_answer():
    enc, tok = encoder("qwen", train_on="last_turn")
    out = enc.encode(TWO_TURNS)
    assert trained_runs(out, tok) == ["Rome<|im_end|>\n"]
    assert out.input_ids == encoder("qwen")[0].encode(TWO_TURNS).input_ids


def test_deepseek_and_llama3_masks():
    enc, tok = encoder("deepseek")
    out = enc.encode(TWO_TURNS)
    assert trained_runs(out, tok) == ["Paris<｜end▁of▁sentence｜>", "Rome<｜end▁of▁sentence｜>"]
    assert out.input_ids.count(tok.bos_token_id) == 1 and out.input_ids[0] == tok.bos_token_id
    enc, tok = encoder("llama3")
    spaced = [dict(m) for m in TWO_TURNS]
    spaced[2]["content"] = " Paris \n"  # Meta's template trims: what is trained is what the template wrote
    assert trained_runs(enc.encode(spaced), tok) == ["Paris<|eot_id|>", "Rome<|eot_id|>"]


def test_trailing_user_turn_and_leading_assistant_turn_are_not_trained():
    enc, tok = encoder("qwen")
    convo = [{"role": "assistant", "content": "Hello there"}] + TWO_TURNS[1:3] + [{"role": "user", "content": "Thanks"}]
    out = enc.encode(convo)
    assert trained_runs(out, tok) == ["Paris<|im_end|>\n"]
    assert out.reference == "Paris"
    assert tok.decode(out.prompt_ids).endswith(f"{Q1}<|im_end|>\n<|im_start|>assistant\n")


def test_template_with_generation_markers_gives_the_same_mask_as_transformers():
    enc, tok = encoder("generation")
    out = enc.encode(TWO_TURNS)
    assert trained_runs(out, tok) == ["Paris<|im_end|>\n", "Rome<|im_end|>\n"]
    hf = tok.apply_chat_template(TWO_TURNS, return_assistant_tokens_mask=True)
    assert hf["input_ids"] == out.input_ids
    assert hf["assistant_masks"] == [int(label != -100) for label in out.labels]
    # and the same as the marker-free ChatML template on the same tokenizer
    plain = ChatEncoder(tok, FALLBACK_TEMPLATES["chatml"]).encode(TWO_TURNS)
    assert (plain.input_ids, plain.labels) == (out.input_ids, out.labels)
    assert "{% generation %}" in CHATML_GENERATION_TEMPLATE


def test_tiny_deepseek_v3_model_folder_template():
    """The DeepSeek-like template `make setup` ships (with generation markers, ASCII bars) in its real tokenizer."""
    from domainft.data.tokenize import load_tokenizer

    tok = load_tokenizer(str(TINY_DSV3))
    template = resolve_template(tok)
    assert "{% generation %}" in template
    enc = ChatEncoder(tok, template)
    assert enc.end_of_turn() == ("<|end_of_sentence|>", False)
    out = enc.encode(TWO_TURNS)
    hf = tok.apply_chat_template(TWO_TURNS, return_assistant_tokens_mask=True)
    assert hf["input_ids"] == out.input_ids
    assert hf["assistant_masks"] == [int(label != -100) for label in out.labels]
    assert trained_runs(out, tok) == ["Paris<|end_of_sentence|>", "Rome<|end_of_sentence|>"]


def test_eos_appended_when_the_template_writes_no_end_of_turn():
    enc, tok = encoder("plain", NO_EOS_TEMPLATE)
    assert enc.end_of_turn() == (None, True)
    out = enc.encode(TWO_TURNS + [{"role": "user", "content": "Thanks"}])
    assert trained_runs(out, tok) == ["Paris\n</s>", "Rome\n</s>"]
    assert out.input_ids.count(tok.eos_token_id) == 2
    assert tok.decode(out.input_ids).endswith("Rome\n</s>User: Thanks\n")
    last = ChatEncoder(tok, NO_EOS_TEMPLATE, train_on="last_turn").encode(TWO_TURNS)
    assert trained_runs(last, tok) == ["Rome\n</s>"] and last.input_ids.count(tok.eos_token_id) == 1


def test_no_end_of_turn_and_no_eos_is_a_user_error():
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    bare = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(chat_tokenizer("plain").backend_tokenizer
                                                                       .to_str()))
    with pytest.raises(UserError, match="no EOS token to append"):
        ChatEncoder(bare, NO_EOS_TEMPLATE)


def test_non_incremental_template_needs_last_turn():
    tok = chat_tokenizer("deepseek")
    convo = [dict(m) for m in TWO_TURNS]
    convo[2]["content"] = "<think>France, so</think>Paris"
    convo[4]["content"] = "<think>Italy</think>Rome"
    with pytest.raises(RecordError) as e:
        ChatEncoder(tok, R1_LIKE_TEMPLATE).encode(convo)
    assert e.value.reason == "template_not_incremental" and "messages[2]" in e.value.detail
    assert "train_on: last_turn avoids this" in e.value.detail
    out = ChatEncoder(tok, R1_LIKE_TEMPLATE, train_on="last_turn").encode(convo)
    assert trained_runs(out, tok) == ["<think>Italy</think>Rome<｜end▁of▁sentence｜>"]
    assert "France, so" not in tok.decode(out.input_ids)


def test_template_errors_are_record_errors():
    enc, _ = encoder("plain", ALTERNATING_TEMPLATE)
    assert enc.end_of_turn() == ("</s>", False)
    with pytest.raises(RecordError) as e:
        enc.encode([{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
                    {"role": "assistant", "content": "c"}])
    assert e.value.reason == "template_error" and "roles must alternate" in e.value.detail


@pytest.mark.parametrize("style", ["qwen", "deepseek"])
def test_prompt_ids_are_the_tokens_before_the_last_answer(style):
    enc, tok = encoder(style)
    out = enc.encode(TWO_TURNS)
    start = max(i for i, label in enumerate(out.labels) if label == -100 and out.labels[i + 1] != -100) + 1
    assert out.prompt_ids == out.input_ids[:start]
    assert out.prompt_ids == tok(render(tok, TWO_TURNS[:4], tok.chat_template, True),
                                 add_special_tokens=False)["input_ids"]


# ---- truncation -----------------------------------------------------------------------------------------

def _answer_span(out):
    starts = [i for i, label in enumerate(out.labels) if label != -100 and (i == 0 or out.labels[i - 1] == -100)]
    return starts[-1], len(out.labels)


def test_truncate_prompt_keeps_the_last_answer_whole():
    full = encoder("qwen")[0].encode(TWO_TURNS)
    first, n = _answer_span(full)
    for room in (1, 5):  # prompt tokens kept before the last answer
        enc, tok = encoder("qwen", max_length=n - first + room)
        out = enc.encode(TWO_TURNS)
        assert (out.truncated, out.dropped, out.n_tokens) == (True, None, n)
        assert out.input_ids == full.input_ids[first - room:]
        assert out.labels == full.labels[first - room:]
        assert trained_runs(out, tok)[-1] == "Rome<|im_end|>\n"
        assert out.prompt_ids == full.prompt_ids[-enc.max_length:]
    too_short = encoder("qwen", max_length=n - first)[0].encode(TWO_TURNS)  # no prompt token would be left
    assert (too_short.dropped, too_short.input_ids, too_short.labels) == ("too_long", [], [])


def test_an_answer_longer_than_max_length_is_dropped_and_drop_drops_any_overlong():
    long = [{"role": "user", "content": "Why?"}, {"role": "assistant", "content": "because " * 40}]
    assert encoder("qwen", max_length=32)[0].encode(long).dropped == "too_long"
    n = encoder("qwen")[0].encode(TWO_TURNS).n_tokens
    out = encoder("qwen", max_length=n - 1, overlong="drop")[0].encode(TWO_TURNS)
    assert (out.dropped, out.n_tokens, out.input_ids) == ("too_long", n, [])
    fits = encoder("qwen", max_length=n, overlong="drop")[0].encode(TWO_TURNS)
    assert (fits.dropped, fits.truncated, len(fits.input_ids)) == (None, False, n)


def test_a_trailing_untrained_turn_is_cut_before_the_prompt():
    convo = TWO_TURNS + [{"role": "user", "content": "Thanks, that is all"}]
    full = encoder("qwen")[0].encode(convo)
    end = max(i for i, label in enumerate(full.labels) if label != -100) + 1
    out = encoder("qwen", max_length=end)[0].encode(convo)
    assert out.truncated and out.input_ids == full.input_ids[:end]


# ---- the worker side: spec, import hygiene --------------------------------------------------------------

def test_encoder_from_spec_with_the_resolved_template():
    spec = {"name_or_path": str(TINY_DSV3), "template": FALLBACK_TEMPLATES["deepseek"], "train_on": "last_turn",
            "overlong": "drop", "packing": True}
    enc = chat_encoder_from_spec(spec, 64)
    assert (enc.template, enc.train_on, enc.max_length, enc.overlong, enc.packing) == (
        spec["template"], "last_turn", 64, "drop", True)


def test_chat_module_imports_neither_ray_torch_nor_transformers():
    code = ("import sys, domainft.data.chat\n"
            "print(sorted(m for m in ('ray', 'torch', 'transformers', 'deepspeed') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
