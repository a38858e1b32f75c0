"""Ray-specific rules: cluster exposure, RayJob lifecycle, and the domainft config a RayJob runs.

The entrypoint is parsed with the real `domainft` argument parser; its config file is followed
through the head container's mounts to the ConfigMap that provides it, and validated like
`domainft validate` does, minus file existence (data and model paths name the pod's
filesystem). The paths the config writes and reads must lie on volumes every Ray pod mounts.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import posixpath
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from domainft.config.paths import is_uri, looks_local
from domainft.deploy.pods import CLUSTER_SPEC, PodTemplate, dig, mounts_and_volumes, pod_templates
from domainft.deploy.schemas import format_path

SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode")
EXPOSED_SERVICE_TYPES = ("LoadBalancer", "NodePort")
# Commands whose first argument is a domainft training config (tune's is a sweep file).
CONFIG_COMMANDS = ("validate", "prepare", "augment", "train", "plan")


@dataclass
class ConfigSource:
    """Where a config file named in an entrypoint comes from."""
    text: Optional[str] = None
    configmap: Optional[dict] = None        # the ConfigMap manifest (rendered)
    key: Optional[str] = None
    problem: Optional[str] = None


def cluster_problems(obj: dict) -> list[tuple[str, str]]:
    """Dashboard exposure for RayCluster, RayJob and RayService."""
    prefix = CLUSTER_SPEC.get(obj.get("kind"))
    if prefix is None:
        return []
    head = dig(obj, *prefix, "headGroupSpec")
    if not isinstance(head, dict):
        return []
    at = lambda *p: format_path(prefix + ["headGroupSpec", *p])  # noqa: E731
    out = []
    if head.get("serviceType") in EXPOSED_SERVICE_TYPES:
        out.append((at("serviceType"), f"{head['serviceType']} exposes the dashboard and job API (which runs "
                                       "arbitrary code) outside the cluster: use ClusterIP and port-forward"))
    svc_type = ((head.get("headService") or {}).get("spec") or {}).get("type")
    if svc_type in EXPOSED_SERVICE_TYPES:
        out.append((at("headService", "spec", "type"), f"{svc_type} exposes the dashboard: use ClusterIP"))
    if head.get("enableIngress") is True:
        out.append((at("enableIngress"), "an Ingress exposes the dashboard and job API: use port-forward"))
    return out


def service_problems(obj: dict) -> list[tuple[str, str]]:
    if obj.get("kind") == "Service" and (obj.get("spec") or {}).get("type") in EXPOSED_SERVICE_TYPES:
        return [("spec.type", f"{obj['spec']['type']} exposes the service outside the cluster "
                              "(a Ray dashboard runs arbitrary code): use ClusterIP")]
    return []


def rayjob_lifecycle_problems(obj: dict) -> list[tuple[str, str]]:
    """A RayJob that owns its cluster must end, be retried a bounded number of times, and clean up."""
    if obj.get("kind") != "RayJob" or not isinstance(obj.get("spec"), dict):
        return []
    spec, out = obj["spec"], []
    owns_cluster = isinstance(spec.get("rayClusterSpec"), dict)
    if owns_cluster and spec.get("shutdownAfterJobFinishes") is not True:
        out.append(("spec.shutdownAfterJobFinishes", "must be true: otherwise the RayCluster (and its GPUs) "
                                                     "outlives the job"))
    if owns_cluster and "ttlSecondsAfterFinished" not in spec:
        out.append(("spec.ttlSecondsAfterFinished", "set it (e.g. 600): how long the finished cluster stays"))
    if "backoffLimit" not in spec:
        out.append(("spec.backoffLimit", "set a retry limit (e.g. 2): each retry resumes from the checkpoints"))
    if "activeDeadlineSeconds" not in spec:
        out.append(("spec.activeDeadlineSeconds", "set a deadline: a stuck job otherwise holds its cluster "
                                                  "forever (kuberay 3860)"))
    if not owns_cluster and not spec.get("clusterSelector"):
        out.append(("spec.rayClusterSpec", "one of rayClusterSpec or clusterSelector must be set"))
    for key in ("activeDeadlineSeconds", "preRunningDeadlineSeconds"):
        if isinstance(spec.get(key), int) and spec[key] <= 0:
            out.append((f"spec.{key}", "must be a positive integer"))
    for key in ("backoffLimit", "ttlSecondsAfterFinished"):
        if isinstance(spec.get(key), int) and spec[key] < 0:
            out.append((f"spec.{key}", "must not be negative"))
    if spec.get("runtimeEnvYAML"):
        try:
            if not isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), (dict, type(None))):
                out.append(("spec.runtimeEnvYAML", "must be a YAML mapping"))
        except yaml.YAMLError as e:
            out.append(("spec.runtimeEnvYAML", f"not valid YAML: {getattr(e, 'problem', e)}"))
    mode = spec.get("submissionMode", "K8sJobMode")
    if mode == "InteractiveMode" and isinstance(spec.get("backoffLimit"), int) and spec["backoffLimit"] > 0:
        out.append(("spec.backoffLimit", "InteractiveMode does not support retries (the operator rejects it)"))
    if mode not in SUBMISSION_MODES:
        out.append(("spec.submissionMode", f"{mode!r} is not one of {list(SUBMISSION_MODES)}"))
    elif mode == "K8sJobMode" and not isinstance(spec.get("submitterPodTemplate"), dict):
        out.append(("spec.submitterPodTemplate", "set it: the operator's default submitter pod has no "
                                                 "securityContext and requests != limits"))
    if not str(spec.get("entrypoint") or "").strip():
        out.append(("spec.entrypoint", "empty entrypoint"))
    return out


def _mount_of(path: str, mounts: list[dict]) -> Optional[tuple[str, dict]]:
    """(mountPath, mount) of the deepest mount holding the absolute `path`, or None."""
    best = None
    for m in mounts:
        mp = str(m.get("mountPath", "")).rstrip("/") or "/"
        if path == mp or path.startswith(mp if mp == "/" else mp + "/"):
            if best is None or len(mp) > len(best[0]):
                best = (mp, m)
    return best


def _resolve_file(path: str, t: PodTemplate, configmaps: dict[str, dict]) -> ConfigSource:
    """Follow an absolute path through the Ray container's mounts to a ConfigMap key."""
    mounts, volumes = mounts_and_volumes(t)
    best = _mount_of(path, mounts)
    if best is None:
        shown = ", ".join(str(m.get("mountPath")) for m in mounts) or "none"
        return ConfigSource(problem=f"config file {path} is on no volume mounted in the head container "
                                    f"(mounts: {shown}): mount the ConfigMap that holds it")
    mount_path, mount = best
    volume = volumes.get(mount.get("name")) or {}
    if "configMap" not in volume:
        return ConfigSource(problem=f"config file {path} is on volume {mount.get('name')!r}, which is not a "
                                    "ConfigMap: it cannot be checked here; ship configs in a ConfigMap")
    cm_name = (volume["configMap"] or {}).get("name")
    rel = posixpath.relpath(path, mount_path) if path != mount_path else ""
    if mount.get("subPath"):
        rel = posixpath.join(mount["subPath"], rel) if rel else mount["subPath"]
    items = (volume["configMap"] or {}).get("items")
    key = rel
    if items:
        by_path = {i.get("path"): i.get("key") for i in items if isinstance(i, dict)}
        key = by_path.get(rel)
    cm = configmaps.get(cm_name)
    if cm is None:
        return ConfigSource(problem=f"config file {path}: ConfigMap {cm_name!r} (volume {mount.get('name')!r}) "
                                    "is not defined among these manifests")
    data = cm.get("data") or {}
    if key is None or key not in data:
        return ConfigSource(configmap=cm, problem=f"config file {path} not found: ConfigMap {cm_name!r} has no "
                                                  f"key {rel!r} (keys: {', '.join(sorted(data)) or 'none'})")
    return ConfigSource(text=str(data[key]), configmap=cm, key=key)


