"""Pod templates inside manifests, and the rules every pod here must follow.

Each rule returns [(dotted path, message)] relative to the manifest. The rules are the
Pod Security Standard "restricted" profile's core (non-root, no privilege escalation, all
capabilities dropped, a seccomp profile, no host namespaces or hostPath) plus ours: pinned
images, requests equal to limits (Guaranteed QoS: a training pod is not evicted first under
node pressure), and a memory-backed /dev/shm on Ray containers (Ray's object store lives there;
the container runtime's default is 64 MiB).
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Iterator, Optional

from kubernetes.utils.quantity import parse_quantity as _parse_quantity

from domainft.deploy.schemas import format_path, quantity_message


# Where each KubeRay kind holds its cluster spec (head group, worker groups, authOptions).
CLUSTER_SPEC = {"RayCluster": ["spec"], "RayJob": ["spec", "rayClusterSpec"],
                "RayService": ["spec", "rayClusterConfig"]}


@dataclass
class PodTemplate:
    path: list              # path of the PodSpec inside the manifest
    spec: dict              # the PodSpec
    role: str               # head | worker | submitter | pod
    group: str = ""         # worker group name
    ray_start_params: Optional[dict] = None


def dig(node, *keys):
    """node[k1][k2]... or None where a step is missing (ints index lists)."""
    for k in keys:
        if isinstance(node, dict):
            node = node.get(k)
        elif isinstance(node, list) and isinstance(k, int) and k < len(node):
            node = node[k]
        else:
            return None
    return node


def _cluster_templates(cluster_spec, prefix: list) -> Iterator[PodTemplate]:
    head = dig(cluster_spec, "headGroupSpec", "template", "spec")
    if isinstance(head, dict):
        yield PodTemplate(prefix + ["headGroupSpec", "template", "spec"], head, "head",
                          ray_start_params=dig(cluster_spec, "headGroupSpec", "rayStartParams"))
    for i, group in enumerate(dig(cluster_spec, "workerGroupSpecs") or []):
        spec = dig(group, "template", "spec")
        if isinstance(spec, dict) and isinstance(group, dict):
            yield PodTemplate(prefix + ["workerGroupSpecs", i, "template", "spec"], spec, "worker",
                              str(group.get("groupName", i)), group.get("rayStartParams"))


def pod_templates(obj: dict) -> Iterator[PodTemplate]:
    """Every PodSpec in a manifest, with its role in a Ray cluster."""
    kind, spec = obj.get("kind"), obj.get("spec")
    if not isinstance(spec, dict):
        return
    if kind in CLUSTER_SPEC and isinstance(dig(obj, *CLUSTER_SPEC[kind]), dict):
        yield from _cluster_templates(dig(obj, *CLUSTER_SPEC[kind]), CLUSTER_SPEC[kind])
    if kind == "RayJob":
        sub = dig(spec, "submitterPodTemplate", "spec")
        if isinstance(sub, dict):
            yield PodTemplate(["spec", "submitterPodTemplate", "spec"], sub, "submitter")
    elif kind == "Pod":
        yield PodTemplate(["spec"], spec, "pod")
    elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        if isinstance(dig(spec, "template", "spec"), dict):
            yield PodTemplate(["spec", "template", "spec"], spec["template"]["spec"], "pod")
    elif kind == "CronJob":
        inner = dig(spec, "jobTemplate", "spec", "template", "spec")
        if isinstance(inner, dict):
            yield PodTemplate(["spec", "jobTemplate", "spec", "template", "spec"], inner, "pod")


def containers(pod: dict) -> Iterator[tuple[str, int, dict]]:
    for field in ("initContainers", "containers"):
        for i, c in enumerate(pod.get(field) or []):
            if isinstance(c, dict):
                yield field, i, c


def parse_quantity(value) -> Optional[Decimal]:
    """Kubernetes quantity -> exact number ('500m' -> 0.5, '8Gi' -> 8589934592); None if malformed."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = _parse_quantity(value)
    except (ValueError, ArithmeticError):
        return None
    return number if number.is_finite() else None


def split_image(ref: str) -> tuple[str, Optional[str], Optional[str]]:
    """'reg:5000/a/b:1.2@sha256:..' -> ('reg:5000/a/b', '1.2', 'sha256:..')."""
    name, _, digest = ref.partition("@")
    slash, colon = name.rfind("/"), name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    return name, tag, digest or None


