"""A causal LM ready to answer: its folder checked, its tokenizer, chat template, stop tokens and context, and
(for serving) the model with its LoRA adapters. No Ray, no HTTP.

What inference must repeat from training comes from the folder a task: sft run exported (core/causal_lm.py):
the chat template the run rendered with (saved with the tokenizer), the stop tokens (generation_config.json
eos_token_id: the end-of-turn token first), and config.json's `domainft` entry. `domainft generate` and
`domainft serve` both read them here, so they answer as the training taught.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from domainft.errors import UserError

POSITION_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def read_causal_lm_config(model_dir: str, what: str = "MODEL_DIR") -> dict:
    """`model_dir`'s config.json when it is a causal LM; else a UserError saying what it is."""
    if not os.path.isdir(model_dir):
        raise UserError(f"{what} {model_dir!r} is not a folder (give a fine-tuned causal LM's folder, "
                        f"e.g. <output_dir>/best of a task: sft run)")
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{what} {model_dir!r} has no config.json: not a Hugging Face model folder") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read it: {e}") from None
    archs = config.get("architectures") or []
    if not any(str(a).endswith("ForCausalLM") for a in archs):
        shown = ", ".join(map(str, archs)) or "no architectures"
        raise UserError(f"{model_dir} is not a causal language model (config.json: {shown}); it needs a "
                        f"*ForCausalLM model such as task: sft's best/")
    return config


def positions(config: Mapping) -> Optional[int]:
    """The model's position table (its context), when config.json says."""
    return next((int(config[k]) for k in POSITION_KEYS if isinstance(config.get(k), int)), None)


def load_lm_tokenizer(model_dir: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_dir, use_fast=True)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{model_dir}: cannot load its tokenizer: {first}") from None


