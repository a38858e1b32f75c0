"""`domainft k8s-validate`: the shipped k8s/ tree is clean, and each kind of mistake in a copy of it
is reported on the file where it was made. No cluster, no Ray; the real `kubectl kustomize` renders
(most tests validate only the base, one kubectl run, to stay fast)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from domainft.cli import build_parser, main as cli_main
from domainft.deploy import Finding, format_findings, validate_tree
from domainft.deploy.render import kustomize_command, render

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "k8s"
TRAIN_JOB = "base/rayjob-train.yaml"
HEAD = ["spec", "rayClusterSpec", "headGroupSpec", "template", "spec"]
WORKER = ["spec", "rayClusterSpec", "workerGroupSpecs", 0, "template", "spec"]


def validate(path: Path) -> list[Finding]:
    return validate_tree(path, build_parser())


@pytest.fixture()
def tree(tmp_path) -> Path:
    dst = tmp_path / "k8s"
    shutil.copytree(K8S, dst)
    return dst


def edit(tree: Path, rel: str, fn, doc: int = 0) -> None:
    """Load one YAML document of a file in the copied tree, let `fn` change it, write it back."""
    path = tree / rel
    docs = list(yaml.safe_load_all(path.read_text()))
    result = fn(docs[doc])
    docs[doc] = docs[doc] if result is None else result
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))


def at(node, *keys):
    for k in keys:
        node = node[k]
    return node


def only(findings: list[Finding], **match) -> list[Finding]:
    """Findings whose fields contain the given substrings."""
    return [f for f in findings if all(v in str(getattr(f, k)) for k, v in match.items())]


def test_shipped_tree_is_clean():
    findings = validate(K8S)
    assert findings == [], format_findings(findings)


def test_cli_exit_codes(tree, capsys):
    assert cli_main(["k8s-validate", str(K8S)]) == 0
    assert "no findings" in capsys.readouterr().out
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec").update(shutdownAfterJobFinishes=False))
    assert cli_main(["k8s-validate", str(tree)]) == 1
    out = capsys.readouterr().out
    assert "spec.shutdownAfterJobFinishes: must be true" in out and "finding(s)" in out


def kubectl_kustomize(folder: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(folder)], capture_output=True, text=True, check=True, timeout=60)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def test_without_kubectl_a_clear_error(tree, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tree))  # neither kubectl nor kustomize there
    kustomize_command.cache_clear()
    try:
        assert cli_main(["k8s-validate", str(tree)]) == 2
    finally:
        kustomize_command.cache_clear()
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: domainft k8s-validate renders kustomizations with `kubectl kustomize`")
    assert "install kubectl 1.27 or later" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("overlay, tag", [("gpu", "0.1.0-gpu"), ("cpu-smoke", "0.1.0-cpu")])
def test_checks_see_what_kubectl_kustomize_prints(overlay, tag):
    """The objects checked are kubectl's output (origin annotations taken out again, hashed ConfigMap
    names as kubectl makes them, e.g. the gpu overlay's domainft-config-9ggt4ccd96), each traced to its file."""
    folder = K8S / "overlays" / overlay
    rendered = render(folder / "kustomization.yaml")
    assert rendered.error is None
    objs = [d.obj for d in rendered.docs]
    assert objs == kubectl_kustomize(folder)
    where = {(d.obj["kind"], d.obj["metadata"]["name"]): d for d in rendered.docs}
    cm = next(d for (kind, _), d in where.items() if kind == "ConfigMap")
    generator = K8S / ("base" if overlay == "gpu" else f"overlays/{overlay}")
    assert (cm.file, cm.index, cm.generated_name) == (generator / "kustomization.yaml", 0, "domainft-config")
    assert cm.key_files == {k: generator / "configs" / k for k in ("train.yaml", "tune.yaml")}
    job = where[("RayJob", "domainft-train")]
    assert (job.file, job.index) == (K8S / "base" / "rayjob-train.yaml", 0)
    volumes = at(job.obj, *HEAD, "volumes")
    assert volumes[1]["configMap"]["name"] == cm.obj["metadata"]["name"]  # kustomizeconfig.yaml's nameReference
    llm = where[("RayService", "domainft-llm")]
    assert (llm.file, llm.index) == (K8S / "base" / "rayservice-llm.yaml", 0)
    (app,) = yaml.safe_load(llm.obj["spec"]["serveConfigV2"])["applications"]
    assert app["args"]["adapters"] and app["args"]["replica_gpus"] == (1 if overlay == "gpu" else 0)
    text = yaml.safe_dump_all(objs)
    assert ("nvidia.com/gpu" in text) == (overlay == "gpu")
    images = {line.split("image:")[1].strip() for line in text.splitlines() if "image:" in line}
    assert images == {f"registry.example.com/ml/domainft:{tag}"}


