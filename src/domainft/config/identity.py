"""A run's identity: the config keys that change its trajectory or its checkpoint layout.

Stored in every checkpoint and compared on restore, and hashed into the default run name, so that
an identical resubmission resumes, a changed one starts afresh, and an explicit `run.name` whose
checkpoint was made by another config is an error that names each key that differs.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from domainft.config.schema import Config

# Keys that change neither the weights a run produces nor its checkpoints (a prefix covers its subtree).
COSMETIC = ("output_dir", "run.", "train.log_every_steps", "train.eval_batch_size", "train.early_stopping_patience",
            "augment.ab", "scaling.cpus_per_worker", "peft.export")
DATA_KEY = "data.prepared_fingerprint"
# Keys added to the schema after runs existed, with the value those runs had: left out of the identity at that
# value, so that a run started before the key existed still resumes (and keeps its default run name).
ADDED_KEYS = {"task": "classification"}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def run_identity(cfg: Config, data_fingerprint: Any) -> dict[str, Any]:
    """Dotted key -> value for every trajectory key, plus the prepared data's fingerprint."""
    flat = _flatten(cfg.model_dump(mode="json"))
    keep = {k: v for k, v in flat.items() if not any(k == c or (c.endswith(".") and k.startswith(c)) for c in COSMETIC)
            and not (k in ADDED_KEYS and ADDED_KEYS[k] == v)}
    keep[DATA_KEY] = data_fingerprint
    return keep


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:10]


def identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """One line per key whose value differs: `key: <saved> in the checkpoint, <current> now`."""
    lines = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if a != b:
            what = "the prepared data changed" if key == DATA_KEY else f"{a!r} in the checkpoint, {b!r} now"
            lines.append(f"{key}: {what}")
    return lines
