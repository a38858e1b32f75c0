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