def test_unknown_field_typo(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec", "rayClusterSpec", "headGroupSpec").update(replicas=1))
    hits = only(validate(tree / "base"), file=TRAIN_JOB, path="spec.rayClusterSpec.headGroupSpec.replicas")
    assert len(hits) == 1 and "unknown field" in hits[0].message
    assert hits[0].kind == "RayJob" and hits[0].name == "domainft-train" and hits[0].doc == 0


def test_misspelt_field_gets_a_suggestion(tree):
    def typo(d):
        spec = at(d, "spec")
        spec["shutdownAfterJobFinished"] = spec.pop("shutdownAfterJobFinishes")
    edit(tree, TRAIN_JOB, typo)
    findings = validate(tree / "base")
    assert only(findings, path="spec.shutdownAfterJobFinished",
                message="did you mean 'shutdownAfterJobFinishes'?")
    assert only(findings, path="spec.shutdownAfterJobFinishes", message="must be true")


def test_wrong_type(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec", "rayClusterSpec", "workerGroupSpecs", 0).update(replicas="two"))
    hits = only(validate(tree / "base"), path="spec.rayClusterSpec.workerGroupSpecs[0].replicas")
    assert [h.message for h in hits] == ["expected integer, got string 'two'"]


def test_ray_start_params_must_be_strings(tree):
    edit(tree, "base/raycluster.yaml", lambda d: at(d, "spec", "headGroupSpec", "rayStartParams").update(
        {"num-cpus": 0}))
    assert only(validate(tree / "base"), path="spec.headGroupSpec.rayStartParams.num-cpus", message="expected string")


def test_malformed_quantity(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, *WORKER, "containers", 0, "resources", "limits").update(memory="64GB"))
    findings = validate(tree / "base")
    assert only(findings, path="containers[0].resources.limits.memory", message="not a Kubernetes quantity")


def test_root_user(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, *WORKER, "securityContext").update(runAsUser=0))
    hits = only(validate(tree / "base"), file=TRAIN_JOB,
                path="workerGroupSpecs[0].template.spec.securityContext.runAsUser")
    assert hits and "root" in hits[0].message


def test_missing_non_root_settings(tree):
    def strip(d):
        del at(d, *HEAD)["securityContext"]
        del at(d, *HEAD, "containers", 0)["securityContext"]
    edit(tree, TRAIN_JOB, strip)
    messages = [f.message for f in only(validate(tree / "base"), file=TRAIN_JOB, path="headGroupSpec")]
    assert any("may run as root" in m for m in messages)
    assert any("allowPrivilegeEscalation" in m or m == "must be false" for m in messages)
    assert any("drop ALL" in m for m in messages)
    assert any("seccompProfile" in m for m in messages)


def test_latest_image_in_a_manifest(tree):
    edit(tree, "base/raycluster.yaml",
         lambda d: at(d, "spec", "headGroupSpec", "template", "spec", "containers", 0).update(image="domainft:latest"))
    hits = only(validate(tree / "base"), file="raycluster.yaml", path="containers[0].image")
    assert hits and all("latest" in h.message for h in hits)


def test_latest_image_from_an_overlay(tree):
    """The base is fine; the overlay's `images:` makes every container `latest`: reported via the overlay."""
    edit(tree, "overlays/gpu/kustomization.yaml", lambda d: d["images"][0].update(newTag="latest"))
    hits = only(validate(tree), message="latest")
    assert hits and all(h.via and h.via.endswith("overlays/gpu/kustomization.yaml") for h in hits)
    assert {h.kind for h in hits} == {"RayCluster", "RayJob", "RayService"}


