"""Chat templates: `resolve_template` (the tokenizer's own, or a fallback by name) and `render`.

The fallbacks (Hugging Face `chat_template` Jinja) serve tokenizers that ship none, or override one. Written
for this project from the published formats, simplified: no tools, no reasoning handling. All are
incremental (rendering the first k messages gives a prefix of rendering them all), which the assistant-only
loss mask in `chat.py` relies on. Jinja sees the `'\\n'` escapes below as newlines; `bos_token` and
`eos_token` are the tokenizer's own (undefined renders as nothing, e.g. ChatML models without a BOS).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from domainft.errors import UserError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# Qwen / SmolLM style; no default system prompt (each model's own template adds its own).
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# Llama 3 Instruct; unlike Meta's template the content is not trimmed (whitespace in answers is data).
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")

# DeepSeek-V3: every system message joined first (right after BOS, no separator), then the turns; the role
# and end tokens are written literally (fullwidth bars, U+2581 spaces) as DeepSeek's own template does.
DEEPSEEK = (
    "{% set ns = namespace(system='', first=true) %}"
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{% if ns.first %}{% set ns.system = message['content'] %}{% set ns.first = false %}"
    "{% else %}{% set ns.system = ns.system + '\\n\\n' + message['content'] %}{% endif %}"
    "{% endif %}{% endfor %}"
    "{{ bos_token }}{{ ns.system }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '<\uff5cUser\uff5c>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '<\uff5cAssistant\uff5c>' + message['content'] + '<\uff5cend\u2581of\u2581sentence\uff5c>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<\uff5cAssistant\uff5c>' }}{% endif %}")

# Mistral Instruct (v0.1 style): the system prompt goes before the FIRST user message (v0.3 moves it to the
# last one, which would make the rendering non-incremental). The generation prompt is empty: [/INST] ends it.
MISTRAL = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set system = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% endif %}"
    "{% endfor %}")

# Stanford Alpaca's prompt, multi-turn: the system message (or Alpaca's preamble), then ### Instruction /
# ### Response blocks; EOS right after each answer, the blank line between turns comes after it.
ALPACA = (
    "{{ bos_token }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}"
    "{% else %}{{ 'Below is an instruction that describes a task. '"
    " + 'Write a response that appropriately completes the request.\\n\\n' }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token }}"
    "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}")

FALLBACK_TEMPLATES: dict[str, str] = {
    "chatml": CHATML, "llama3": LLAMA3, "deepseek": DEEPSEEK, "mistral": MISTRAL, "alpaca": ALPACA,
}


def resolve_template(tokenizer: PreTrainedTokenizerBase, name: str = "auto") -> str:
    """The chat template text: the tokenizer's own ("auto"; the "default" one of a dict of named templates)
    or a FALLBACK_TEMPLATES one by name. Raises UserError when there is none."""
    choices = ", ".join(FALLBACK_TEMPLATES)
    if name == "auto":
        own = getattr(tokenizer, "chat_template", None)
        if isinstance(own, dict):
            own = own.get("default")
        if not own:
            where = getattr(tokenizer, "name_or_path", "") or "the model"
            raise UserError(f"data.chat_template: the tokenizer of {where} has no chat template; set "
                            f"data.chat_template to one of {choices}")
        return own
    if name in FALLBACK_TEMPLATES:
        return FALLBACK_TEMPLATES[name]
    raise UserError(f"data.chat_template: {name!r} is not auto or one of {choices}")


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping], template: str,
           add_generation_prompt: bool = False) -> str:
    """The conversation as text (with the template's BOS and special tokens, untokenized)."""
    return tokenizer.apply_chat_template(list(messages), chat_template=template, tokenize=False,
                                         add_generation_prompt=add_generation_prompt)
