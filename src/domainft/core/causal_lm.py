"""Hugging Face causal language models for generative SFT: build one over the pretrained weights (plain,
LLM.int8 or 4-bit NF4 base), and export trained weights as a plain causal-LM folder (tokenizer, chat
template, generation_config.json that stops at the end of a turn) or as a LoRA adapter."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping, Optional, Sequence, Union

import torch
from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedModel

from domainft.core.export import _overlay, _strip_prefix
from domainft.core.model import keep_4bit_training_layout, quantization_kwargs
from domainft.data.tokenize import load_tokenizer


def build_causal_lm(name_or_path: str, trust_remote_code: bool = False, revision: Optional[str] = None,
                    torch_dtype: Optional[torch.dtype] = torch.float32, load_in_8bit: bool = False,
                    load_in_4bit: bool = False, device: Optional[torch.device] = None,
                    meta: bool = False) -> PreTrainedModel:
    """The pretrained causal LM (fp32 by default, as core.model.build_model and for the same reason);
    meta: the architecture on the meta device from config.json alone (planning)."""
    if meta:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    kwargs = {"dtype": torch_dtype} if torch_dtype is not None else {}
    if load_in_8bit or load_in_4bit:
        shape = build_causal_lm(name_or_path, trust_remote_code, revision, meta=True)
        kwargs.update(quantization_kwargs(shape, load_in_8bit, load_in_4bit, torch_dtype, device))
    model = AutoModelForCausalLM.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision,
                                                 use_safetensors=True, **kwargs)  # never unpickle a .bin
    if load_in_4bit:
        keep_4bit_training_layout(model)
    return model


def export_causal_lm(trained: Mapping[str, torch.Tensor], name_or_path: str, out_dir: Union[str, Path], *,
                     chat_template: Optional[str], stop_ids: Sequence[int], peft_spec=None,
                     adapter_dir: Optional[Union[str, Path]] = None, trust_remote_code: bool = False,
                     revision: Optional[str] = None, required: Optional[Iterable[str]] = None,
                     inference: Optional[Mapping] = None) -> dict:
    """Write the trained model from its fp32 weights, on CPU: `out_dir` a plain causal-LM folder (LoRA merged),
    and for LoRA `adapter_dir` the adapter (PEFT's format, CAUSAL_LM: AutoPeftModelForCausalLM loads it).
    Both get the tokenizer with the run's chat template and a generation_config.json whose eos_token_id
    lists `stop_ids` (the end-of-turn token first), so that generation stops where the training taught
    it to; `inference` (max_length, template) goes to config.json's `domainft` entry."""
    model = build_causal_lm(name_or_path, trust_remote_code, revision)
    adapter = None
    if peft_spec is not None and peft_spec.method != "none":
        from domainft.core.peft import apply_peft

        model = apply_peft(model, peft_spec, modules_to_save=True)
    _overlay(model, _strip_prefix(trained), required, name_or_path)
    model.eval()
    tokenizer = load_tokenizer(name_or_path, revision=revision, trust_remote_code=trust_remote_code)
    if chat_template:
        tokenizer.chat_template = chat_template
    generation = _generation_config(model, stop_ids, tokenizer.pad_token_id)
    if adapter_dir is not None and hasattr(model, "merge_and_unload"):
        adapter = Path(adapter_dir)
        model.save_pretrained(adapter)  # safetensors
        tokenizer.save_pretrained(adapter)
        generation.save_pretrained(adapter)
        (adapter / "README.md").write_text(_ADAPTER_README.format(base=name_or_path), encoding="utf-8")
        model = model.merge_and_unload()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.generation_config = generation
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    generation.save_pretrained(out)
    if inference:
        path = out / "config.json"
        config = json.loads(path.read_text(encoding="utf-8"))
        config["domainft"] = dict(inference)
        path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return {"best": str(out), "adapter": str(adapter) if adapter else None, "merged": True}


def _generation_config(model: PreTrainedModel, stop_ids: Sequence[int], pad_id: Optional[int]) -> GenerationConfig:
    base = getattr(model, "generation_config", None)
    config = GenerationConfig.from_dict(base.to_dict()) if base is not None else GenerationConfig()
    stops = list(dict.fromkeys(int(i) for i in stop_ids if i is not None))
    if stops:
        config.eos_token_id = stops if len(stops) > 1 else stops[0]
    if pad_id is not None:
        config.pad_token_id = int(pad_id)
    return config


_ADAPTER_README = """# LoRA adapter trained by domainft (task sft)

Base model: `{base}`. The tokenizer here carries the chat template the run trained with, and
generation_config.json stops at its end-of-turn token.

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("<this folder>").eval()
tokenizer = AutoTokenizer.from_pretrained("<this folder>")
ids = tokenizer.apply_chat_template([{{"role": "user", "content": "..."}}], add_generation_prompt=True,
                                    return_tensors="pt", return_dict=True)
print(tokenizer.decode(model.generate(**ids, max_new_tokens=128)[0][ids["input_ids"].shape[1]:],
                       skip_special_tokens=True))
```
"""