def test_untagged_image(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec", "submitterPodTemplate", "spec", "containers", 0).update(
        image="rayproject/ray"))
    assert only(validate(tree / "base"), file=TRAIN_JOB, path="submitterPodTemplate.spec.containers[0].image",
                message="has no tag")


def test_missing_config_file_in_entrypoint(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec").update(entrypoint="domainft train /etc/domainft/missing.yaml"))
    hits = only(validate(tree / "base"), file=TRAIN_JOB, path="spec.entrypoint")
    assert len(hits) == 1 and "config file /etc/domainft/missing.yaml not found" in hits[0].message
    # the ConfigMap is named as kubectl names it, hash suffix included
    name = next(o["metadata"]["name"] for o in kubectl_kustomize(tree / "base") if o["kind"] == "ConfigMap")
    assert f"ConfigMap '{name}' has no key 'missing.yaml'" in hits[0].message


def test_config_file_not_mounted(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec").update(entrypoint="domainft train /opt/train.yaml"))
    assert only(validate(tree / "base"), path="spec.entrypoint", message="on no volume mounted in the head container")


def test_missing_config_file_on_disk(tree):
    (tree / "base" / "configs" / "train.yaml").unlink()
    hits = only(validate(tree / "base"), file="base/kustomization.yaml", kind="Kustomization")
    assert len(hits) == 1 and "kustomize cannot render this" in hits[0].message
    assert "base/configs/train.yaml: no such file or directory" in hits[0].message


def test_invalid_config_in_generated_configmap(tree):
    def bad(cfg):
        cfg["optim"]["lrr"] = cfg["optim"].pop("lr")
        cfg["train"]["epochs"] = 0
    edit(tree, "base/configs/train.yaml", bad)
    findings = validate(tree / "base")
    hits = only(findings, file="base/configs/train.yaml")
    assert {h.path for h in hits} == {"optim.lrr", "train.epochs"}
    assert only(hits, path="optim.lrr", message="did you mean 'optim.lr'?")
    # train.yaml is the train job's config and the tune job's base: one finding, both jobs named
    assert all(h.message.endswith("(config of RayJob/domainft-train, RayJob/domainft-tune)") for h in hits)


def test_invalid_config_in_inline_configmap(tree):
    """A hand-written ConfigMap instead of the generator: its embedded config is extracted and validated."""
    base = tree / "base"
    cfg = yaml.safe_load((base / "configs" / "train.yaml").read_text())
    cfg["scaling"]["num_workers"] = 0
    cfg["data"]["fromat"] = cfg["data"].pop("format")
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "domainft-config"},
          "data": {"train.yaml": yaml.safe_dump(cfg), "tune.yaml": (base / "configs" / "tune.yaml").read_text()}}
    (base / "configmap.yaml").write_text(yaml.safe_dump(cm))
    def use_inline(k):
        del k["configMapGenerator"]
        k["resources"].append("configmap.yaml")
    edit(tree, "base/kustomization.yaml", use_inline)
    shutil.rmtree(tree / "overlays" / "cpu-smoke")  # it replaces the generated ConfigMap
    hits = only(validate(tree), file="base/configmap.yaml")
    assert {h.path for h in hits} == {'data["train.yaml"] scaling.num_workers',
                                      'data["train.yaml"] data.fromat'}
    assert all(h.kind == "ConfigMap" and h.name == "domainft-config" for h in hits)


def test_override_in_entrypoint_is_validated(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec").update(
        entrypoint="domainft train /etc/domainft/train.yaml train.precision=fp16 scaling.use_gpu=false"))
    assert only(validate(tree / "base"), path="train.precision", message="fp16 needs a GPU")