# --- rules --------------------------------------------------------------------------------
def image_problems(image) -> Optional[str]:
    if not isinstance(image, str) or not image:
        return "no image"
    name, tag, digest = split_image(image)
    if digest:
        return None
    if tag is None:
        return f"image {image!r} has no tag: pin a version (e.g. {name}:0.1.0) or a digest"
    if tag == "latest":
        return f"image {image!r} uses `latest`: pin a version or a digest"
    return None


def _effective(pod_sc: dict, c_sc: dict, key: str):
    return c_sc[key] if key in c_sc else pod_sc.get(key)


def pod_problems(t: PodTemplate) -> list[tuple[str, str]]:
    """Images, security context, resources and /dev/shm for one PodSpec."""
    out: list[tuple[str, str]] = []
    pod = t.spec
    pod_sc = pod.get("securityContext") if isinstance(pod.get("securityContext"), dict) else {}
    at = lambda *parts: format_path(t.path + list(parts))  # noqa: E731

    for flag in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(flag) is True:
            out.append((at(flag), "host namespaces are not allowed"))
    for i, vol in enumerate(pod.get("volumes") or []):
        if isinstance(vol, dict) and "hostPath" in vol:
            out.append((at("volumes", i, "hostPath"), "hostPath volumes are not allowed (use a PVC)"))
    if pod_sc.get("runAsUser") == 0:
        out.append((at("securityContext", "runAsUser"), "runs as root (uid 0): use the image's `ray` user, 1000"))

    for field, i, c in containers(pod):
        cpath = [field, i]
        c_sc = c.get("securityContext") if isinstance(c.get("securityContext"), dict) else {}
        problem = image_problems(c.get("image"))
        if problem:
            out.append((at(*cpath, "image"), problem))
        user, non_root = _effective(pod_sc, c_sc, "runAsUser"), _effective(pod_sc, c_sc, "runAsNonRoot")
        if c_sc.get("runAsUser") == 0:
            out.append((at(*cpath, "securityContext", "runAsUser"), "runs as root (uid 0)"))
        elif user == 0:
            pass  # reported once at pod level
        elif non_root is not True and not (isinstance(user, int) and user != 0):
            out.append((at(*cpath, "securityContext"),
                        "may run as root: set runAsNonRoot: true and runAsUser: 1000 (pod or container)"))
        if non_root is False:
            out.append((at(*cpath, "securityContext", "runAsNonRoot"), "runAsNonRoot: false"))
        if c_sc.get("privileged") is True:
            out.append((at(*cpath, "securityContext", "privileged"), "privileged containers are not allowed"))
        if c_sc.get("allowPrivilegeEscalation") is not False:
            out.append((at(*cpath, "securityContext", "allowPrivilegeEscalation"), "must be false"))
        drop = dig(c_sc, "capabilities", "drop") or []
        if "ALL" not in drop:
            out.append((at(*cpath, "securityContext", "capabilities", "drop"), "must drop ALL capabilities"))
        if dig(c_sc, "capabilities", "add"):
            out.append((at(*cpath, "securityContext", "capabilities", "add"), "adds capabilities"))
        seccomp = dig(c_sc, "seccompProfile", "type") or dig(pod_sc, "seccompProfile", "type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append((at(*cpath, "securityContext", "seccompProfile"),
                        "needs seccompProfile type RuntimeDefault (pod or container)"))
        out += _resource_problems(c.get("resources"), lambda *p: at(*cpath, "resources", *p))

    if t.role in ("head", "worker"):
        out += _shm_problems(t, at)
    return out


def _resource_problems(res, at) -> list[tuple[str, str]]:
    res = res if isinstance(res, dict) else {}
    requests, limits = res.get("requests") or {}, res.get("limits") or {}
    out = []
    for key in ("cpu", "memory"):
        if key not in limits:
            out.append((at("limits", key), f"no {key} limit: set requests equal to limits"))
    for key in sorted(set(requests) | set(limits)):
        bad = [(kind, q[key]) for kind, q in (("requests", requests), ("limits", limits))
               if key in q and parse_quantity(q[key]) is None]
        if bad:
            out += [(at(kind, key), quantity_message(value)) for kind, value in bad]
            continue
        if key not in requests:
            continue  # Kubernetes copies a limit to a missing request: equal by construction
        if key not in limits:
            out.append((at("limits", key), f"request without limit: set limits.{key} = {requests[key]!r}"))
        elif parse_quantity(requests[key]) != parse_quantity(limits[key]):
            out.append((at("requests", key), f"request {requests[key]!r} != limit {limits[key]!r}: set them equal"))
    return out


