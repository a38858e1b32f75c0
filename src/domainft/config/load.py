"""Load YAML + dotted overrides and validate once, reporting every problem together."""
from __future__ import annotations

import copy
import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml
from pydantic import BaseModel, ValidationError

from domainft.config.checks import cross_field_problems, path_problems
from domainft.config.paths import is_uri, looks_local
from domainft.config.schema import Config


class ConfigError(ValueError):
    """All problems found in a configuration, one per line, each with its dotted key."""

    def __init__(self, problems: list[str] | str, source: str = "config"):
        # Ray rebuilds a remote error from its message alone: keep that a one-item list, not characters.
        if isinstance(problems, str):
            problems = [problems]
        self.problems = problems
        self.source = source
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


def parse_override(text: str) -> tuple[str, Any]:
    """`optim.lr=3e-5` -> ("optim.lr", 3e-5). Values are parsed as YAML scalars/lists."""
    if "=" not in text:
        raise ConfigError([f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=3e-5"], "overrides")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError([f"override {text!r}: empty key"], "overrides")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError([f"override {key}: value {raw!r} is not valid YAML ({e.problem})"], "overrides")
    # YAML 1.1 reads 3e-5 as a string; users mean a number.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else value
        except ValueError:
            pass
    return key, value


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """raw[a][b][c] = value for key "a.b.c", creating mappings on the way."""
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def apply_overrides(raw: dict, overrides: Iterable[str]) -> dict:
    out = copy.deepcopy(raw)
    for item in overrides:
        set_dotted(out, *parse_override(item))
    return out


def deep_merge(base: dict, extra: dict, atomic: Iterable[str] = ()) -> dict:
    """`extra` merged into a copy of `base`, mapping by mapping; keys in `atomic` are replaced whole."""
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in atomic:
            out[k] = deep_merge(out[k], v, atomic)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _known_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{field.alias or name}"
        keys.append(path)
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            keys.extend(_known_keys(ann, path + "."))
    return keys


def pydantic_problems(err: ValidationError, model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[str]:
    """One `dotted.key: message` line per error of `model.model_validate`; an unknown key gets the
    closest known key (of its section first, then anywhere in `model`), relative to `model`."""
    known = _known_keys(model)
    problems = []
    for e in err.errors():
        rel = [str(p) for p in e["loc"]]
        where = ".".join([*prefix, *rel])
        if e["type"] == "extra_forbidden":
            parent = ".".join(rel[:-1])
            siblings = [k.rsplit(".", 1)[-1] for k in known
                        if k.count(".") == len(rel) - 1 and (not parent or k.startswith(parent + "."))]
            close = [f"{parent}.{c}" if parent else c
                     for c in difflib.get_close_matches(rel[-1], siblings, n=1, cutoff=0.5)]
            close = close or difflib.get_close_matches(".".join(rel), known, n=1, cutoff=0.6)
            problems.append(f"{where}: unknown key" + (f" (did you mean {close[0]!r}?)" if close else ""))
        elif e["type"] == "missing":
            problems.append(f"{where}: required key is missing")
        else:
            given = e.get("input")
            shown = "" if isinstance(given, (dict, list)) else f" (got {given!r})"
            problems.append(f"{where}: {e['msg'].removeprefix('Value error, ')}{shown}")
    return problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                if key in first:
                    lines = f"lines {first[key]} and {line}" if first[key] != line else f"twice on line {line}"
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} ({lines}): keep one", key_node.start_mark)
                first[key] = line
            except TypeError:  # an unhashable key: construct_mapping says so
                break
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str, source: str) -> Any:
    """YAML text -> data; a syntax error or a duplicate key is a ConfigError naming the line and column."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"not valid YAML{where}: {getattr(e, 'problem', e)}"], source) from None


def read_yaml(path: str | os.PathLike, what: str = "file") -> Any:
    """A YAML file's data ({} when empty); every failure is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"{what} not found: {path}"], str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError([f"not UTF-8 text: {e}"], str(path)) from None
    return parse_yaml(text, str(path)) or {}


def _absolutize(cfg: Config) -> Config:
    """Local paths become absolute so that they mean the same on Ray workers (whose cwd may differ)."""

    def fix(p: Optional[str]) -> Optional[str]:
        if p is None or is_uri(p):
            return p
        q = Path(os.path.expanduser(p))
        return str(q if q.is_absolute() else (Path.cwd() / q))

    cfg.output_dir = fix(cfg.output_dir)
    cfg.data.train = fix(cfg.data.train)
    cfg.data.eval = fix(cfg.data.eval)
    if looks_local(cfg.model.name_or_path):
        cfg.model.name_or_path = fix(cfg.model.name_or_path)
    cfg.augment.protected_terms = fix(cfg.augment.protected_terms)
    cfg.data.label_fixes = fix(cfg.data.label_fixes)
    cfg.data.replay.from_ = fix(cfg.data.replay.from_)
    bt = cfg.augment.backtranslation
    for attr in ("forward", "backward"):
        value = getattr(bt, attr)
        if value is not None and looks_local(value):
            setattr(bt, attr, fix(value))
    cfg.run.storage_path = fix(cfg.run.storage_path)
    cfg.distill.teacher = fix(cfg.distill.teacher)
    if cfg.distill.student is not None and looks_local(cfg.distill.student):
        cfg.distill.student = fix(cfg.distill.student)
    return cfg


def validate_dict(raw: Any, source: str = "config", check_paths: bool = True) -> Config:
    """Validate a plain dict (from YAML, a Tune sample or the Ray boundary). Raises ConfigError."""
    if not isinstance(raw, dict):
        raise ConfigError([f"top level must be a mapping, got {type(raw).__name__}"], source)
    file_problems = path_problems(raw) if check_paths else []
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(pydantic_problems(e, Config) + file_problems, source) from None
    problems = cross_field_problems(cfg) + file_problems
    if problems:
        raise ConfigError(problems, source)
    return _absolutize(cfg) if check_paths else cfg


def load_config(path: str | os.PathLike, overrides: Iterable[str] = (), check_paths: bool = True) -> Config:
    """Read a YAML file, apply `key=value` overrides, validate. Raises ConfigError listing every problem."""
    raw = read_yaml(path, "config file")
    overrides = list(overrides)
    raw = apply_overrides(raw, overrides)
    try:
        return validate_dict(raw, source=str(path), check_paths=check_paths)
    except ConfigError as e:
        raise ConfigError([_blame_override(p, overrides) for p in e.problems], e.source) from None


def _blame_override(problem: str, overrides: list[str]) -> str:
    """A problem with a key the command line set names that override: the YAML file may not even have it."""
    key = problem.split(":", 1)[0]
    for item in reversed(overrides):  # the last one given wins, as in apply_overrides
        given = item.split("=", 1)[0].strip()
        if key == given or key.startswith(given + "."):
            return f"{problem} [from the command-line override {item!r}]"
    return problem


def to_dict(cfg: Config) -> dict:
    """Plain JSON-able dict: what crosses the Ray boundary and what `validate` prints."""
    return cfg.model_dump(mode="json")


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)