def test_unknown_cli_command(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec").update(entrypoint="domainft trian /etc/domainft/train.yaml"))
    assert only(validate(tree / "base"), path="spec.entrypoint", message="invalid choice: 'trian'")


def test_checkpoints_not_on_shared_storage(tree):
    edit(tree, "base/configs/train.yaml", lambda c: c["run"].update(storage_path="/tmp/ray-results"))
    hits = only(validate(tree / "base"), file=TRAIN_JOB, message="run.storage_path: /tmp/ray-results is on no volume")
    assert {("head" in h.message, "worker group 'gpu'" in h.message) for h in hits} == {(True, False), (False, True)}


def test_requests_must_equal_limits(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, *WORKER, "containers", 0, "resources", "requests").update(cpu="4"))
    hits = only(validate(tree / "base"), path="containers[0].resources.requests.cpu")
    assert hits and "request '4' != limit '8'" in hits[0].message


def test_equal_quantities_in_different_units_are_equal(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, *WORKER, "containers", 0, "resources", "requests").update(
        cpu="8000m", memory="65536Mi"))
    assert validate(tree / "base") == []


def test_dashboard_must_not_be_exposed(tree):
    edit(tree, "base/raycluster.yaml", lambda d: at(d, "spec", "headGroupSpec").update(serviceType="LoadBalancer"))
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dash"},
           "spec": {"type": "NodePort", "ports": [{"port": 8265}]}}
    (tree / "dashboard.yaml").write_text(yaml.safe_dump(svc))
    findings = validate(tree)
    assert only(findings, path="spec.headGroupSpec.serviceType", message="LoadBalancer exposes")
    assert only(findings, file="dashboard.yaml", path="spec.type", message="NodePort exposes")


def test_dev_shm_must_be_memory_backed(tree):
    def disk(d):
        at(d, *WORKER, "volumes", 1)["emptyDir"] = {}
    edit(tree, TRAIN_JOB, disk)
    assert only(validate(tree / "base"), path="workerGroupSpecs[0].template.spec.containers[0].volumeMounts",
                message="medium: Memory")


def test_rayjob_lifecycle(tree):
    def loose(d):
        for key in ("backoffLimit", "ttlSecondsAfterFinished", "activeDeadlineSeconds", "submitterPodTemplate"):
            del d["spec"][key]
    edit(tree, TRAIN_JOB, loose)
    paths = {f.path for f in validate(tree / "base") if f.file.endswith(TRAIN_JOB)}
    assert paths == {"spec.backoffLimit", "spec.ttlSecondsAfterFinished", "spec.activeDeadlineSeconds",
                     "spec.submitterPodTemplate"}


def test_configmap_hash_suffix_must_reach_the_crd(tree):
    """Without kustomizeconfig.yaml kustomize renames the generated ConfigMap but not the RayJob's volume."""
    edit(tree, "base/kustomization.yaml", lambda k: k.pop("configurations"))
    hits = only(validate(tree / "base"), path="volumes[1].configMap.name", message="not defined among these manifests")
    assert {h.name for h in hits} == {"domainft", "domainft-train", "domainft-tune"}


def test_overlay_patch_on_missing_path(tree):
    def wrong(ops):
        ops[1]["path"] = "/spec/rayClusterSpec/headGroupSpec/template/spec/volumes/7/emptyDir/sizeLimit"
    edit(tree, "overlays/cpu-smoke/rayjob-cpu.yaml", wrong)
    hits = only(validate(tree), file="overlays/cpu-smoke/kustomization.yaml")
    assert [h.message for h in hits] == ["kustomize cannot render this: replace operation does not apply: doc is "
                                         "missing path: /spec/rayClusterSpec/headGroupSpec/template/spec/volumes/7/"
                                         "emptyDir/sizeLimit: missing value"]


def test_overlay_patch_breaking_the_schema(tree):
    edit(tree, "overlays/cpu-smoke/rayjob-cpu.yaml",
         lambda ops: ops.append({"op": "add", "path": "/spec/rayClusterSpec/workerGroupSpecs/0/gpus", "value": 0}))
    hits = only(validate(tree), path="spec.rayClusterSpec.workerGroupSpecs[0].gpus")
    # named on the base files the RayJobs come from, rendered by the overlay whose patch broke them
    assert {(h.file.split("k8s/")[-1], h.name) for h in hits} == {
        (TRAIN_JOB, "domainft-train"), ("base/rayjob-tune.yaml", "domainft-tune")}
    assert all(h.via.endswith("cpu-smoke/kustomization.yaml") and "unknown field" in h.message for h in hits)


