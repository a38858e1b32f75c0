"""Render a kustomization the way `kubectl kustomize` does, for the subset our manifests use.

So that an overlay is validated as what it submits, not only as the files it is made of:
`resources` (files and folders), `configMapGenerator` (files, literals, behavior, options),
`generatorOptions`, `patches` (JSON 6902 lists with a target), `images`, `namespace` and
`configurations` (nameReference, which is how a generated ConfigMap's hashed name reaches a
RayJob's volumes: kustomize does not know CRD fields by itself). Any other kustomize field is
reported as not rendered rather than silently ignored.

The hash suffix is not kustomize's exact value (only that a suffix exists matters here: a
reference kustomize would not rewrite then points at a ConfigMap that does not exist).
"""
from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from domainft.deploy.jsonpatch import apply_json_patch_op

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
SUPPORTED = {"apiVersion", "kind", "metadata", "resources", "configMapGenerator", "generatorOptions", "patches",
             "images", "namespace", "configurations"}
KNOWN_UNSUPPORTED = {"bases", "components", "secretGenerator", "patchesJson6902", "patchesStrategicMerge",
                     "replicas", "namePrefix", "nameSuffix", "commonLabels", "labels", "commonAnnotations", "crds",
                     "vars", "replacements", "openapi", "helmCharts", "helmGlobals", "transformers", "generators",
                     "validators", "sortOptions", "buildMetadata"}
# Where core workloads reference ConfigMaps (kustomize's built-in nameReference, the part that matters here).
_POD_PATHS = ["volumes/configMap/name", "volumes/projected/sources/configMap/name",
              "containers/envFrom/configMapRef/name", "containers/env/valueFrom/configMapKeyRef/name",
              "initContainers/envFrom/configMapRef/name", "initContainers/env/valueFrom/configMapKeyRef/name"]
BUILTIN_CONFIGMAP_REFS = [("Pod", f"spec/{p}") for p in _POD_PATHS] + [
    (kind, f"spec/template/spec/{p}") for kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job")
    for p in _POD_PATHS] + [("CronJob", f"spec/jobTemplate/spec/template/spec/{p}") for p in _POD_PATHS]


class YamlFileError(ValueError):
    """A file that is not valid YAML; the message names line and column."""