def generation_eos(model_dir: str) -> Optional[list[int]]:
    """generation_config.json's eos_token_id (an int or a list), if it has one."""
    path = os.path.join(model_dir, "generation_config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            eos = json.load(f).get("eos_token_id")
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read it: {e}") from None
    if eos is None:
        return None
    return [eos] if isinstance(eos, int) else list(eos)


def token_names(tokenizer: Any, ids: Sequence) -> str:
    return ", ".join(f"{tokenizer.convert_ids_to_tokens(i)!r} ({i})" for i in ids if i is not None)


@dataclass
class LMSettings:
    """How to prompt and stop one causal LM."""

    template: str                       # the chat template's text
    eos_ids: list[int]                  # generation stops at any of these
    pad_id: int
    positions: Optional[int]            # the model's context, when known
    notes: list[str] = field(default_factory=list)  # lines for the console


def lm_settings(model_dir: str, config: Mapping, tokenizer: Any, chat_template: str = "auto",
                option: str = "--chat-template") -> LMSettings:
    """The template (`chat_template`: auto = the tokenizer's own, or a fallback by name), the stop ids
    (generation_config.json, else the tokenizer's EOS and the template's end of turn) and the pad id.

    Raises:
        UserError: no template, or no stop token at all (answers would never end).
    """
    from domainft.data.chat import ChatEncoder, resolve_template

    notes = []
    try:
        template = resolve_template(tokenizer, chat_template)
        eos_ids = generation_eos(model_dir)
        if eos_ids is None:
            end, _ = ChatEncoder(tokenizer, template).end_of_turn()
            eos_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
            if end is not None:
                eos_ids.append(tokenizer.convert_tokens_to_ids(end))
            notes.append(f"stopping at {token_names(tokenizer, eos_ids)} (the tokenizer's EOS and the template's "
                         f"end of turn: {model_dir} has no generation_config.json eos_token_id)")
    except UserError as e:  # chat.py names the config key; here it is the option
        raise UserError(str(e).replace("data.chat_template", option)) from None
    eos_ids = list(dict.fromkeys(int(i) for i in eos_ids if i is not None))
    if not eos_ids:
        raise UserError(f"{model_dir}: no stop token (no generation_config.json eos_token_id, no EOS token in the "
                        f"tokenizer, no end-of-turn token in the chat template): answers would never end")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    return LMSettings(template, eos_ids, int(pad), positions(config), notes)


def default_sampling(model_dir: str) -> tuple[float, float]:
    """(temperature, top_p) of a request that sets neither: generation_config.json's when it samples, greedy
    when it says do_sample false, else OpenAI's defaults (1, 1). vLLM reads the same file the same way."""
    path = os.path.join(model_dir, "generation_config.json")
    try:
        with open(path, encoding="utf-8") as f:
            gen = json.load(f)
    except (OSError, ValueError):
        return 1.0, 1.0
    if gen.get("do_sample") is False:
        return 0.0, 1.0
    if gen.get("do_sample"):
        return float(gen.get("temperature") or 1.0), float(gen.get("top_p") or 1.0)
    return 1.0, 1.0


def check_adapter(name: str, folder: str) -> dict:
    """A LoRA adapter folder for a causal LM (adapter_config.json, safetensors weights). Returns its config."""
    path = os.path.join(folder, "adapter_config.json")
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise UserError(f"--adapter {name}={folder}: no adapter_config.json there (give a PEFT LoRA adapter folder, "
                        f"e.g. a task: sft run's best_adapter/)") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot read it: {e}") from None
    if config.get("peft_type") != "LORA":
        raise UserError(f"--adapter {name}={folder}: a {config.get('peft_type')} adapter; only LoRA adapters can "
                        f"share one base model")
    if config.get("task_type") not in (None, "CAUSAL_LM"):
        raise UserError(f"--adapter {name}={folder}: task_type {config.get('task_type')} (a classifier's adapter?); "
                        f"serving needs CAUSAL_LM adapters")
    if not os.path.isfile(os.path.join(folder, "adapter_model.safetensors")):
        raise UserError(f"--adapter {name}={folder}: no adapter_model.safetensors (pickled .bin weights are not "
                        f"loaded)")
    return config


class ServedLM:
    """What every backend shares: the tokenizer, template and stop ids, the context, the served model ids."""

    streams_itself = False  # True: the backend batches on its own (`stream`), not through BatchDecoder

    def __init__(self, model_dir: str, adapters: Optional[Mapping[str, str]] = None, chat_template: str = "auto",
                 name: Optional[str] = None, max_model_len: Optional[int] = None):
        """Args:
            model_dir: the causal LM (a task: sft best/, or the base of `adapters`).
            adapters: LoRA adapters by name (their folders), loaded once each on the same base.
            chat_template: auto (the tokenizer's own) or a fallback template's name.
            name: the base model's id (default: the folder's last two parts).
            max_model_len: longest prompt plus answer (default: the model's positions).
        """
        from domainft.serving.predictors import model_name

        config = read_causal_lm_config(model_dir, "model_dir")
        self.model_dir = model_dir
        self.tokenizer = load_lm_tokenizer(model_dir)
        self.settings = lm_settings(model_dir, config, self.tokenizer, chat_template)
        self.context = max_model_len or self.settings.positions or 4096
        if self.settings.positions and self.context > self.settings.positions:
            raise UserError(f"max_model_len {self.context} exceeds the model's {self.settings.positions} positions")
        self.adapter_dirs = dict(adapters or {})
        for adapter, folder in self.adapter_dirs.items():
            check_adapter(adapter, folder)
        self.name = name or model_name(model_dir)
        self.adapters = list(self.adapter_dirs)
        self.training = dict(config.get("domainft") or {})  # what the training recorded (task, max_length)
        self.default_temperature, self.default_top_p = default_sampling(model_dir)
        self.created = int(os.path.getmtime(os.path.join(model_dir, "config.json")))

    @property
    def model_ids(self) -> list[str]:
        """The `model` ids a request may name: the base, then each adapter."""
        return [self.name] + self.adapters

    def adapter_of(self, model_id: str) -> Optional[str]:
        """The adapter a model id selects (None: the base). KeyError for an unknown id."""
        if model_id == self.name:
            return None
        if model_id in self.adapters:
            return model_id
        raise KeyError(model_id)

    def chat_prompt(self, messages: Sequence[Mapping]) -> list[int]:
        """The conversation rendered with the generation prompt and tokenized as `domainft generate` does (the
        template writes BOS)."""
        from domainft.data.chat import render

        text = render(self.tokenizer, messages, self.settings.template, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_prompt(self, prompt: str) -> list[int]:
        """A raw prompt (/v1/completions), with the tokenizer's own special tokens (BOS), as vLLM does."""
        return self.tokenizer(prompt)["input_ids"]



class ChatModel(ServedLM):
    """The transformers backend: the model (with its LoRA adapters, as one peft model) on PyTorch, decoded in
    one continuous batch by serving.llm.decode.BatchDecoder (serving.llm.state schedules requests into it)."""

    def __init__(self, model_dir: str, adapters: Optional[Mapping[str, str]] = None, chat_template: str = "auto",
                 name: Optional[str] = None, max_model_len: Optional[int] = None, threads: Optional[int] = None,
                 trust_remote_code: bool = False):
        """Args: those of ServedLM, and
            threads: torch intra-op threads on CPU.
            trust_remote_code: allow model code shipped with the checkpoint.
        """
        import torch

        from domainft.core.causal_lm import build_causal_lm

        super().__init__(model_dir, adapters, chat_template, name, max_model_len)
        if torch.cuda.is_available():
            device, dtype = torch.device("cuda"), torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            if threads:
                torch.set_num_threads(threads)
            device, dtype = torch.device("cpu"), torch.float32  # as `domainft generate`: the same answers
        model = build_causal_lm(model_dir, trust_remote_code=trust_remote_code, torch_dtype=dtype).to(device)
        if self.adapter_dirs:
            from peft import PeftModel

            for k, (adapter, folder) in enumerate(self.adapter_dirs.items()):
                try:
                    if k == 0:
                        model = PeftModel.from_pretrained(model, folder, adapter_name=adapter)
                    else:
                        model.load_adapter(folder, adapter_name=adapter)
                except (RuntimeError, ValueError, KeyError) as e:  # shapes or modules of another base model
                    raise UserError(f"--adapter {adapter}={folder} does not fit {model_dir}: "
                                    f"{str(e).strip().splitlines()[0][:300]}") from None
        self.model = model.eval()

    def decoder(self):
        """An empty continuous batch over this model (serving.llm.decode.BatchDecoder)."""
        from domainft.serving.llm.decode import BatchDecoder

        return BatchDecoder(self.model, self.tokenizer, self.settings.eos_ids, self.settings.pad_id,
                            bool(self.adapters))


BACKENDS = ("transformers", "vllm")


def backends_available() -> dict[str, str]:
    """Which causal-LM backends this machine can build an app for: name -> "" (yes) or why not. vLLM needs its
    package here; its GPU is the replica's (replica_gpus), checked where the replica loads."""
    import importlib.util

    return {"transformers": "",
            "vllm": "" if importlib.util.find_spec("vllm") is not None else "the vllm package is not installed"}


def check_serving(cfg: Any) -> list[str]:
    """`domainft serve` on a causal LM: the folder, its tokenizer and template, the adapters and the options,
    checked before Ray starts (no weights read). Returns the model ids served (the base, then the adapters).

    Raises:
        UserError: naming the folder, file or option.
    """
    from domainft.serving.predictors import model_name

    backend = cfg.backend or "transformers"
    if backend not in BACKENDS:
        raise UserError(f"--backend {backend} serves classifiers; {cfg.model_dir} is a causal LM (backend "
                        f"transformers, the default, or vllm)")
    why_not = backends_available()[backend]
    if why_not:
        raise UserError(f"--backend {backend} cannot run here: {why_not} (backends: "
                        f"{backend_list()}); use --backend transformers")
    if cfg.max_length is not None:
        raise UserError("--max-length truncates a classifier's texts; a causal LM's limit is --max-model-len "
                        "(prompt plus answer)")
    config = read_causal_lm_config(cfg.model_dir, "model_dir")
    settings = lm_settings(cfg.model_dir, config, load_lm_tokenizer(cfg.model_dir), cfg.chat_template)
    if cfg.max_model_len and settings.positions and cfg.max_model_len > settings.positions:
        raise UserError(f"--max-model-len {cfg.max_model_len} exceeds the model's {settings.positions} positions "
                        f"({cfg.model_dir}/config.json)")
    name = cfg.served_model_name or model_name(cfg.model_dir)
    for adapter, folder in cfg.adapters.items():
        if adapter == name:
            raise UserError(f"--adapter {adapter}: the base model is served under that name; name it otherwise")
        check_adapter(adapter, folder)
    return [name] + list(cfg.adapters)


def backend_list() -> str:
    return ", ".join(f"{b} ({'yes' if not why else 'no: ' + why})" for b, why in backends_available().items())
