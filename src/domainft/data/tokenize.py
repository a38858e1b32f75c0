"""Tokenization with the model's fast tokenizer: truncation only (batches are padded later). No Ray.

The driver loads the tokenizer once with transformers (hub access, checks) and ships a fast
tokenizer's serialized form to the workers, which rebuild it with `tokenizers` alone: the same ids
as `tokenizer(texts, truncation=True, max_length=L)`, without importing transformers per worker.
"""
from __future__ import annotations

import os
from typing import Callable, Optional

import numpy as np
import pyarrow as pa

from domainft.errors import UserError

Encoder = Callable[[list[str]], list[list[int]]]


def load_tokenizer(name_or_path: str, revision: Optional[str] = None, trust_remote_code: bool = False,
                   notes: Optional[list[str]] = None):
    """The model's tokenizer (fast when the model has one), with a pad token (`ensure_pad_token`; the line
    saying so appended to `notes`). Raises UserError when it cannot be loaded."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=trust_remote_code,
                                                  use_fast=True)
    except (OSError, ValueError) as e:
        from domainft.config.paths import looks_local
        from domainft.families import hub_hint

        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "" if looks_local(name_or_path) else f"; {hub_hint()}"
        raise UserError(f"model.name_or_path: cannot load a tokenizer from {name_or_path!r}: {first}{hint}") from None
    note = ensure_pad_token(tokenizer, name_or_path)
    if note and notes is not None:
        notes.append(note)
    return tokenizer


def ensure_pad_token(tokenizer, name_or_path: str) -> Optional[str]:
    """Give a tokenizer without a pad token (most decoder LLMs: Llama, DeepSeek) its EOS token as pad, the
    usual choice (padding is masked out, and the classifier pools the last real token). Returns a line
    saying so, or None when the tokenizer has its own pad token. Raises UserError when it has neither."""
    if tokenizer.pad_token_id is not None:
        return None
    if tokenizer.eos_token is None:
        raise UserError(f"model.name_or_path: the tokenizer of {name_or_path!r} has neither a pad token nor an EOS "
                        f"token to pad with; add a pad token to its tokenizer_config.json")
    tokenizer.pad_token = tokenizer.eos_token
    return (f"the tokenizer of {name_or_path} has no pad token: padding with its EOS token "
            f"{tokenizer.eos_token!r} (id {tokenizer.eos_token_id})")


_TOKENIZER_FILES = ("tokenizer", "vocab", "merges", "special_tokens_map", "added_tokens", "spiece", "sentencepiece",
                    "chat_template")


def tokenizer_signature(name_or_path: str) -> list:
    """(name, size, mtime) of the tokenizer files of a local model folder, [] for a hub name: a tokenizer
    changed in place changes the token ids, so prepared data that depends on it is stale."""
    if not os.path.isdir(name_or_path):
        return []
    out = []
    for name in sorted(os.listdir(name_or_path)):
        path = os.path.join(name_or_path, name)
        if name.startswith(_TOKENIZER_FILES) and os.path.isfile(path):
            st = os.stat(path)
            out.append([name, st.st_size, st.st_mtime_ns])
    return out


def encoder_spec(tokenizer, name_or_path: str, revision: Optional[str] = None,
                 trust_remote_code: bool = False) -> dict:
    """What a worker needs to rebuild the tokenizer: the fast tokenizer's JSON, else how to load it."""
    if getattr(tokenizer, "is_fast", False):
        return {"tokenizer_json": tokenizer.backend_tokenizer.to_str()}
    return {"name_or_path": name_or_path, "revision": revision, "trust_remote_code": trust_remote_code}


def build_encoder(spec: dict, max_length: int) -> Encoder:
    """texts -> input_ids (with the model's special tokens), truncated to max_length, unpadded."""
    if "tokenizer_json" in spec:
        from tokenizers import Tokenizer

        fast = Tokenizer.from_str(spec["tokenizer_json"])
        fast.enable_truncation(max_length)
        fast.no_padding()
        # encode_batch_fast (tokenizers >= 0.20) skips character offsets: same ids, ~1.6x faster.
        encode = getattr(fast, "encode_batch_fast", fast.encode_batch)
        return lambda texts: [e.ids for e in encode(texts)]
    slow = load_tokenizer(spec["name_or_path"], spec["revision"], spec["trust_remote_code"])
    return lambda texts: slow(texts, truncation=True, max_length=max_length, padding=False,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]


def pad_rows(rows, pad_id: int = 0, pad_to_multiple_of: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad token id rows (ragged arrays, lists, or a 2-D int array) to the longest (rounded up to
    a multiple): (input_ids, attention_mask), both int64 [rows, length]."""
    dense = isinstance(rows, np.ndarray) and rows.ndim == 2 and rows.dtype != object  # equal-length rows
    if not dense:
        rows = [np.asarray(r, dtype=np.int64) for r in rows]
    lengths = (np.full(len(rows), rows.shape[1], dtype=np.int64) if dense
               else np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows)))
    longest = int(lengths.max()) if len(lengths) else 1
    if pad_to_multiple_of > 1:
        longest = -(-longest // pad_to_multiple_of) * pad_to_multiple_of
    # Vectorised (one scatter, no Python loop over rows): in training this runs in Ray Data's collate
    # thread every step, holding the GIL that the training loop needs to launch its kernels.
    mask = np.arange(longest) < lengths[:, None]
    ids = np.full((len(lengths), longest), pad_id, dtype=np.int64)
    if dense:
        ids[:, : rows.shape[1]] = rows
    elif lengths.sum():
        ids[mask] = np.concatenate(rows)
    return ids, mask.astype(np.int64)


def ids_to_arrow(ids: list[list[int]]) -> pa.ListArray:
    """list of id lists -> list<int32> without a Python loop per element."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))


def tokenize_table(encode: Encoder, table: pa.Table) -> pa.Table:
    """The output columns in their final order: input_ids, label, text, source_id, aug_op, is_augmented."""
    texts = table.column("text").to_pylist()
    return pa.table({
        "input_ids": ids_to_arrow(encode(texts) if texts else []),
        "label": table.column("label").cast(pa.int64()),
        "text": table.column("text").cast(pa.string()),
        "source_id": table.column("source_id").cast(pa.string()),
        "aug_op": table.column("aug_op").cast(pa.string()),
        "is_augmented": table.column("is_augmented").cast(pa.bool_()),
    })