def parse_entrypoint(entrypoint: str) -> tuple[Optional[list[str]], Optional[str]]:
    """The `domainft ...` argv inside a RayJob entrypoint, or (None, why not)."""
    try:
        tokens = shlex.split(entrypoint)
    except ValueError as e:
        return None, f"entrypoint is not valid shell: {e}"
    segments, current = [], []
    for tok in tokens:
        if tok in ("&&", ";", "||", "|"):
            segments.append(current)
            current = []
        else:
            current.append(tok)
    segments.append(current)
    for seg in segments:
        while seg and "=" in seg[0] and not seg[0].startswith("-"):  # leading VAR=value
            seg = seg[1:]
        if seg and posixpath.basename(seg[0]) == "domainft":
            return seg[1:], None
        if len(seg) >= 3 and posixpath.basename(seg[0]).startswith("python") and seg[1:3] == ["-m", "domainft.cli"]:
            return seg[3:], None
    return None, "entrypoint runs no `domainft` command, so no config can be checked"


def parse_cli(argv: list[str], parser: argparse.ArgumentParser):
    """Parse with domainft's own CLI parser (passed in: deploy sits below the CLI).
    Returns (namespace, None) or (None, argparse's message)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(argv), None
    except SystemExit:
        lines = [ln for ln in err.getvalue().strip().splitlines() if ln.startswith("domainft")] or ["invalid arguments"]
        return None, lines[-1]


def config_problems(text: str, overrides: list[str], source: str) -> list[tuple[str, str]]:
    """`domainft validate` without file checks: [(config key, message)]."""
    from domainft.config import ConfigError, apply_overrides, validate_dict

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return [("", f"not valid YAML{where}: {getattr(e, 'problem', e)}")]
    try:
        raw = apply_overrides(raw or {}, overrides) if isinstance(raw, dict) or raw is None else raw
        validate_dict(raw, source=source, check_paths=False)
    except ConfigError as e:
        return [tuple(p.split(": ", 1)) if ": " in p else ("", p) for p in e.problems]
    return []


def config_paths(text: str, overrides: list[str]) -> dict[str, str]:
    """The local paths a (valid) config reads or writes: {config key: path}."""
    from domainft.config import apply_overrides, validate_dict

    return _cfg_paths(validate_dict(apply_overrides(yaml.safe_load(text) or {}, overrides), check_paths=False))


def _cfg_paths(cfg) -> dict[str, str]:
    paths = {"output_dir": cfg.output_dir, "data.train": cfg.data.train, "data.eval": cfg.data.eval,
             "run.storage_path": cfg.run.storage_path}
    if looks_local(cfg.model.name_or_path, check_here=False):  # a path in the pods, not on this machine
        paths["model.name_or_path"] = cfg.model.name_or_path
    return {k: v for k, v in paths.items() if v and not is_uri(v)}


def storage_problems(paths: dict[str, str], templates: list[PodTemplate]) -> list[str]:
    """Every path the run touches is on a volume mounted by the head and every worker group;
    what it writes (outputs, checkpoints) on a PersistentVolumeClaim, so it outlives the pods."""
    out = []
    writes = ("output_dir", "run.storage_path", "sweep output_dir")
    for key, path in sorted(paths.items()):
        if not path.startswith("/"):
            out.append(f"{key}: {path!r} is relative to the job's working directory, which no other pod "
                       "sees: use an absolute path on the shared volume (e.g. /mnt/shared/...)")
            continue
        for t in templates:
            mounts, volumes = mounts_and_volumes(t)
            found = _mount_of(path, mounts)
            hit = found[1] if found else None
            where = "head" if t.role == "head" else f"worker group {t.group!r}"
            if hit is None:
                out.append(f"{key}: {path} is on no volume mounted in the {where} pods: it would be written "
                           "to (or read from) the container's own disk and lost with the pod")
            elif key in writes and "persistentVolumeClaim" not in (volumes.get(hit.get("name")) or {}):
                out.append(f"{key}: {path} is on volume {hit.get('name')!r} of the {where} pods, which is not "
                           "a PersistentVolumeClaim: checkpoints would die with the pod (kuberay 2153)")
    return out


def rayjob_entrypoint_problems(obj: dict, configmaps: dict[str, dict], parser: argparse.ArgumentParser,
                               ) -> list[tuple[str, str, Optional[ConfigSource]]]:
    """[(path, message, source)]: source set when the message is about the config file's content."""
    if obj.get("kind") != "RayJob" or not isinstance(obj.get("spec"), dict):
        return []
    spec = obj["spec"]
    entrypoint = str(spec.get("entrypoint") or "")
    if not entrypoint.strip():
        return []
    argv, why = parse_entrypoint(entrypoint)
    if argv is None:
        return [("spec.entrypoint", why, None)]
    args, error = parse_cli(argv, parser)
    if args is None:
        return [("spec.entrypoint", f"`domainft {' '.join(argv)}`: {error}", None)]
    if args.command not in CONFIG_COMMANDS + ("tune",):
        return []
    templates = [t for t in pod_templates(obj) if t.role in ("head", "worker")]
    head = next((t for t in templates if t.role == "head"), None)
    config = str(args.config)
    if not config.startswith("/"):
        return [("spec.entrypoint", f"config {config!r} is relative: it would be read from the job's working "
                                    "directory, which cannot be checked; mount it from a ConfigMap and give "
                                    "its absolute path", None)]
    if head is None:
        return [("spec.rayClusterSpec", "no head group: the config file cannot be located", None)]
    src = _resolve_file(config, head, configmaps)
    if src.text is None:
        return [("spec.entrypoint", src.problem, None)]
    overrides = list(args.overrides)
    if args.command == "tune":
        return sweep_problems(src, config, overrides, head, configmaps, templates)
    problems = config_problems(src.text, overrides, source=config)
    if problems:
        return [(p, m, src) for p, m in problems]
    return [("spec.entrypoint", m, None) for m in storage_problems(config_paths(src.text, overrides), templates)]


