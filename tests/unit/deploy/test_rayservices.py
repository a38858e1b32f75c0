"""RayService rules (deploy/rayservices.py) on the shipped manifests, edited in memory: the causal-LM app's
adapter folders and the head that builds the app, and replica GPUs that no pod has. No kubectl, no Ray;
test_k8s.py checks the rendered tree (`domainft k8s-validate`)."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from domainft.deploy.pods import pod_templates
from domainft.deploy.rayservices import BUILDER, FIELD, pod_gpus, rayservice_problems

ROOT = Path(__file__).resolve().parents[3]
LLM = ROOT / "k8s" / "base" / "rayservice-llm.yaml"
ARGS = f"{FIELD} applications[0].args"


@pytest.fixture()
def llm() -> dict:
    return yaml.safe_load(LLM.read_text())


def with_args(svc: dict, **changes) -> dict:
    """A copy of the RayService whose first application's args are updated."""
    svc = copy.deepcopy(svc)
    config = yaml.safe_load(svc["spec"]["serveConfigV2"])
    config["applications"][0]["args"].update(changes)
    svc["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    return svc


def head(svc: dict) -> dict:
    return svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]


def worker(svc: dict) -> dict:
    return svc["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]


def test_every_shipped_rayservice_is_checked_and_clean():
    services = [(p, d) for p in sorted((ROOT / "k8s").rglob("*.yaml"))
                for d in yaml.safe_load_all(p.read_text()) if isinstance(d, dict) and d.get("kind") == "RayService"]
    assert {p.name for p, _ in services} == {"rayservice.yaml", "rayservice-llm.yaml"}
    for path, svc in services:
        (app,) = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"]
        assert app["import_path"] == BUILDER, path
        assert rayservice_problems(svc) == [], path


def test_the_llm_service_is_a_base_with_adapters_on_a_gpu(llm):
    (app,) = yaml.safe_load(llm["spec"]["serveConfigV2"])["applications"]
    args = app["args"]
    assert args["backend"] == "transformers" and args["replica_gpus"] == 1 and len(args["adapters"]) >= 2
    assert all(d.startswith("/mnt/shared/") for d in [args["model_dir"], *args["adapters"].values()])
    assert pod_gpus(next(t for t in pod_templates(llm) if t.role == "worker")) == 1
    assert args["replicas"] == llm["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"]


def test_adapter_folders_must_be_mounted(llm):
    svc = with_args(llm, adapters={"legal": "/models/legal_adapter", "med": "/mnt/shared/runs/med_sft/best_adapter"})
    problems = rayservice_problems(svc)
    assert {p for p, _ in problems} == {ARGS}
    assert sorted(m.split(": it would")[0] for _, m in problems) == [
        "adapters.legal: /models/legal_adapter is on no volume mounted in the head pods",
        "adapters.legal: /models/legal_adapter is on no volume mounted in the worker group 'gpu' pods"]
    (relative,) = {m for _, m in rayservice_problems(with_args(llm, adapters={"legal": "runs/legal/best_adapter"}))}
    assert relative.startswith("adapters.legal: 'runs/legal/best_adapter' is relative")


def test_the_head_that_builds_the_app_must_mount_the_folders(llm):
    """The head (num-cpus 0) runs no replica but builds the application, reading model_dir and the adapters."""
    svc = copy.deepcopy(llm)
    head(svc)["containers"][0]["volumeMounts"] = [m for m in head(svc)["containers"][0]["volumeMounts"]
                                                  if m["mountPath"] != "/mnt/shared"]
    messages = sorted(m.split(": it would")[0] for _, m in rayservice_problems(svc))
    assert messages == [f"{key}: {path} is on no volume mounted in the head pods" for key, path in (
        ("adapters.legal", "/mnt/shared/runs/legal_sft/best_adapter"),
        ("adapters.med", "/mnt/shared/runs/med_sft/best_adapter"),
        ("model_dir", "/mnt/shared/models/qwen2.5-7b-instruct"))]


def test_replica_gpus_must_fit_a_pod(llm):
    (problem,) = rayservice_problems(with_args(llm, replica_gpus=2))
    assert problem[0] == ARGS and problem[1].startswith(
        "replica_gpus: 2 per replica, but no pod that runs replicas has that many GPUs (worker group 'gpu': 1)")
    assert rayservice_problems(with_args(llm, replica_gpus=0.5)) == []
    cpu_only = copy.deepcopy(llm)
    for key in ("requests", "limits"):
        worker(cpu_only)["containers"][0]["resources"][key].pop("nvidia.com/gpu")
    (problem,) = rayservice_problems(cpu_only)
    assert "(worker group 'gpu': 0)" in problem[1]
    assert rayservice_problems(with_args(cpu_only, replica_gpus=0)) == []
    cpu_only["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["rayStartParams"]["num-gpus"] = "1"
    assert rayservice_problems(cpu_only) == []  # Ray takes num-gpus as given