def _shm_problems(t: PodTemplate, at) -> list[tuple[str, str]]:
    ray = (t.spec.get("containers") or [None])[0]  # KubeRay's Ray container is containers[0]
    if not isinstance(ray, dict):
        return []
    volumes = {v.get("name"): v for v in t.spec.get("volumes") or [] if isinstance(v, dict)}
    for mount in ray.get("volumeMounts") or []:
        if isinstance(mount, dict) and mount.get("mountPath") == "/dev/shm":
            vol = volumes.get(mount.get("name"))
            if not vol or dig(vol, "emptyDir", "medium") != "Memory":
                return [(at("containers", 0, "volumeMounts"),
                         "/dev/shm must be an emptyDir with medium: Memory")]
            return _object_store_problems(t, ray, vol, at)
    return [(at("containers", 0, "volumeMounts"),
             "no /dev/shm mount: add an emptyDir {medium: Memory} volume mounted at /dev/shm "
             "(Ray's object store; the runtime default is 64 MiB)")]


# Ray's defaults (ray/_private/ray_constants.py, utils.py): the object store takes 30% of memory,
# capped at 95% of /dev/shm but never below 10 GB; if it does not fit /dev/shm, Ray puts it on disk
# ("This will harm performance") or, above 10 GB, refuses to start.
OBJECT_STORE_FRACTION, SHM_CAP_FLOOR = Decimal("0.3"), Decimal(10**10)


def _object_store_problems(t: PodTemplate, ray: dict, vol: dict, at) -> list[tuple[str, str]]:
    memory = parse_quantity(dig(ray, "resources", "limits", "memory"))
    shm = parse_quantity(dig(vol, "emptyDir", "sizeLimit")) or memory  # tmpfs defaults to the memory limit
    if not memory or not shm:
        return []
    explicit = parse_quantity((t.ray_start_params or {}).get("object-store-memory"))
    store = explicit or min(memory * OBJECT_STORE_FRACTION, max(SHM_CAP_FLOOR, shm * Decimal("0.95")))
    if store <= shm:
        return []
    i = next(i for i, v in enumerate(t.spec.get("volumes") or []) if v is vol)
    gib = lambda q: f"{float(q) / 2**30:.1f} GiB"  # noqa: E731
    effect = "Ray refuses to start" if store > SHM_CAP_FLOOR else "Ray puts it on disk instead (slow)"
    return [(at("volumes", i, "emptyDir", "sizeLimit"),
             f"/dev/shm ({gib(shm)}) is smaller than Ray's object store ({gib(store)}, "
             f"{'object-store-memory' if explicit else '30% of the memory limit'}): {effect}; raise sizeLimit "
             f"to at least {gib(store)} or set rayStartParams object-store-memory")]


def mounts_and_volumes(t: PodTemplate) -> tuple[list[dict], dict[str, dict]]:
    """The Ray (first) container's volumeMounts, and the pod's volumes by name."""
    c = (t.spec.get("containers") or [{}])[0]
    mounts = [m for m in (c.get("volumeMounts") or []) if isinstance(m, dict)] if isinstance(c, dict) else []
    volumes = {v.get("name"): v for v in t.spec.get("volumes") or [] if isinstance(v, dict)}
    return mounts, volumes


def volume_reference_problems(t: PodTemplate) -> list[tuple[str, str]]:
    """Every mount names a volume of the pod (the API server rejects the pod otherwise)."""
    out = []
    volumes = {v.get("name") for v in t.spec.get("volumes") or [] if isinstance(v, dict)}
    for field, i, c in containers(t.spec):
        for j, m in enumerate(c.get("volumeMounts") or []):
            if isinstance(m, dict) and m.get("name") not in volumes:
                out.append((format_path(t.path + [field, i, "volumeMounts", j, "name"]),
                            f"no volume named {m.get('name')!r} in this pod"))
    return out
