"""`domainft k8s-validate`: check a folder of Kubernetes manifests without a cluster.

What is checked, per YAML file under the folder:
- every kustomization is rendered by the real `kubectl kustomize` (render.py) and what it would
  submit is checked, each object reported on the file it came from (kustomize's origin
  annotations), so a patch in an overlay cannot break what the base got right;
- every manifest not part of a kustomization is checked on its own;
- KubeRay kinds against the vendored CRD schemas (unknown fields, types, quantities, duplicate
  list keys), plus the operator's own name rules; core kinds (ConfigMap, PersistentVolumeClaim,
  Service, ...) with kubernetes-validate;
- our rules (pods.py, rayjobs.py, auth.py): pinned images, non-root and hardened pods, requests
  equal to limits, a memory-backed /dev/shm that holds Ray's object store, no exposed dashboard,
  Ray token authentication with the token from a Secret and no literal credential anywhere,
  RayJobs that end and clean up, and each RayJob's domainft config found through its mounts and
  validated; a RayService's Serve config, with domainft's serving options validated (rayservices.py);
- YAML files that are neither manifests nor used by a kustomization are reported (stray).
"""
from __future__ import annotations

import argparse
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from domainft.deploy import auth, pods, rayjobs, rayservices
from domainft.deploy.render import (KUSTOMIZATION_FILES, Doc, YamlFileError, files_read_by, read_yaml_docs,
                                    render)
from domainft.deploy.schemas import (CRD_DIR, core_problems, crd_schemas, known_crd_kinds, quantity_message,
                                     schema_problems)

RAY_GROUP = "ray.io"
RAY_NAME_LIMITS = {"RayCluster": 53, "RayJob": 47, "RayService": 47}  # the operator's limits
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Finding:
    """One problem: where (file, document, object, field) and what."""
    file: str
    doc: Optional[int]          # index of the YAML document in `file`; None for the file as a whole
    kind: Optional[str]
    name: Optional[str]
    path: str                   # dotted field path inside the document ('' = the document or file)
    message: str
    via: Optional[str] = None   # the kustomization whose rendering showed it

    def key(self) -> tuple:
        return self.file, self.doc, self.kind, self.name, self.path, self.message