def test_pvc_must_be_read_write_many(tree):
    edit(tree, "base/pvc.yaml", lambda d: d["spec"].update(accessModes=["ReadWriteOnce"]))
    assert only(validate(tree / "base"), file="base/pvc.yaml", path="spec.accessModes", message="ReadWriteMany")


def test_stray_and_broken_files(tree):
    (tree / "base" / "configs" / "old.yaml").write_text("output_dir: x\n")
    (tree / "broken.yaml").write_text("a: [1, 2\n")
    findings = validate(tree)
    assert only(findings, file="configs/old.yaml", message="neither a Kubernetes manifest")
    assert only(findings, file="broken.yaml", message="not valid YAML at line")


def test_secret_and_unknown_kinds(tree):
    (tree / "extra.yaml").write_text(yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hf"}, "stringData": {"token": "x"}},
        {"apiVersion": "ray.io/v1alpha1", "kind": "RayJob", "metadata": {"name": "old"}, "spec": {}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "c"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": "http"}]}},
    ]))
    findings = only(validate(tree), file="extra.yaml")
    assert only(findings, doc="0", message="Secrets do not belong in the repository")
    assert only(findings, doc="1", path="apiVersion", message="use ray.io/v1")
    assert only(findings, doc="2", message="not checked by domainft k8s-validate")
    assert only(findings, doc="3", path="spec.ports[0].port", message="expected integer, got string 'http'")


def test_kustomization_typo_is_kustomizes_error(tree):
    edit(tree, "overlays/gpu/kustomization.yaml", lambda k: k.update(imagess=k.pop("images")))
    hits = only(validate(tree), file="overlays/gpu/kustomization.yaml")
    assert [h.message for h in hits] == ['kustomize cannot render this: invalid Kustomization: json: unknown field '
                                         '"imagess"']


def test_rayjob_name_limits(tree):
    edit(tree, TRAIN_JOB, lambda d: d["metadata"].update(name="Domainft_Train"))
    assert only(validate(tree / "base"), path="metadata.name", message="DNS-1035 label")


def test_format_findings_groups_by_file():
    f = [Finding("k8s/a.yaml", 0, "RayJob", "x", "spec.a", "bad"),
         Finding("k8s/a.yaml", 0, "RayJob", "x", "spec.b", "worse"),
         Finding("k8s/b.yaml", None, None, None, "", "stray")]
    text = format_findings(f)
    assert text.splitlines() == ["k8s/a.yaml [doc 0] RayJob/x", "  spec.a: bad", "  spec.b: worse",
                                 "k8s/b.yaml", "  stray", "3 finding(s) in 2 file(s)"]
    assert format_findings([]) == "k8s-validate: no findings"


def test_sweep_base_config_is_followed(tree):
    """`domainft tune` names a sweep file; its `base` (relative to the sweep, in the pod) is found too."""
    edit(tree, "base/configs/tune.yaml", lambda s: s.update(base="nope.yaml"))
    hits = only(validate(tree / "base"), file="base/rayjob-tune.yaml", path="spec.entrypoint")
    assert hits and "sweep /etc/domainft/tune.yaml: base config file /etc/domainft/nope.yaml not found" in hits[0].message


def test_sweep_is_validated_by_domainfts_sweep_loader(tree):
    def bad(s):
        s["space"]["optim.lrr"] = s["space"].pop("optim.lr")
        s["output_dir"] = "runs/tune"
    edit(tree, "base/configs/tune.yaml", bad)
    hits = only(validate(tree / "base"), file="base/configs/tune.yaml")
    assert only(hits, path="space.optim.lrr", message="did you mean 'optim.lr'?")
    assert only(hits, path="output_dir", message="relative to the job's working directory")
    assert all(h.message.endswith("(config of RayJob/domainft-tune)") for h in hits)


