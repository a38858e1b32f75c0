"""Render kustomizations with the real `kubectl kustomize`, keeping the file each object came from.

kustomize's `buildMetadata: [originAnnotations]` stamps every object it emits with
`config.kubernetes.io/origin`: the manifest file it was read from, or, for a generated ConfigMap,
the kustomization that generated it. The user's kustomization is not edited: a throwaway
kustomization in a temp folder includes it and asks for the annotations, and they are removed
again from what is returned, so the checks see exactly what `kubectl apply -k` would submit.
"""
from __future__ import annotations

import functools
import os
import posixpath
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from domainft.errors import UserError

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
ORIGIN = "config.kubernetes.io/origin"
RENDER_TIMEOUT_S = 120
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: rendered trees are large
INSTALL_HINT = ("install kubectl 1.27 or later (it bundles kustomize v5; https://kubernetes.io/docs/tasks/tools/), "
                "or the standalone kustomize v5 (https://kubectl.docs.kubernetes.io/installation/kustomize/)")


class YamlFileError(ValueError):
    """A file that is not valid YAML; the message names line and column."""


def read_yaml_docs(path: Path) -> list[Any]:
    """All documents of a YAML file (empty documents dropped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise YamlFileError(f"not UTF-8 text: {e}") from None
    try:
        return [d for d in yaml.load_all(text, Loader=_LOADER) if d is not None]
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise YamlFileError(f"not valid YAML{where}: {getattr(e, 'problem', None) or e}") from None


def find_kustomization(folder: Path) -> Optional[Path]:
    return next((folder / n for n in KUSTOMIZATION_FILES if (folder / n).is_file()), None)


@functools.lru_cache(maxsize=1)
def kustomize_command() -> tuple[str, ...]:
    """`kubectl kustomize`, else a standalone `kustomize build`; a UserError if neither is installed."""
    kubectl = shutil.which("kubectl")
    if kubectl:
        return (kubectl, "kustomize")
    kustomize = shutil.which("kustomize")
    if kustomize:
        return (kustomize, "build")
    raise UserError(f"domainft k8s-validate renders kustomizations with `kubectl kustomize`, and neither kubectl "
                    f"nor kustomize is on PATH: {INSTALL_HINT}")


@dataclass
class Doc:
    """A rendered manifest and where it came from."""
    obj: Any
    file: Path                      # manifest file, or the kustomization.yaml of a generated ConfigMap
    index: Optional[int]            # document index in `file` (generator: index in configMapGenerator)
    generated: bool = False
    key_files: dict[str, Path] = field(default_factory=dict)  # generated ConfigMap: data key -> source file
    generated_name: Optional[str] = None  # generated ConfigMap: its name in the generator (no hash suffix)


@dataclass
class Rendered:
    docs: list[Doc]
    error: Optional[str] = None     # kustomize's own message when it could not render


def render(kustomization: Path) -> Rendered:
    """What `kubectl kustomize <folder>` emits, each object with the file it came from."""
    folder = kustomization.resolve().parent
    with tempfile.TemporaryDirectory(prefix="domainft-kustomize-") as tmp:
        tmp = os.path.realpath(tmp)
        # kustomize refuses absolute resource paths: include the folder by a path relative to tmp.
        rel = os.path.relpath(folder, tmp)
        wrapper = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                   "resources": [rel], "buildMetadata": ["originAnnotations"]}
        Path(tmp, "kustomization.yaml").write_text(yaml.safe_dump(wrapper), encoding="utf-8")
        proc = subprocess.run([*kustomize_command(), tmp], capture_output=True, text=True,
                              timeout=RENDER_TIMEOUT_S)
    if proc.returncode != 0:
        return Rendered([], _kustomize_error(proc.stderr, tmp, rel))
    docs = []
    for obj in yaml.load_all(proc.stdout, Loader=_LOADER):
        if obj is not None:
            docs.append(_located(obj, tmp))
    return Rendered(docs)


def _kustomize_error(stderr: str, tmp: str, rel: str) -> str:
    """kustomize's message, without klog's prefix and with our temp folder taken out of the paths."""
    text = stderr.strip()
    m = re.search(r'err="(.*)"\s*$', text, re.S)  # kubectl >= 1.30 logs `E... run.go] "command failed" err="..."`
    text = m.group(1).replace('\\"', '"') if m else text.removeprefix("Error: ").removeprefix("error: ")
    # kustomize explains each level it descended through (first as a file, then as a folder): keep the cause.
    text = re.sub(r"accumulating resources: accumulation err='accumulating resources from '[^']*': "
                  r"'[^']*' must resolve to a file': ", "", text)
    text = re.sub(r"(recursed accumulation of path|couldn't make target for path) '[^']*': ", "", text)
    for prefix in (rel + "/", tmp + "/"):
        text = text.replace(prefix, "")
    return f"kustomize cannot render this: {text}"


def _located(obj: Any, tmp: str) -> Doc:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    raw = annotations.pop(ORIGIN, None) if isinstance(annotations, dict) else None
    if isinstance(annotations, dict) and not annotations:
        del meta["annotations"]
    origin = yaml.safe_load(raw) if raw else {}
    if origin.get("repo"):      # a remote base: no local file to point at
        return Doc(obj, Path(f"{origin['repo']}/{origin.get('path', '')}"), None)
    if origin.get("configuredIn"):
        kfile = Path(posixpath.normpath(posixpath.join(tmp, origin["configuredIn"])))
        return _generated(obj, kfile)
    source = Path(posixpath.normpath(posixpath.join(tmp, origin.get("path", ""))))
    return Doc(obj, source, _doc_index(source, obj))


def _doc_index(source: Path, obj: Any) -> Optional[int]:
    """Index of `obj`'s document in its source file, matched by kind and name."""
    try:
        docs = _docs_of(source)
    except (OSError, YamlFileError):
        return None
    kind, name = _kind_name(obj)
    same_kind = [i for i, d in enumerate(docs) if _kind_name(d)[0] == kind]
    named = [i for i in same_kind if _kind_name(docs[i])[1] == name]
    if len(named) == 1:
        return named[0]
    return same_kind[0] if len(same_kind) == 1 else None  # renamed by a namePrefix, say


