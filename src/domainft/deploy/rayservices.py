"""RayService rules: the Serve config (`serveConfigV2`) parses, and a domainft application in it is valid.

An application whose `import_path` is domainft's builder gets its `args` validated like `domainft serve`'s
options (ServeConfig). Its `model_dir` and every adapter folder must be on a volume mounted in the head and
every worker pod: the workers run the replicas, and the head builds the application (Serve's build task
asks for no CPU, so Ray places it on the node that submits it, the Serve controller's: the head), where the
builder reads the folders to check them. A path on a container's own disk is not there. A replica's
`replica_gpus` must fit the GPUs of one pod it can run on, or it waits for them forever.
"""
from __future__ import annotations

import yaml

from domainft.deploy.pods import PodTemplate, parse_quantity, pod_templates
from domainft.deploy.rayjobs import storage_problems

BUILDER = "domainft.distributed.serve:app_builder"
FIELD = "spec.serveConfigV2"


def rayservice_problems(obj: dict) -> list[tuple[str, str]]:
    """[(path, message)] for one RayService manifest."""
    text = (obj.get("spec") or {}).get("serveConfigV2") if obj.get("kind") == "RayService" else None
    if not isinstance(text, str):
        return []
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1} of the Serve config)" if mark else ""
        return [(FIELD, f"not valid YAML{where}: {getattr(e, 'problem', e)}")]
    if not isinstance(config, dict) or not isinstance(config.get("applications"), list):
        return [(FIELD, "a Serve config needs `applications:`, a list (the `serve deploy` format)")]
    http = config.get("http_options") or {}
    out = []
    if isinstance(http, dict) and http.get("host") not in (None, "0.0.0.0", "::"):
        out.append((f"{FIELD} http_options.host", f"{http['host']!r}: the proxy then listens only inside its "
                                                  "pod and the Serve Service cannot reach it; use 0.0.0.0"))
    for i, app in enumerate(config["applications"]):
        if isinstance(app, dict) and app.get("import_path") == BUILDER:
            out += _app_problems(obj, app.get("args"), f"{FIELD} applications[{i}].args")
    return out


def _app_problems(obj: dict, args, at: str) -> list[tuple[str, str]]:
    from domainft.config import ConfigError
    from domainft.config.serve import validate_serve

    try:
        cfg = validate_serve(args if args is not None else {}, "args")
    except ConfigError as e:
        return [(f"{at}.{p.split(': ', 1)[0]}", p.split(": ", 1)[1]) if ": " in p else (at, p) for p in e.problems]
    templates = [t for t in pod_templates(obj) if t.role in ("head", "worker")]
    folders = {"model_dir": cfg.model_dir, **{f"adapters.{name}": d for name, d in cfg.adapters.items()}}
    return [(at, m) for m in storage_problems(folders, templates) + _gpu_problems(cfg.replica_gpus, templates)]


def _gpu_problems(replica_gpus: float, templates: list[PodTemplate]) -> list[str]:
    """A replica asking for more GPUs than any pod it can run on has (the workers; the head unless it has
    num-cpus 0) is never scheduled: Serve waits for it without an error."""
    if replica_gpus <= 0:
        return []
    hosts = [t for t in templates if t.role == "worker" or str((t.ray_start_params or {}).get("num-cpus")) != "0"]
    gpus = {("head" if t.role == "head" else f"worker group {t.group!r}"): pod_gpus(t) for t in hosts}
    if any(n >= replica_gpus for n in gpus.values()):
        return []
    shown = ", ".join(f"{where}: {n:g}" for where, n in gpus.items()) or "no worker groups"
    return [f"replica_gpus: {replica_gpus:g} per replica, but no pod that runs replicas has that many GPUs "
            f"({shown}): the replicas would wait for GPUs forever; give the worker pods nvidia.com/gpu limits "
            "or lower replica_gpus (0: CPU)"]


def pod_gpus(t: PodTemplate) -> float:
    """GPUs Ray sees in a pod: rayStartParams num-gpus, else (as KubeRay does) the Ray container's limits of
    resources named *gpu (nvidia.com/gpu)."""
    given = (t.ray_start_params or {}).get("num-gpus")
    if given is not None:
        number = parse_quantity(str(given))
        return float(number) if number is not None else 0.0
    containers = t.spec.get("containers") or [{}]
    limits = ((containers[0] if isinstance(containers[0], dict) else {}).get("resources") or {}).get("limits") or {}
    numbers = [parse_quantity(v) for k, v in limits.items() if str(k).endswith("gpu")]
    return float(sum(n for n in numbers if n is not None))