def test_sweep_fixed_breaking_the_base_is_reported_on_fixed(tree):
    edit(tree, "base/configs/tune.yaml", lambda s: s["fixed"].update(train={"epochs": 0}))
    findings = validate(tree / "base")
    hits = only(findings, file="base/configs/tune.yaml", path="fixed.train.epochs")
    assert hits and "merged into base train.yaml" in hits[0].message and "RayJob/domainft-tune" in hits[0].message
    assert not only(findings, file="base/configs/train.yaml")


def test_sweep_output_must_be_on_shared_storage(tree):
    edit(tree, "base/configs/tune.yaml", lambda s: s.update(output_dir="/tmp/tune"))
    hits = only(validate(tree / "base"), file="base/rayjob-tune.yaml",
                message="sweep output_dir: /tmp/tune is on no volume")
    assert len(hits) == 2  # head and the worker group


def test_dev_shm_must_hold_rays_object_store(tree):
    """Ray sizes the object store at 30% of 64 GiB capped at max(10 GB, 95% of /dev/shm): 9.3 GiB, on disk."""
    edit(tree, TRAIN_JOB, lambda d: at(d, *WORKER, "volumes", 1, "emptyDir").update(sizeLimit="4Gi"))
    hits = only(validate(tree), file=TRAIN_JOB, path="workerGroupSpecs[0].template.spec.volumes[1].emptyDir.sizeLimit")
    assert hits and "smaller than Ray's object store (9.3 GiB" in hits[0].message
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec", "rayClusterSpec", "workerGroupSpecs", 0).update(
        rayStartParams={"object-store-memory": str(3 * 2**29)}))  # fits the cpu-smoke 2Gi too
    assert not only(validate(tree), path="emptyDir.sizeLimit")


def test_wrong_type_in_a_raycluster(tree):
    edit(tree, "base/raycluster.yaml", lambda d: at(d, "spec", "workerGroupSpecs", 0).update(maxReplicas="4"))
    hits = only(validate(tree / "base"), file="base/raycluster.yaml")
    assert [(h.kind, h.doc, h.path, h.message) for h in hits] == [
        ("RayCluster", 0, "spec.workerGroupSpecs[0].maxReplicas", "expected integer, got string '4'")]


def test_token_auth_must_be_on(tree):
    edit(tree, "base/raycluster.yaml", lambda d: d["spec"].pop("authOptions") and None)
    edit(tree, "base/rayjob-tune.yaml", lambda d: at(d, "spec", "rayClusterSpec", "authOptions").update(
        mode="disabled"))
    findings = validate(tree / "base")
    assert only(findings, file="base/raycluster.yaml", path="spec.authOptions.mode",
                message="token authentication is off")
    assert only(findings, file="base/rayjob-tune.yaml", path="spec.rayClusterSpec.authOptions.mode",
                message="token authentication is off")


def test_token_must_come_from_a_named_secret(tree):
    edit(tree, TRAIN_JOB, lambda d: at(d, "spec", "rayClusterSpec", "authOptions").pop("secretName") and None)
    hits = only(validate(tree / "base"), file=TRAIN_JOB)
    assert [h.path for h in hits] == ["spec.rayClusterSpec.authOptions.secretName"]
    assert "kubectl create secret generic" in hits[0].message


def test_no_literal_token_in_a_manifest(tree):
    literal = {"name": "RAY_AUTH_TOKEN", "value": "0" * 64}
    edit(tree, TRAIN_JOB, lambda d: at(d, *WORKER, "containers", 0, "env").append(literal))
    edit(tree, "base/rayjob-tune.yaml", lambda d: at(d, "spec").update(runtimeEnvYAML="env_vars:\n  HF_TOKEN: hf_x\n"))
    findings = validate(tree / "base")
    assert only(findings, file=TRAIN_JOB, path="workerGroupSpecs[0].template.spec.containers[0].env[2].value",
                message="RAY_AUTH_TOKEN is a literal credential")
    assert only(findings, file="base/rayjob-tune.yaml", path="spec.runtimeEnvYAML", message="env_vars.HF_TOKEN")


