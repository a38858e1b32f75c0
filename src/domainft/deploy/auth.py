"""Ray token authentication in KubeRay manifests, and no secret written into a manifest.

Ray's dashboard and job API run arbitrary code for whoever reaches them. With
`authOptions: {mode: token, secretName: <Secret>}` in a cluster spec (RayCluster.spec,
RayJob.spec.rayClusterSpec, RayService.spec.rayClusterConfig), the KubeRay operator sets
`RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN` (a secretKeyRef to key `auth_token` of that Secret) on
every Ray container, on a RayJob's submitter, and uses the token for its own dashboard client.
Without `secretName` it generates one Secret per cluster, named after the cluster (a RayJob's
cluster has a generated name), so clients could not know the token in advance. The Secret is
created in the cluster (`kubectl create secret generic ...`), never committed.
"""
from __future__ import annotations

import re
from typing import Optional

import yaml

from domainft.deploy.pods import CLUSTER_SPEC, PodTemplate, containers, dig
from domainft.deploy.schemas import format_path

TOKEN_KEY = "auth_token"  # the key KubeRay reads from the Secret
CREATE_SECRET = ("kubectl create secret generic <name> --from-file=auth_token=<file with the token> "
                 "(cluster/README.md)")
# Variable names that hold credentials: RAY_AUTH_TOKEN, HF_TOKEN, AWS_SECRET_ACCESS_KEY, DB_PASSWORD...
_SECRET_NAME = re.compile(r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIALS?)(_|$)", re.I)


def cluster_auth(obj: dict) -> tuple[Optional[list], Optional[dict]]:
    """(path of the cluster spec, its authOptions) for KubeRay kinds; (None, None) otherwise."""
    prefix = CLUSTER_SPEC.get(obj.get("kind"))
    spec = dig(obj, *prefix) if prefix else None
    if not isinstance(spec, dict):
        return None, None
    auth = spec.get("authOptions")
    return prefix, auth if isinstance(auth, dict) else None


def auth_problems(obj: dict) -> list[tuple[str, str]]:
    """Token auth is on, with the token from a named Secret."""
    prefix, auth = cluster_auth(obj)
    if prefix is None:
        return []
    at = lambda *p: format_path(prefix + ["authOptions", *p])  # noqa: E731
    if auth is None or auth.get("mode") != "token":
        return [(at("mode"), "token authentication is off: anyone who reaches the head can run code on the "
                             "cluster; set authOptions: {mode: token, secretName: <Secret with key auth_token>}")]
    if auth.get("enableK8sTokenAuth") is True or auth.get("secretName"):
        return []
    return [(at("secretName"), "not set: the operator then generates a token per cluster, which clients cannot "
                               f"know in advance; create one Secret ({CREATE_SECRET}) and name it here")]


def env_problems(t: PodTemplate, auth: Optional[dict]) -> list[tuple[str, str]]:
    """No literal credentials in env; a Ray token, if set by hand, is the Secret's."""
    out = []
    secret = (auth or {}).get("secretName")
    for field, i, c in containers(t.spec):
        for j, env in enumerate(c.get("env") or []):
            if not isinstance(env, dict) or not isinstance(env.get("name"), str):
                continue
            name, at = env["name"], format_path(t.path + [field, i, "env", j])
            ref = dig(env, "valueFrom", "secretKeyRef")
            if _SECRET_NAME.search(name) and env.get("value"):
                out.append((f"{at}.value", f"{name} is a literal credential in the manifest: anyone who can read "
                                           "the repository or the object has it; use valueFrom.secretKeyRef"))
            elif _SECRET_NAME.search(name) and isinstance(env.get("valueFrom"), dict) and ref is None:
                out.append((f"{at}.valueFrom", f"{name} should come from a Secret (secretKeyRef), not from "
                                               f"{', '.join(env['valueFrom'])}"))
            elif name == "RAY_AUTH_MODE" and env.get("value") != "token" and t.role != "pod":
                out.append((f"{at}.value", f"RAY_AUTH_MODE={env.get('value')!r} turns Ray's token "
                                           "authentication off for this container"))
            elif name == "RAY_AUTH_TOKEN" and isinstance(ref, dict) and secret and ref.get("name") != secret:
                out.append((f"{at}.valueFrom.secretKeyRef.name",
                            f"{ref.get('name')!r} is not authOptions.secretName {secret!r}: the pods and the "
                            "operator would use different tokens"))
    return out


def runtime_env_problems(obj: dict) -> list[tuple[str, str]]:
    """A RayJob's runtimeEnvYAML is stored in the object and shown by the dashboard: no credentials in it."""
    text = dig(obj, "spec", "runtimeEnvYAML") if obj.get("kind") == "RayJob" else None
    try:
        env_vars = dig(yaml.safe_load(text), "env_vars") if isinstance(text, str) else None
    except yaml.YAMLError:
        return []  # reported by the lifecycle rules
    return [("spec.runtimeEnvYAML", f"env_vars.{name} is a literal credential: take it from a Secret in the "
                                    "pods' env instead")
            for name, value in (env_vars or {}).items() if _SECRET_NAME.search(str(name)) and value] \
        if isinstance(env_vars, dict) else []