@functools.lru_cache(maxsize=256)
def _docs_of_cached(path: str, mtime: float) -> tuple:
    return tuple(read_yaml_docs(Path(path)))


def _docs_of(path: Path) -> tuple:
    return _docs_of_cached(str(path), path.stat().st_mtime)


def _kind_name(obj: Any) -> tuple[Optional[str], Optional[str]]:
    if not isinstance(obj, dict):
        return None, None
    meta = obj.get("metadata")
    return obj.get("kind"), meta.get("name") if isinstance(meta, dict) else None


def _generated(obj: Any, kfile: Path) -> Doc:
    """A generated ConfigMap: which configMapGenerator entry made it, and the file behind each key."""
    name = _kind_name(obj)[1] or ""
    try:
        k = _docs_of(kfile)[0]
    except (OSError, YamlFileError, IndexError):
        return Doc(obj, kfile, None, generated=True)
    gens = k.get("configMapGenerator") if isinstance(k, dict) else None
    entries = [(i, g) for i, g in enumerate(gens if isinstance(gens, list) else [])
               if isinstance(g, dict) and g.get("name") and str(g["name"]) in name]
    if not entries:
        return Doc(obj, kfile, None, generated=True)
    # The longest generator name inside the emitted one (which adds a hash suffix, maybe a prefix).
    i, gen = max(entries, key=lambda e: len(str(e[1]["name"])))
    key_files = {}
    for item in gen.get("files") or []:
        key, _, rel = str(item).rpartition("=")
        key_files[key or posixpath.basename(rel)] = (kfile.parent / rel).resolve()
    return Doc(obj, kfile, i, generated=True, key_files=key_files, generated_name=str(gen["name"]))


# Fields of a kustomization that name files it reads (besides `resources`, whose files carry origins).
_FILE_FIELDS = ("configurations", "crds", "patchesStrategicMerge", "transformers", "generators", "validators")


def files_read_by(kustomization: Path) -> set[Path]:
    """The files a kustomization reads besides its resources: patches, generator inputs, configurations.

    Only to tell a YAML file kustomize uses (a patch, a config in a ConfigMap) from a stray one;
    the rendering itself is kustomize's.
    """
    try:
        k = _docs_of(kustomization)[0]
    except (OSError, YamlFileError, IndexError):
        return set()
    if not isinstance(k, dict):
        return set()
    here, names = kustomization.parent, []
    for key in ("resources",) + _FILE_FIELDS:
        names += [v for v in k.get(key) or [] if isinstance(v, str)]
    for key in ("patches", "patchesJson6902", "replacements"):
        names += [p["path"] for p in k.get(key) or [] if isinstance(p, dict) and isinstance(p.get("path"), str)]
    for key in ("configMapGenerator", "secretGenerator"):
        for gen in k.get(key) or []:
            if isinstance(gen, dict):
                names += [str(f).rpartition("=")[2] for f in gen.get("files") or []]
                names += [str(e) for e in gen.get("envs") or []] + ([str(gen["env"])] if gen.get("env") else [])
    if isinstance(k.get("openapi"), dict) and isinstance(k["openapi"].get("path"), str):
        names.append(k["openapi"]["path"])
    return {(here / n).resolve() for n in names if "://" not in n}