def _show(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive on Windows
        return str(path)


def _finding(doc: Doc, path: str, message: str, via: Optional[Path]) -> Finding:
    meta = doc.obj.get("metadata") if isinstance(doc.obj, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    if doc.generated:  # report the generator entry, by the name it was given
        where = f"configMapGenerator[{doc.index}]" if doc.index is not None else "configMapGenerator"
        return Finding(_show(doc.file), None, "ConfigMap", doc.generated_name or name, f"{where} {path}".strip(),
                       message, _show(via) if via else None)
    kind = doc.obj.get("kind") if isinstance(doc.obj, dict) else None
    return Finding(_show(doc.file), doc.index, kind, name, path, message, _show(via) if via else None)


def validate_tree(path: str | os.PathLike, parser: argparse.ArgumentParser) -> list[Finding]:
    """Validate every manifest and kustomization under `path` (a folder, or one file).

    `parser` is domainft's command-line parser (`domainft.cli.build_parser()`): RayJob
    entrypoints are read with it. Raises UserError when there are kustomizations and no kubectl.
    """
    root = Path(path)
    if not root.exists():
        return [Finding(str(path), None, None, None, "", "no such file or folder")]
    if not crd_schemas():
        return [Finding(str(CRD_DIR), None, None, None, "", "the vendored KubeRay CRD schemas are missing: domainft "
                        "was installed without its data files (package-data must include deploy/crds/*)")]
    files = [root] if root.is_file() else sorted(
        p for p in root.rglob("*") if p.is_file() and (p.suffix in (".yaml", ".yml") or p.name == "Kustomization"))
    findings, units, used = _kustomized([f.resolve() for f in files if f.name in KUSTOMIZATION_FILES])
    for f in files:
        f = f.resolve()
        if f in used or f.name in KUSTOMIZATION_FILES:
            continue
        try:
            docs = read_yaml_docs(f)
        except YamlFileError as e:
            findings.append(Finding(_show(f), None, None, None, "", str(e)))
            continue
        if not any(isinstance(d, dict) and "kind" in d for d in docs):
            findings.append(Finding(_show(f), None, None, None, "", "neither a Kubernetes manifest nor used by a "
                                    "kustomization.yaml (configMapGenerator, patches, configurations)"))
            continue
        units.append(([Doc(d, f, i) for i, d in enumerate(docs)], None))
    every_doc = [d for docs, _ in units for d in docs]
    for docs, via in units:
        findings += _check_unit(docs, via, docs if via else every_doc, parser)
    return _dedupe(findings)


def _kustomized(kustomizations: list[Path]) -> tuple[list[Finding], list[tuple[list[Doc], Optional[Path]]], set[Path]]:
    """Render each kustomization: (render failures, renderings, every file they read)."""
    with ThreadPoolExecutor(max_workers=4) as pool:  # each render is a kubectl process
        renderings = list(pool.map(render, kustomizations))
    findings, units, used = [], [], set()
    for kfile, rendered in zip(kustomizations, renderings):
        used |= files_read_by(kfile) | {d.file for d in rendered.docs}
        if rendered.error:
            findings.append(Finding(_show(kfile), None, "Kustomization", None, "", rendered.error))
        else:
            units.append((rendered.docs, kfile))
    return findings, units, used


def _dedupe(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per problem: a base's problem shows in every overlay too; keep the rendering of the
    kustomization next to the file (the base's own), else the first."""
    def own(f: Finding) -> bool:
        return bool(f.via) and f.file.startswith(os.path.dirname(f.via) + os.sep)
    best: dict[tuple, Finding] = {}
    for f in findings:
        if f.key() not in best or (own(f) and not own(best[f.key()])):
            best[f.key()] = f
    return list(best.values())


def _check_unit(docs: list[Doc], via: Optional[Path], lookup: list[Doc],
                parser: argparse.ArgumentParser) -> list[Finding]:
    """Every document of one rendering (or one loose file), with the ConfigMaps and PVCs it can see."""
    out: list[Finding] = []
    by_obj = {id(d.obj): d for d in lookup}
    configmaps = {d.obj["metadata"]["name"]: d.obj for d in lookup if _is(d.obj, "ConfigMap")}
    pvcs = {d.obj["metadata"]["name"]: d.obj for d in lookup if _is(d.obj, "PersistentVolumeClaim")}
    claim_users: dict[str, list] = {}
    config_users: dict[Finding, list[str]] = {}  # one finding per config problem, naming every RayJob
    for d in docs:
        add = lambda path, msg, d=d: out.append(_finding(d, path, msg, via))  # noqa: E731
        obj = d.obj
        if not isinstance(obj, dict):
            add("", f"a manifest must be a mapping, got {type(obj).__name__}")
            continue
        structural = _structure_problems(obj)
        for path, msg in structural:
            add(path, msg)
        if structural and not isinstance(obj.get("metadata"), dict):
            continue
        _, auth_options = auth.cluster_auth(obj)
        for template in pods.pod_templates(obj):
            for path, msg in (pods.pod_problems(template) + pods.volume_reference_problems(template)
                              + auth.env_problems(template, auth_options)
                              + _reference_problems(template, configmaps, pvcs)):
                add(path, msg)
            for claim in rayjobs.claims_used(template):
                claim_users.setdefault(claim, []).append((obj, template))
        for path, msg in (rayjobs.cluster_problems(obj) + rayjobs.service_problems(obj)
                          + rayjobs.rayjob_lifecycle_problems(obj) + auth.auth_problems(obj)
                          + auth.runtime_env_problems(obj) + rayservices.rayservice_problems(obj)):
            add(path, msg)
        for path, msg, src in rayjobs.rayjob_entrypoint_problems(obj, configmaps, parser):
            if src is None:
                add(path, msg)
            else:
                config_users.setdefault(_config_finding(src, path, msg, by_obj, via), []).append(
                    f"RayJob/{obj['metadata'].get('name')}")
    for f, jobs in config_users.items():
        out.append(Finding(f.file, f.doc, f.kind, f.name, f.path, f"{f.message} (config of {', '.join(jobs)})",
                           f.via))
    for pvc, path, msg in rayjobs.pvc_access_problems(claim_users, pvcs):
        if id(pvc) in by_obj:
            out.append(_finding(by_obj[id(pvc)], path, msg, via))
    return out


def _is(obj, kind: str) -> bool:
    return isinstance(obj, dict) and obj.get("kind") == kind and isinstance(obj.get("metadata"), dict) \
        and isinstance(obj["metadata"].get("name"), str)


def _config_finding(src: rayjobs.ConfigSource, path: str, msg: str, by_obj: dict, via: Optional[Path]) -> Finding:
    """A problem inside a domainft config: point at the config file itself when it is one."""
    cm_doc = by_obj.get(id(src.configmap))
    if cm_doc is not None and src.key in cm_doc.key_files:
        return Finding(_show(cm_doc.key_files[src.key]), None, "domainft config", src.key, path, msg,
                       _show(via) if via else None)
    where = f'data["{src.key}"]' + (f" {path}" if path else "")
    if cm_doc is None:
        return Finding("?", None, "ConfigMap", None, where, msg)
    return _finding(cm_doc, where, msg, via)


def _structure_problems(obj: dict) -> list[tuple[str, str]]:
    api, kind, meta = obj.get("apiVersion"), obj.get("kind"), obj.get("metadata")
    out = []
    if not isinstance(api, str) or not api:
        out.append(("apiVersion", "missing"))
    if not isinstance(kind, str) or not kind:
        out.append(("kind", "missing"))
    if not isinstance(meta, dict):
        out.append(("metadata", "missing (needs at least a name)"))
    if out:
        return out
    name = meta.get("name")
    if not isinstance(name, str) or not name:
        out.append(("metadata.name", "missing"))
    elif kind in RAY_NAME_LIMITS:
        if len(name) > RAY_NAME_LIMITS[kind] or not _DNS1035_LABEL.match(name):
            out.append(("metadata.name", f"{name!r}: a {kind} name must be a DNS-1035 label (lowercase letters, "
                                         f"digits, '-', starting with a letter) of at most "
                                         f"{RAY_NAME_LIMITS[kind]} characters"))
    elif len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        out.append(("metadata.name", f"{name!r} is not a valid name (lowercase letters, digits, '-', '.')"))
    for key in ("labels", "annotations"):
        value = meta.get(key)
        if value is not None and (not isinstance(value, dict)
                                  or not all(isinstance(v, str) for v in value.values())):
            out.append((f"metadata.{key}", "must map names to strings (quote numbers and booleans)"))
    group = api.split("/")[0] if "/" in api else ""
    if group == RAY_GROUP:
        if (api, kind) in crd_schemas():
            out += schema_problems(obj)
        elif kind in known_crd_kinds():
            out.append(("apiVersion", f"{api} is not served for {kind} (deprecated or unknown): use "
                                      f"{', '.join(known_crd_kinds()[kind])}"))
        else:
            out.append(("kind", f"unknown KubeRay kind {kind!r} (known: {', '.join(sorted(known_crd_kinds()))})"))
    elif kind == "Secret":
        out.append(("kind", "Secrets do not belong in the repository: create them in the cluster "
                            f"({auth.CREATE_SECRET}) and reference them by name"))
    elif kind != "Kustomization":
        core = core_problems(obj)
        if core is None:
            out.append(("kind", f"{api} {kind} is not checked by domainft k8s-validate (checked: KubeRay kinds "
                                "and the core Kubernetes kinds)"))
        out += core or []
        storage = pods.dig(obj, "spec", "resources", "requests", "storage") if kind == "PersistentVolumeClaim" else None
        if storage is not None and pods.parse_quantity(storage) is None:  # the schema says only "a string"
            out.append(("spec.resources.requests.storage", quantity_message(storage)))
    return out


def _reference_problems(t: pods.PodTemplate, configmaps: dict, pvcs: dict) -> list[tuple[str, str]]:
    """ConfigMaps and claims a pod mounts must be among the manifests (else the pod never starts)."""
    out = []
    for i, vol in enumerate(t.spec.get("volumes") or []):
        if not isinstance(vol, dict):
            continue
        at = pods.format_path(t.path + ["volumes", i])
        cm = vol.get("configMap")
        if isinstance(cm, dict) and not cm.get("optional") and cm.get("name") not in configmaps:
            out.append((f"{at}.configMap.name", f"ConfigMap {cm.get('name')!r} is not defined among these manifests "
                                                "(with a configMapGenerator: is the field in kustomizeconfig.yaml "
                                                "nameReference, so its hash suffix reaches it?)"))
        claim = vol.get("persistentVolumeClaim")
        if isinstance(claim, dict) and claim.get("claimName") not in pvcs:
            out.append((f"{at}.persistentVolumeClaim.claimName",
                        f"PersistentVolumeClaim {claim.get('claimName')!r} is not defined among these manifests"))
    return out


def format_findings(findings: list[Finding]) -> str:
    """Human-readable report, grouped by file. Empty list -> a one-line all-clear."""
    if not findings:
        return "k8s-validate: no findings"
    lines: list[str] = []
    current = None
    for f in sorted(findings, key=lambda f: (f.file, -1 if f.doc is None else f.doc, f.path)):
        head = (f.file, f.doc, f.kind, f.name)
        if head != current:
            current = head
            what = " ".join(x for x in (f"[doc {f.doc}]" if f.doc is not None else "",
                                        f"{f.kind}/{f.name}" if f.kind and f.name else (f.kind or "")) if x)
            lines.append(f"{f.file}" + (f" {what}" if what else ""))
        via = f"  (rendered by {f.via})" if f.via and not f.file.startswith(os.path.dirname(f.via) or "\0") else ""
        lines.append(f"  {f.path + ': ' if f.path else ''}{f.message}{via}")
    files = len({f.file for f in findings})
    lines.append(f"{len(findings)} finding(s) in {files} file(s)")
    return "\n".join(lines)
