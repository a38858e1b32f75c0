"""RFC 6902 JSON Patch operations (add, remove, replace, test, copy, move), as kustomize applies them."""
from __future__ import annotations

import copy
from typing import Any, Optional


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ValueError(f"JSON pointer {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(obj: Any, parts: list[str]) -> Any:
    for p in parts:
        obj = obj[_index(obj, p)] if isinstance(obj, list) else obj[p]
    return obj


def _index(seq: list, part: str, insert: bool = False) -> int:
    if part == "-" and insert:
        return len(seq)
    if not part.isdigit():
        raise ValueError(f"{part!r} is not a list index")
    if int(part) > len(seq) or (int(part) == len(seq) and not insert):
        raise IndexError(f"index {part} out of range")
    return int(part)


def _take(obj: Any, parts: list[str]) -> None:
    parent = _walk(obj, parts[:-1])
    del parent[_index(parent, parts[-1]) if isinstance(parent, list) else parts[-1]]


def _put(obj: Any, parts: list[str], value: Any, insert: bool) -> None:
    parent = _walk(obj, parts[:-1])
    if isinstance(parent, list):
        i = _index(parent, parts[-1], insert)
        if insert:
            parent.insert(i, value)
        else:
            parent[i] = value
    elif isinstance(parent, dict):
        if not insert and parts[-1] not in parent:
            raise KeyError(parts[-1])
        parent[parts[-1]] = value
    else:
        raise TypeError("parent is not a mapping or list")


def apply_json_patch_op(obj: dict, op: Any) -> Optional[str]:
    """Apply one RFC 6902 operation in place. Returns an error message, or None."""
    if not isinstance(op, dict) or op.get("op") not in ("add", "remove", "replace", "test", "copy", "move"):
        return f"not a JSON 6902 operation: {op!r}"
    kind, path = op["op"], str(op.get("path", ""))
    try:
        parts = _pointer(path)
        if not parts:
            return "patching the whole document is not supported"
        if kind == "test":
            return None if _walk(obj, parts) == op.get("value") else f"test failed at {path}"
        if kind in ("copy", "move"):
            source = _pointer(str(op["from"]))
            value = copy.deepcopy(_walk(obj, source))
            if kind == "move":
                _take(obj, source)
            _put(obj, parts, value, insert=True)
        elif kind == "remove":
            _take(obj, parts)
        else:
            _put(obj, parts, copy.deepcopy(op.get("value")), insert=kind == "add")
    except (KeyError, IndexError, ValueError, TypeError) as e:
        return f"{kind}: path {path!r} does not exist ({type(e).__name__}: {e})"
    return None
