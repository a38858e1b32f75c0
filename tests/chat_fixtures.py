"""Chat tokenizers and templates for tests (a plain module, importable from any test folder).

`chat_tokenizer(style)` -> a PreTrainedTokenizerFast (byte-level BPE trained here once, in well under a
second) with the special tokens of a model family and, for most styles, a chat template like that family's:

qwen        <|im_start|> / <|im_end|> ChatML, Qwen2.5-like template with a default system prompt, no
            {% generation %} markers; EOS <|im_end|>, pad <|endoftext|>, no BOS
deepseek    DeepSeek-V3: <｜begin▁of▁sentence｜>, <｜User｜>, <｜Assistant｜>, <｜end▁of▁sentence｜> (fullwidth bars)
llama3      <|begin_of_text|>, <|start_header_id|>, <|end_header_id|>, <|eot_id|>; content trimmed like Meta's
generation  the qwen tokenizer with a ChatML template that marks answers with {% generation %}
plain       <s> / </s> and no chat template (for the fallbacks)

The tokenizers are cached and shared: do not modify them in a test.
"""
from __future__ import annotations

from functools import lru_cache

# Qwen2.5-Instruct's shape without tools: a default system prompt when the first message is not one.
QWEN_TEMPLATE = (
    "{% if messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

CHATML_GENERATION_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\\n' }}"
    "{% generation %}{{ message['content'] + '<|im_end|>\\n' }}{% endgeneration %}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# DeepSeek-V3's structure: system messages gathered first (after BOS), then User / Assistant turns.
DEEPSEEK_V3_TEMPLATE = (
    "{% set ns = namespace(system_prompt='', is_first_sp=true) %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}"
    "{%- if ns.is_first_sp %}{% set ns.system_prompt = ns.system_prompt + message['content'] %}"
    "{% set ns.is_first_sp = false %}"
    "{%- else %}{% set ns.system_prompt = ns.system_prompt + '\\n\\n' + message['content'] %}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{{ bos_token }}{{ ns.system_prompt }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}{%- endif %}"
    "{%- if message['role'] == 'assistant' %}{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜>' }}{% endif %}")

# R1 / Qwen3 style: the reasoning of every assistant turn but the last is dropped, so rendering a prefix
# of the conversation is not a prefix of rendering all of it.
R1_LIKE_TEMPLATE = DEEPSEEK_V3_TEMPLATE.replace(
    "{{ '<｜Assistant｜>' + message['content'] + '<｜end▁of▁sentence｜>' }}",
    "{% set content = message['content'] %}"
    "{% if not loop.last and '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}")

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
    "'<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

# Writes nothing after an answer but a newline: the encoder must append EOS.
NO_EOS_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\\n' }}"
    "{% elif message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\\n' }}"
    "{% else %}{{ 'Assistant: ' + message['content'] + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}")

# Mistral v0.1's rule that roles alternate, enforced with raise_exception().
ALTERNATING_TEMPLATE = (
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}")

_STYLES = {
    "qwen": dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", extra=["<|im_start|>"], template=QWEN_TEMPLATE),
    "generation": dict(eos_token="<|im_end|>", pad_token="<|endoftext|>", extra=["<|im_start|>"],
                       template=CHATML_GENERATION_TEMPLATE),
    "deepseek": dict(bos_token="<｜begin▁of▁sentence｜>", eos_token="<｜end▁of▁sentence｜>",
                     extra=["<｜User｜>", "<｜Assistant｜>"], template=DEEPSEEK_V3_TEMPLATE),
    "llama3": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
                   extra=["<|start_header_id|>", "<|end_header_id|>", "<|end_of_text|>"], template=LLAMA3_TEMPLATE),
    "plain": dict(bos_token="<s>", eos_token="</s>", extra=[], template=None),
}
STYLES = tuple(_STYLES)

_WORDS = ("what is the capital of france paris and italy rome you are a helpful assistant answer question "
          "think about it the user asks for a city in europe tell me more please thanks hello world system "
          "instruction response input output ok yes no why because").split()


@lru_cache(maxsize=1)
def _bpe_json() -> str:
    """A small byte-level BPE, trained once per process on chat-like words (no special tokens)."""
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(0)
    texts = [" ".join(rng.choice(_WORDS) for _ in range(10)).capitalize() + rng.choice(".?!") for _ in range(300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok.to_str()


@lru_cache(maxsize=None)
def chat_tokenizer(style: str):
    """The cached tokenizer of `style` (one of STYLES); its special tokens are added after the BPE vocabulary."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = dict(_STYLES[style])
    template, extra = spec.pop("template"), spec.pop("extra")
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_bpe_json()), clean_up_tokenization_spaces=False,
                                  model_max_length=4096, **spec)
    tok.add_special_tokens({"additional_special_tokens": extra})
    tok.chat_template = template
    tok.name_or_path = f"test-{style}"
    return tok
