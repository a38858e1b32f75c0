"""RayService rules: the Serve config (`serveConfigV2`) parses, and a domainft application in it is valid.

An application whose `import_path` is domainft's builder gets its `args` validated like `domainft serve`'s
options (ServeConfig), and its `model_dir` must be on a volume mounted where the replicas run (the worker
pods, and the head unless it has num-cpus 0): a path on a container's own disk is not there.
"""
from __future__ import annotations

import yaml

from domainft.deploy.pods import pod_templates
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
    templates = [t for t in pod_templates(obj) if t.role == "worker"
                 or (t.role == "head" and str((t.ray_start_params or {}).get("num-cpus")) != "0")]
    return [(at, m) for m in storage_problems({"model_dir": cfg.model_dir}, templates)]
