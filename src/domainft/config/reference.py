"""Markdown reference of every config key, generated from the schema (docs/config.md embeds it).

`python -m domainft.config.reference` prints the table; `--write [FILE]` regenerates the block between the
markers in FILE (default docs/config.md, relative to the current directory).
"""
from __future__ import annotations

import json
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from domainft.config.schema import Config

BEGIN, END = "<!-- config-reference:begin -->", "<!-- config-reference:end -->"
DOC = "docs/config.md"  # the page that embeds the reference, relative to the repository root


def _type_name(ann: Any) -> str:
    origin, args = get_origin(ann), get_args(ann)
    if origin is Literal:
        return " / ".join(str(a) for a in args)
    if origin in (Union, UnionType):
        inner = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(inner) + (" (optional)" if type(None) in args else "")
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in args)}]" if args else origin.__name__
    return getattr(ann, "__name__", str(ann))


def _default(field) -> str:
    if field.default is PydanticUndefined:
        return "required" if field.default_factory is None else "-"
    return "`" + json.dumps(field.default) + "`"


def rows(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    out = []
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.extend(rows(ann, f"{prefix}{field.alias or name}."))
            continue
        out.append((f"{prefix}{field.alias or name}", _type_name(ann), _default(field),
                    (field.description or "").replace("|", "or")))
    return out


def markdown() -> str:
    lines = [BEGIN, "| key | type | default | meaning |", "|---|---|---|---|"]
    lines += [f"| `{k}` | {t} | {d} | {m} |" for k, t, d, m in rows()]
    lines.append(END)
    return "\n".join(lines)


def embed(doc_text: str) -> str:
    """The page's text with its reference block (between BEGIN and END) regenerated."""
    head, rest = doc_text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + markdown() + tail


if __name__ == "__main__":
    import sys

    if len(sys.argv) in (2, 3) and sys.argv[1] == "--write":
        target = sys.argv[2] if len(sys.argv) == 3 else DOC
        with open(target, encoding="utf-8") as f:
            text = embed(f.read())
        with open(target, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        print(markdown())