def read_yaml_docs(path: Path) -> list[Any]:
    """All documents of a YAML file (empty documents dropped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise YamlFileError(f"not UTF-8 text: {e}") from None
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlFileError(f"not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None


def _read_used(path: Path, out: "Rendered") -> Optional[list[Any]]:
    """The documents of a file the kustomization uses (marked used), or None with the problem recorded."""
    out.used_files.add(path)
    try:
        return read_yaml_docs(path)
    except YamlFileError as e:
        out.problems.append(Problem(path, "", str(e)))
        return None


def find_kustomization(folder: Path) -> Optional[Path]:
    for name in KUSTOMIZATION_FILES:
        if (folder / name).is_file():
            return folder / name
    return None


@dataclass
class Doc:
    """A rendered manifest and where it came from."""
    obj: dict
    file: Path                      # manifest file, or the kustomization.yaml of a generated ConfigMap
    index: int                      # document index in `file` (generator: index in configMapGenerator)
    generated: bool = False
    hashed: bool = False            # generated with a name suffix hash
    key_files: dict[str, Path] = field(default_factory=dict)  # generated ConfigMap: data key -> source file
    generated_name: Optional[str] = None  # generated ConfigMap: its name before the hash suffix


@dataclass
class Problem:
    file: Path
    path: str
    message: str


@dataclass
class Rendered:
    docs: list[Doc]
    problems: list[Problem]
    used_files: set[Path]           # every file the kustomization read (manifests, configs, patches)


def render(kustomization: Path) -> Rendered:
    """Render a kustomization file (and its bases). Problems are reported, never raised."""
    out = Rendered([], [], set())
    name_refs: list[tuple[str, str]] = list(BUILTIN_CONFIGMAP_REFS)
    out.docs = _render(kustomization.resolve(), out, name_refs, stack=())
    _suffix_and_rewrite(out.docs, name_refs)
    return out


def _render(kfile: Path, out: Rendered, name_refs: list, stack: tuple) -> list[Doc]:
    out.used_files.add(kfile)
    if kfile in stack:
        out.problems.append(Problem(kfile, "resources", "cycle: this kustomization includes itself"))
        return []
    try:
        docs = read_yaml_docs(kfile)
    except YamlFileError as e:
        out.problems.append(Problem(kfile, "", str(e)))
        return []
    k = docs[0] if len(docs) == 1 and isinstance(docs[0], dict) else None
    if k is None:
        out.problems.append(Problem(kfile, "", "a kustomization must be one YAML mapping"))
        return []
    here = kfile.parent
    problem = lambda path, msg: out.problems.append(Problem(kfile, path, msg))  # noqa: E731
    _check_fields(k, problem)

    result: list[Doc] = []
    for i, res in enumerate(_as_list(k.get("resources"), "resources", problem)):
        target = (here / str(res)).resolve()
        if "://" in str(res) or str(res).startswith(("github.com/", "git@")):
            problem(f"resources[{i}]", f"remote resource {res!r} is not rendered by the validator")
        elif target.is_dir():
            sub = find_kustomization(target)
            if sub is None:
                problem(f"resources[{i}]", f"folder {res!r} has no kustomization.yaml")
            else:
                result += _render(sub, out, name_refs, stack + (kfile,))
        elif target.is_file():
            manifests = _read_used(target, out)
            if manifests is None:
                continue
            result += [Doc(m, target, j) for j, m in enumerate(manifests)]
        else:
            problem(f"resources[{i}]", f"no such file or folder: {res}")

    for i, cfg in enumerate(_as_list(k.get("configurations"), "configurations", problem)):
        _read_configurations(here / str(cfg), f"configurations[{i}]", out, name_refs, problem)

    options = k.get("generatorOptions") or {}
    for i, gen in enumerate(_as_list(k.get("configMapGenerator"), "configMapGenerator", problem)):
        _generate(gen, i, kfile, options, result, out, problem)

    for i, patch in enumerate(_as_list(k.get("patches"), "patches", problem)):
        _apply_patch(patch, f"patches[{i}]", here, result, out, problem)

    for i, image in enumerate(_as_list(k.get("images"), "images", problem)):
        if not isinstance(image, dict) or "name" not in image:
            problem(f"images[{i}]", "needs at least `name`")
            continue
        for d in result:
            _set_images(d.obj, image)

    if k.get("namespace"):
        for d in result:
            d.obj.setdefault("metadata", {})["namespace"] = k["namespace"]
    return result


def _check_fields(k: dict, problem) -> None:
    if k.get("kind", "Kustomization") != "Kustomization":
        problem("kind", f"expected Kustomization, got {k.get('kind')!r}")
    if "apiVersion" in k and not str(k["apiVersion"]).startswith("kustomize.config.k8s.io/"):
        problem("apiVersion", f"expected kustomize.config.k8s.io/v1beta1, got {k['apiVersion']!r}")
    for key in k:
        if key in SUPPORTED:
            continue
        if key in KNOWN_UNSUPPORTED:
            problem(key, f"not rendered by domainft k8s-validate (supported: {', '.join(sorted(SUPPORTED))}), "
                         "so what it changes would go unchecked")
        else:
            close = difflib.get_close_matches(key, sorted(SUPPORTED | KNOWN_UNSUPPORTED), n=1)
            problem(key, "unknown kustomization field" + (f" (did you mean {close[0]!r}?)" if close else ""))


def _as_list(value, path: str, problem) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        problem(path, f"expected a list, got {type(value).__name__}")
        return []
    return value


def _read_configurations(path: Path, where: str, out: Rendered, name_refs: list, problem) -> None:
    if not path.is_file():
        problem(where, f"no such file: {path.name}")
        return
    out.used_files.add(path.resolve())
    try:
        docs = read_yaml_docs(path)
    except YamlFileError as e:
        out.problems.append(Problem(path, "", str(e)))
        return
    for doc in docs:
        for ref in (doc or {}).get("nameReference", []) if isinstance(doc, dict) else []:
            if ref.get("kind") != "ConfigMap":
                continue
            for spec in ref.get("fieldSpecs", []):
                if spec.get("kind") and spec.get("path"):
                    name_refs.append((spec["kind"], spec["path"]))


def _generate(gen: Any, i: int, kfile: Path, options: dict, result: list[Doc], out: Rendered, problem) -> None:
    where = f"configMapGenerator[{i}]"
    if not isinstance(gen, dict) or not gen.get("name"):
        problem(where, "needs a `name`")
        return
    data: dict[str, str] = {}
    key_files: dict[str, Path] = {}
    for j, item in enumerate(gen.get("files") or []):
        key, _, rel = str(item).rpartition("=") if "=" in str(item) else ("", "", str(item))
        src = (kfile.parent / rel).resolve()
        key = key or Path(rel).name
        if not src.is_file():
            problem(f"{where}.files[{j}]", f"no such file: {rel}")
            continue
        out.used_files.add(src)
        data[key] = src.read_text(encoding="utf-8")
        key_files[key] = src
    for j, item in enumerate(gen.get("literals") or []):
        if "=" not in str(item):
            problem(f"{where}.literals[{j}]", f"expected KEY=VALUE, got {item!r}")
            continue
        key, value = str(item).split("=", 1)
        data[key] = value
    opts = {**options, **(gen.get("options") or {})}
    behavior = gen.get("behavior", "create")
    existing = [d for d in result if d.obj.get("kind") == "ConfigMap" and d.obj["metadata"].get("name") == gen["name"]]
    if behavior in ("merge", "replace"):
        if not existing:
            problem(f"{where}.behavior", f"{behavior}: no ConfigMap {gen['name']!r} in the resources to {behavior}")
            return
        doc = existing[0]
        doc.obj["data"] = {**doc.obj.get("data", {}), **data} if behavior == "merge" else data
        doc.key_files = {**doc.key_files, **key_files} if behavior == "merge" else key_files
        doc.hashed = not opts.get("disableNameSuffixHash", False)
        return
    if behavior != "create":
        problem(f"{where}.behavior", f"expected create, merge or replace, got {behavior!r}")
        return
    if existing:
        problem(f"{where}.name", f"ConfigMap {gen['name']!r} already exists (use behavior: merge or replace)")
        return
    metadata = {"name": gen["name"]}
    for meta_key in ("labels", "annotations"):
        if opts.get(meta_key):
            metadata[meta_key] = dict(opts[meta_key])
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
    result.append(Doc(obj, kfile, i, generated=True, hashed=not opts.get("disableNameSuffixHash", False),
                      key_files=key_files))


def _apply_patch(patch: Any, where: str, here: Path, result: list[Doc], out: Rendered, problem) -> None:
    if not isinstance(patch, dict):
        problem(where, "expected a mapping with `path` or `patch` and a `target`")
        return
    if "path" in patch:
        src = (here / str(patch["path"])).resolve()
        if not src.is_file():
            problem(f"{where}.path", f"no such file: {patch['path']}")
            return
        docs = _read_used(src, out)
        if docs is None:
            return
        ops = docs[0] if len(docs) == 1 else docs
    else:
        try:
            ops = yaml.safe_load(str(patch.get("patch", "")))
        except yaml.YAMLError as e:
            problem(f"{where}.patch", f"not valid YAML: {e}")
            return
    if not isinstance(ops, list):
        problem(where, "only JSON 6902 patches (a list of ops) with a `target` are rendered by the validator")
        return
    target = patch.get("target") or {}
    if not target.get("kind"):
        problem(f"{where}.target", "a JSON 6902 patch needs target.kind (and usually target.name)")
        return
    matched = [d for d in result if _matches(d.obj, target)]
    if not matched:
        problem(f"{where}.target", f"matches no resource ({_show_target(target)})")
    for d in matched:
        for j, op in enumerate(ops):
            error = apply_json_patch_op(d.obj, op)
            if error:
                problem(f"{where} op {j}", f"{error} (on {d.obj.get('kind')}/{d.obj.get('metadata', {}).get('name')})")


def _show_target(target: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in target.items())


def _matches(obj: dict, target: dict) -> bool:
    group, _, version = str(obj.get("apiVersion", "")).rpartition("/")
    meta = obj.get("metadata", {})
    return all([target.get("kind") == obj.get("kind"),
                target.get("name") in (None, meta.get("name")),
                target.get("group") in (None, group),
                target.get("version") in (None, version),
                target.get("namespace") in (None, meta.get("namespace"))])


def _set_images(node: Any, image: dict) -> None:
    """kustomize's images transformer: every containers[]/initContainers[] image, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                for c in value:
                    if isinstance(c, dict) and isinstance(c.get("image"), str):
                        c["image"] = _retag(c["image"], image)
            _set_images(value, image)
    elif isinstance(node, list):
        for item in node:
            _set_images(item, image)


