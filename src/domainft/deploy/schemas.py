"""Schema checks: KubeRay kinds against the vendored CRDs, core kinds with `kubernetes-validate`.

Core kinds (ConfigMap, PersistentVolumeClaim, Service, ...) use the OpenAPI schemas that
kubernetes-validate ships for each Kubernetes version (offline, strict: unknown fields are errors).
It reports the first problem of an object only.

KubeRay CRD schemas as the Kubernetes API server applies them, checked with `jsonschema`.

The vendored `crds/*.json` hold each CRD's `openAPIV3Schema` unchanged (see crds/NOTICE). Three
things the API server does that a plain Draft 7 validator does not are added here:

- unknown fields are errors (`kubectl apply` uses strict field validation since Kubernetes 1.27;
  a structural schema otherwise prunes them silently): objects with `properties` get
  `additionalProperties: false` unless they say otherwise;
- `nullable: true` admits null;
- `x-kubernetes-list-type: map|set` rejects duplicate entries (two containers with one name).

Not evaluated: CEL rules (`x-kubernetes-validations`) and `format` (int32/int64 ranges).
"""
from __future__ import annotations

import difflib
import functools
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import kubernetes_validate
from jsonschema import Draft7Validator, validators
from jsonschema.exceptions import ValidationError

CRD_DIR = Path(__file__).resolve().parent / "crds"
# The Kubernetes version core kinds are checked against (kubectl on our machines is 1.32).
K8S_VERSION = "1.32"
QUANTITY_PATTERN_START = "^(\\+|-)?(([0-9]+"


def _list_type(validator, list_type, instance, schema) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "array"):
        return
    if list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys", [])
        seen: dict[tuple, int] = {}
        for i, item in enumerate(instance):
            if not isinstance(item, dict):
                continue
            key = tuple(item.get(k) for k in keys)
            if key in seen:
                shown = ", ".join(f"{k}={v!r}" for k, v in zip(keys, key))
                yield ValidationError(f"duplicate entry ({shown}) also at [{seen[key]}]", path=[i])
            else:
                seen[key] = i
    elif list_type == "set":
        for i, item in enumerate(instance):
            if item in instance[:i]:
                yield ValidationError(f"duplicate value {item!r}", path=[i])


KubeValidator = validators.extend(Draft7Validator, {"x-kubernetes-list-type": _list_type})


def _structural(node: dict) -> dict:
    """Copy of an openAPIV3Schema with the API server's unknown-field and nullable semantics."""
    out = dict(node)
    if "properties" in node:
        out["properties"] = {name: _structural(s) for name, s in node["properties"].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            out[key] = _structural(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            out[key] = [_structural(s) for s in node[key]]
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@functools.lru_cache(maxsize=1)
def crd_schemas() -> dict[tuple[str, str], dict]:
    """(apiVersion, kind) -> structural schema, for every vendored CRD version."""
    out = {}
    for path in sorted(CRD_DIR.glob("*.json")):
        crd = json.loads(path.read_text(encoding="utf-8"))
        for version, schema in crd["versions"].items():
            out[(f"{crd['group']}/{version}", crd["kind"])] = _structural(schema)
    return out


@functools.lru_cache(maxsize=None)
def _validator(api_version: str, kind: str) -> KubeValidator:
    return KubeValidator(crd_schemas()[(api_version, kind)])


def known_crd_kinds() -> dict[str, list[str]]:
    """kind -> apiVersions with a vendored schema."""
    out: dict[str, list[str]] = {}
    for api_version, kind in crd_schemas():
        out.setdefault(kind, []).append(api_version)
    return out


def format_path(parts) -> str:
    """['spec', 'workerGroupSpecs', 0, 'resources', 'nvidia.com/gpu'] -> spec.workerGroupSpecs[0].resources["nvidia.com/gpu"]"""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        elif "." in p or "/" in p:
            out += f'["{p}"]'
        else:
            out += f".{p}" if out else p
    return out


_YAML_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "NoneType": "null",
               "dict": "mapping", "list": "list"}


def _describe(value: Any) -> str:
    name = _YAML_TYPES.get(type(value).__name__, type(value).__name__)
    return name if isinstance(value, (dict, list)) or value is None else f"{name} {value!r}"


def quantity_message(value: Any) -> str:
    return f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 8Gi)"


def _messages(err: ValidationError) -> list[tuple[list, str]]:
    """One jsonschema error -> [(path parts, message)], worded for someone editing YAML."""
    path = list(err.absolute_path)
    v, schema = err.validator, err.schema
    if v == "additionalProperties" and isinstance(err.instance, dict):
        allowed = sorted(schema.get("properties", {}))
        out = []
        for key in sorted(set(err.instance) - set(allowed)):
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (allowed here: {', '.join(allowed)})"
            out.append((path + [key], f"unknown field{hint}"))
        return out
    if v == "required":
        missing = err.message.split("'")[1] if "'" in err.message else str(err.validator_value)
        return [(path + [missing], "required field is missing")]
    if v == "type":
        want = err.validator_value if isinstance(err.validator_value, str) else " or ".join(err.validator_value)
        return [(path, f"expected {want}, got {_describe(err.instance)}")]
    if v == "anyOf" and schema.get("x-kubernetes-int-or-string"):
        return [(path, f"expected an integer or a string, got {_describe(err.instance)}")]
    if v == "pattern" and str(err.validator_value).startswith(QUANTITY_PATTERN_START):
        return [(path, quantity_message(err.instance))]
    if v == "enum":
        return [(path, f"{err.instance!r} is not one of {err.validator_value}")]
    return [(path, err.message)]


def schema_problems(doc: dict) -> list[tuple[str, str]]:
    """Validate one manifest against its CRD schema. Returns [(dotted path, message)].

    The caller makes sure (apiVersion, kind) has a schema (see `known_crd_kinds`).
    """
    validator = _validator(doc.get("apiVersion"), doc.get("kind"))
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: [str(p) for p in e.absolute_path]):
        for parts, message in _messages(err):
            out.append((format_path(parts), message))
    return out


def core_problems(doc: dict) -> Optional[list[tuple[str, str]]]:
    """Validate a core Kubernetes object (strict). None when kubernetes-validate has no schema for it."""
    problems = _core_problems(json.dumps(doc, sort_keys=True, default=str))
    return None if problems is None else list(problems)


@functools.lru_cache(maxsize=512)
def _core_problems(doc_json: str) -> Optional[tuple]:
    # Cached by content: a base's objects come back in every overlay, and each validate() call
    # re-reads kubernetes-validate's 1.3 MB definitions file.
    try:
        kubernetes_validate.validate(json.loads(doc_json), K8S_VERSION, strict=True)
    except kubernetes_validate.SchemaNotFoundError:
        return None
    except kubernetes_validate.ValidationError as err:
        return tuple((format_path(parts), message) for parts, message in _messages(err))
    return ()
