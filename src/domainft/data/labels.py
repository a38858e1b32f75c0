"""Label maps: explicit (config order) or inferred (sorted; integer-like labels numerically). No Ray."""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional


def _sort_key_numeric(label: str) -> tuple:
    return (int(label),)


def infer_label_names(seen: Iterable[str]) -> list[str]:
    """Sorted distinct labels. When every label is an integer ("0", "1", "10") they sort as numbers,
    so that labels that already are ids keep their value as id."""
    names = set(seen)
    try:
        return sorted(names, key=_sort_key_numeric)
    except ValueError:
        return sorted(names)


def build_label_names(explicit: Optional[list[str]], seen: Iterable[str]) -> list[str]:
    """Label names, index = id: `data.labels` as given when set, else inferred from the data."""
    if explicit is not None:
        return [str(x).strip() for x in explicit]
    return infer_label_names(seen)


def label_map_dict(label_names: list[str]) -> dict:
    return {"label_names": list(label_names), "label2id": {name: i for i, name in enumerate(label_names)}}


def write_label_map(path: str, label_names: list[str]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(label_map_dict(label_names), f, ensure_ascii=False, indent=2)


def read_label_map(path: str) -> list[str]:
    """The label names (index = id) of a prepared data folder's label_map.json."""
    with open(path, encoding="utf-8") as f:
        return list(json.load(f)["label_names"])


# Key of a domainft classifier's config.json (core/export.py): {"label_names": [...]}, and since the training
# length is recorded also "max_length" (the run's data.max_length) and "truncation_side" (export/runtime.py reads them).
MODEL_MARKER = "domainft"


def model_label_names(name_or_path: str) -> Optional[list[str]]:
    """The label names (index = id) of a classifier domainft exported (a `best/` folder), read from
    its config.json; None for any other model (a hub name, a base model, a classifier from elsewhere).

    Raises:
        ValueError: the marker's labels disagree with the config's id2label (an edited config.json).
    """
    path = os.path.join(os.path.expanduser(name_or_path), "config.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    names = (config.get(MODEL_MARKER) or {}).get("label_names") if isinstance(config, dict) else None
    if not names:
        return None
    id2label = config.get("id2label") or {}
    if [id2label.get(str(i)) for i in range(len(names))] != list(names) or len(id2label) != len(names):
        raise ValueError(f"{path}: its {MODEL_MARKER}.label_names {names} disagree with its id2label {id2label}")
    return [str(n) for n in names]


def continual_label_names(previous: Optional[list[str]], explicit: Optional[list[str]],
                          seen: Iterable[str]) -> list[str]:
    """The label set when training continues from a classifier with labels `previous`: those first, in
    their order (old classes keep their ids, and a label absent from the new data stays), then the new
    data's other labels (explicit or inferred order). Without `previous`: `build_label_names`."""
    new = build_label_names(explicit, seen)
    if not previous:
        return new
    return list(previous) + [n for n in new if n not in previous]


def label_order_problem(previous: list[str], explicit: Optional[list[str]]) -> Optional[str]:
    """Why an explicit `data.labels` cannot continue a classifier with labels `previous` (None: it can):
    it must list them first, in their order, so that their ids stay."""
    if explicit is None:
        return None
    given = [str(x).strip() for x in explicit]
    if given[:len(previous)] != list(previous):
        return (f"data.labels {given} must start with the labels of the model it continues, in their order "
                f"({previous}), so that old classes keep their ids; append new labels after them, or remove "
                f"data.labels")
    return None