def split_image(ref: str) -> tuple[str, Optional[str], Optional[str]]:
    """'reg:5000/a/b:1.2@sha256:..' -> ('reg:5000/a/b', '1.2', 'sha256:..')."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest or None


def _retag(ref: str, image: dict) -> str:
    name, tag, digest = split_image(ref)
    if name != image["name"]:
        return ref
    name = image.get("newName", name)
    if image.get("digest"):
        return f"{name}@{image['digest']}"
    tag = image.get("newTag", tag)
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest and "newTag" not in image else "")


def _suffix_and_rewrite(docs: list[Doc], name_refs: list[tuple[str, str]]) -> None:
    """Hash-suffix generated ConfigMaps and rewrite the references kustomize knows about."""
    renamed: dict[tuple[Optional[str], str], str] = {}
    for d in docs:
        if d.generated and d.hashed:
            meta = d.obj["metadata"]
            digest = hashlib.sha256(json.dumps({"data": d.obj.get("data", {}), "kind": "ConfigMap",
                                                "name": meta["name"]}, sort_keys=True).encode()).hexdigest()
            new = f"{meta['name']}-{digest[:10].translate(str.maketrans('013ae', 'ghkmt'))}"
            renamed[(meta.get("namespace"), meta["name"])] = new
            d.generated_name, meta["name"] = meta["name"], new
    if not renamed:
        return
    for d in docs:
        for kind, path in name_refs:
            if d.obj.get("kind") == kind:
                _rewrite(d.obj, path.split("/"), d.obj.get("metadata", {}).get("namespace"), renamed)


def _rewrite(node: Any, parts: list[str], namespace, renamed: dict) -> None:
    if isinstance(node, list):
        for item in node:
            _rewrite(item, parts, namespace, renamed)
        return
    if not isinstance(node, dict) or not parts:
        return
    head, rest = parts[0], parts[1:]
    if head not in node:
        return
    if not rest:
        new = renamed.get((namespace, node[head]))
        if isinstance(node[head], str) and new:
            node[head] = new
        return
    _rewrite(node[head], rest, namespace, renamed)