def _split_problem(problem: str) -> tuple[str, str]:
    return tuple(problem.split(": ", 1)) if ": " in problem else ("", problem)


def sweep_problems(src: ConfigSource, sweep_path: str, overrides: list[str], head: PodTemplate,
                   configmaps: dict[str, dict], templates: list[PodTemplate]) -> list:
    """A `domainft tune` sweep, validated by domainft's own sweep loader with its base config taken from
    the ConfigMap (a relative `base` is relative to the sweep file, in the pod). Problems of the base
    config are reported on the base config."""
    from domainft.config import ConfigError, apply_overrides
    from domainft.config.sweep import validate_sweep

    try:
        raw = yaml.safe_load(src.text)
        raw = apply_overrides(raw, overrides) if isinstance(raw, dict) else raw
    except yaml.YAMLError as e:
        return [("", f"not valid YAML: {getattr(e, 'problem', e)}", src)]
    except ConfigError as e:
        return [("spec.entrypoint", p, None) for p in e.problems]
    if not isinstance(raw, dict):
        return [("", "a sweep file must be a YAML mapping", src)]
    out: list = []
    if isinstance(raw.get("output_dir"), str) and not raw["output_dir"].startswith("/"):
        out.append(("output_dir", f"{raw['output_dir']!r} is relative to the job's working directory, which no "
                                  "other pod sees: use an absolute path on the shared volume", src))
    base_src = None
    if isinstance(raw.get("base"), str) and raw["base"]:
        base = raw["base"] if raw["base"].startswith("/") else posixpath.normpath(
            posixpath.join(posixpath.dirname(sweep_path), raw["base"]))
        base_src = _resolve_file(base, head, configmaps)
        if base_src.text is None:
            return out + [("spec.entrypoint", f"sweep {sweep_path}: base {base_src.problem}", None)]
    with tempfile.TemporaryDirectory() as tmp:
        local = dict(raw)
        if base_src is not None:
            local_base = Path(tmp) / "base.yaml"
            local_base.write_text(base_src.text, encoding="utf-8")
            local["base"] = str(local_base)
        try:
            sweep, base_cfg = validate_sweep(local, tmp, source=sweep_path, check_paths=False)
        except ConfigError as e:
            own = set(config_problems(base_src.text, [], source="base")) if base_src is not None else set()
            for problem in e.problems:
                if base_src is not None and problem.startswith(f"base ({Path(tmp) / 'base.yaml'}"):
                    key, msg = _split_problem(problem.split("): ", 1)[1])
                    if (key, msg) in own:          # the base config's own problem
                        out.append((key, msg, base_src))
                    else:                          # made by the sweep's `fixed`
                        out.append((f"fixed.{key}", f"{msg} (merged into base {raw['base']})", src))
                else:
                    out.append((*_split_problem(problem), src))
            return out
    if out:
        return out
    paths = {"sweep output_dir": sweep.output_dir, **_cfg_paths(base_cfg)}
    return [("spec.entrypoint", m, None) for m in storage_problems(paths, templates)]


def pvc_access_problems(templates_by_claim: dict[str, list[tuple[dict, PodTemplate]]],
                        pvcs: dict[str, dict]) -> list[tuple[dict, str, str]]:
    """A claim mounted by a Ray cluster's head and workers (different nodes) must be ReadWriteMany."""
    out = []
    for claim, users in sorted(templates_by_claim.items()):
        pvc = pvcs.get(claim)
        roles = {t.role for _, t in users}
        if pvc is None or not ({"head", "worker"} <= roles):
            continue
        modes = ((pvc.get("spec") or {}).get("accessModes")) or []
        if "ReadWriteMany" not in modes:
            out.append((pvc, "spec.accessModes", f"{modes}: the Ray head and workers mount this claim from "
                                                 "different nodes; it needs ReadWriteMany"))
    return out


def claims_used(t: PodTemplate) -> list[str]:
    mounts, volumes = mounts_and_volumes(t)
    names = {m.get("name") for m in mounts}
    return [(v.get("persistentVolumeClaim") or {}).get("claimName") for n, v in volumes.items()
            if n in names and isinstance(v.get("persistentVolumeClaim"), dict)]