def test_token_set_by_hand_must_be_the_secrets(tree):
    def by_hand(d):
        at(d, "spec", "headGroupSpec", "template", "spec", "containers", 0, "env").extend([
            {"name": "RAY_AUTH_MODE", "value": "disabled"},
            {"name": "RAY_AUTH_TOKEN", "valueFrom": {"secretKeyRef": {"name": "other", "key": "auth_token"}}},
            {"name": "HF_TOKEN", "valueFrom": {"configMapKeyRef": {"name": "hf", "key": "token"}}}])
    edit(tree, "base/raycluster.yaml", by_hand)
    hits = {h.path.rsplit(".", 2)[-2:][0] + " " + h.message.split(":")[0]
            for h in only(validate(tree / "base"), file="base/raycluster.yaml")}
    assert hits == {"env[3] RAY_AUTH_MODE='disabled' turns Ray's token authentication off for this container",
                    "secretKeyRef 'other' is not authOptions.secretName 'domainft-ray-token'",
                    "env[5] HF_TOKEN should come from a Secret (secretKeyRef), not from configMapKeyRef"}


SERVICE = "base/rayservice.yaml"


def test_rayservice_is_checked_with_its_crd(tree):
    """The serving RayService gets the checks a RayJob gets: its CRD schema, the pod rules, token auth."""
    def break_it(svc):
        svc["spec"]["rayClusterConfig"]["authOptions"].pop("secretName")
        at(svc["spec"]["rayClusterConfig"], "headGroupSpec", "template", "spec")["containers"][0]["image"] = \
            "domainft:latest"
        svc["spec"]["upgradeStrateg"] = svc["spec"].pop("upgradeStrategy")
    edit(tree, SERVICE, break_it)
    hits = {(h.kind, h.path, h.message.split(":")[0]) for h in only(validate(tree / "base"), file=SERVICE)}
    assert hits == {
        ("RayService", "spec.upgradeStrateg", "unknown field (did you mean 'upgradeStrategy'?)"),
        ("RayService", "spec.rayClusterConfig.headGroupSpec.template.spec.containers[0].image", "image 'domainft"),
        ("RayService", "spec.rayClusterConfig.authOptions.secretName", "not set")}


def test_rayservice_serve_config_is_validated_like_domainft_serve(tree):
    """serveConfigV2's domainft application: its args are `domainft serve`'s options, its model on the PVC."""
    def break_args(svc):
        config = yaml.safe_load(svc["spec"]["serveConfigV2"])
        config["http_options"]["host"] = "127.0.0.1"
        config["applications"][0]["args"].update(max_batch_size=0, batch_size=8, backend="tensorrt")
        svc["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    edit(tree, SERVICE, break_args)
    hits = {(h.path, h.message.split(" (")[0]) for h in only(validate(tree / "base"), file=SERVICE)}
    args = "spec.serveConfigV2 applications[0].args"
    assert hits == {("spec.serveConfigV2 http_options.host", "'127.0.0.1': the proxy then listens only inside its "
                     "pod and the Serve Service cannot reach it; use 0.0.0.0"),
                    (f"{args}.max_batch_size", "Input should be greater than or equal to 1"),
                    (f"{args}.batch_size", "unknown key"),
                    (f"{args}.backend", "Input should be 'torch', 'onnx', 'transformers' or 'vllm'")}

    def unmounted_model(svc):
        config = yaml.safe_load(svc["spec"]["serveConfigV2"])
        config["applications"][0]["args"] = {"model_dir": "/models/best"}
        svc["spec"]["serveConfigV2"] = yaml.safe_dump(config)
    shutil.copy(K8S / SERVICE, tree / SERVICE)
    edit(tree, SERVICE, unmounted_model)
    hits = only(validate(tree / "base"), file=SERVICE)
    assert {h.path for h in hits} == {args}
    assert sorted(h.message.split(": it would")[0] for h in hits) == [
        "model_dir: /models/best is on no volume mounted in the head pods",  # it builds the app, reading the folder
        "model_dir: /models/best is on no volume mounted in the worker group 'serve' pods"]
    edit(tree, SERVICE, lambda svc: svc["spec"].update(serveConfigV2="applications: [\n"))
    (hit,) = only(validate(tree / "base"), file=SERVICE)
    assert hit.path == "spec.serveConfigV2" and hit.message.startswith("not valid YAML")
