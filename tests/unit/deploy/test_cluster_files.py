"""The files in cluster/: image recipe, build-context filter, runtime env, cluster launcher, smoke config.

No Docker daemon or cluster here: these check what can be checked statically (the launcher config
against Ray's own schema, the image recipe against our rules)."""
from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import tomllib
from pathlib import Path

import jsonschema
import pytest
import yaml

from domainft.config import load_config
from domainft.deploy.pods import image_problems

ROOT = Path(__file__).resolve().parents[3]
CLUSTER = ROOT / "cluster"


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """[(INSTRUCTION, arguments)] with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        instr, _, args = buf.strip().partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    return out


def substitute(text: str, args: dict) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


@pytest.fixture(scope="module")
def dockerfile():
    return dockerfile_instructions(CLUSTER / "Dockerfile")


def ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return next(re.search(r"==([\w.]+)", d).group(1) for d in deps if re.match(r"ray(\[|=)", d))


def test_base_image_is_pinned_ray_python311(dockerfile):
    args, froms = {}, []
    for instr, rest in dockerfile:
        if instr == "ARG" and not froms:
            name, _, default = rest.partition("=")
            args[name] = substitute(default.strip('"'), args)
        elif instr == "FROM":
            froms.append(substitute(rest, args))
    assert len(froms) == 1
    image = froms[0]
    assert image_problems(image) is None, image
    assert image == f"rayproject/ray:{ray_pin()}-py311-gpu"
    cpu = substitute(dict(dockerfile)["FROM"], {**args, "RAY_IMAGE": f"rayproject/ray:{ray_pin()}-py311-cpu"})
    assert cpu.endswith("-py311-cpu")


def test_runs_as_non_root_by_number(dockerfile):
    users = [rest for instr, rest in dockerfile if instr == "USER"]
    assert users and users[-1].split(":")[0] == "1000"


def test_installs_the_project_under_constraints(dockerfile):
    runs = " ".join(rest for instr, rest in dockerfile if instr == "RUN")
    assert re.search(r"pip install [^;&]*-c constraints\.txt \.", runs)
    assert "torch==2.13.0" in runs


def test_no_secrets_in_the_image(dockerfile):
    for instr, rest in dockerfile:
        if instr in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"(\w+)=", rest) + [rest.split("=")[0]]:
                assert not re.search(r"(^|_)(TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIALS?)(_|$)",
                                     name, re.I), name
    assert not any(instr == "ADD" for instr, _ in dockerfile), "use COPY; ADD fetches URLs and unpacks archives"


def test_build_context_is_an_allowlist_covering_every_copy(dockerfile):
    lines = [ln.strip() for ln in (CLUSTER / "Dockerfile.dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*"
    allowed = [ln[1:].rstrip("/") for ln in lines if ln.startswith("!")]
    for instr, rest in dockerfile:
        if instr == "COPY":
            sources = [s for s in rest.split() if not s.startswith("--")][:-1]
            for src in sources:
                assert src.rstrip("/") in allowed, f"COPY {src} is filtered out of the build context"
    for never in (".venv", "data", "models", "runs", ".git", ".env", "k8s", "tests"):
        assert not any(fnmatch.fnmatch(never, a) for a in allowed), never


def test_runtime_env_keeps_the_upload_small():
    env = yaml.safe_load((CLUSTER / "runtime_env.yaml").read_text())
    assert set(env) <= {"working_dir", "excludes", "env_vars", "py_modules", "pip", "config"}
    assert env["working_dir"] == "."
    for anchored in ("/.git", "/.venv", "/data", "/runs", "/models"):
        assert anchored in env["excludes"]
    # A bare `data` would also drop the package src/domainft/data from the upload.
    assert "data" not in env["excludes"] and "models" not in env["excludes"]
    assert all(isinstance(v, str) for v in env["env_vars"].values()), "Ray needs string env values"


def test_cluster_launcher_config_matches_rays_schema():
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])  # finds, does not import
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "cluster.yaml").read_text())
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(config)]
    assert errors == []
    for key in ("image", "head_image"):
        assert image_problems(config["docker"][key]) is None
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert any(t.get("resources", {}).get("GPU", 0) >= 1 for t in types.values())
    assert any("/mnt/shared" in opt for opt in config["docker"]["run_options"])


def test_cluster_launcher_schema_catches_a_typo():
    ray_dir = Path(importlib.util.find_spec("ray").submodule_search_locations[0])
    schema = json.loads((ray_dir / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((CLUSTER / "cluster.yaml").read_text())
    config["docker"]["imag"] = config["docker"].pop("image")
    assert any("imag" in e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config))


def test_smoke_config():
    cfg = load_config(ROOT / "configs" / "smoke.yaml", check_paths=False)
    assert (cfg.train.epochs, cfg.train.max_steps_per_epoch) == (1, 3)
    assert (cfg.scaling.num_workers, cfg.scaling.cpus_per_worker, cfg.scaling.use_gpu) == (1, 0.5, False)
    assert (cfg.deepspeed.zero_stage, cfg.unfreeze.every_epochs) == (0, 0)
    demo = yaml.safe_load((ROOT / "configs" / "bbc_demo.yaml").read_text())
    smoke = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    assert smoke["data"] == demo["data"] and smoke["model"] == demo["model"]


def test_serve_config_file_is_valid_for_ray_serve_and_domainft():
    """cluster/serve.yaml parses with Ray Serve's own schema (what `serve run` / `serve deploy` read), names
    domainft's builder, and its args are valid `domainft serve` options; the RayService carries the same app."""
    from ray.serve.schema import ServeDeploySchema

    from domainft.config.serve import validate_serve
    from domainft.deploy.rayservices import BUILDER

    raw = yaml.safe_load((CLUSTER / "serve.yaml").read_text())
    schema = ServeDeploySchema.model_validate(raw)
    (app,) = schema.applications
    assert app.import_path == BUILDER and schema.http_options.host == "0.0.0.0"
    cfg = validate_serve(app.args)
    assert cfg.model_dir.startswith("/mnt/shared/") and cfg.backend == "torch"
    service = yaml.safe_load((ROOT / "k8s" / "base" / "rayservice.yaml").read_text())
    in_k8s = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    assert in_k8s.applications[0].import_path == BUILDER
    assert validate_serve(in_k8s.applications[0].args).model_dir == cfg.model_dir


# Each Serve config file in cluster/, and the k8s/base RayService that carries the same application.
SERVE_FILES = {"serve.yaml": "rayservice.yaml", "serve_llm.yaml": "rayservice-llm.yaml"}


def test_every_cluster_yaml_is_checked():
    """Every YAML file in cluster/ is read by a test here: a new Serve config file joins SERVE_FILES."""
    found = {p.name for p in [*CLUSTER.glob("*.yaml"), *CLUSTER.glob("*.yml")]}
    assert found == {"cluster.yaml", "runtime_env.yaml", *SERVE_FILES}


@pytest.mark.parametrize("name", sorted(SERVE_FILES))
def test_serve_config_files_match_their_rayservice(name):
    """Each Serve config file parses with Ray Serve's schema, its args are valid `domainft serve` options with
    every folder on the shared volume, and the RayService serves the same model and adapters."""
    from ray.serve.schema import ServeDeploySchema

    from domainft.config.serve import validate_serve
    from domainft.deploy.rayservices import BUILDER

    schema = ServeDeploySchema.model_validate(yaml.safe_load((CLUSTER / name).read_text()))
    (app,) = schema.applications
    assert app.import_path == BUILDER and schema.http_options.host == "0.0.0.0"
    cfg = validate_serve(app.args, name)
    assert all(d.startswith("/mnt/shared/") for d in [cfg.model_dir, *cfg.adapters.values()])
    service = yaml.safe_load((ROOT / "k8s" / "base" / SERVE_FILES[name]).read_text())
    (in_k8s,) = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"])).applications
    k8s_cfg = validate_serve(in_k8s.args, SERVE_FILES[name])
    assert (k8s_cfg.model_dir, k8s_cfg.adapters, k8s_cfg.backend) == (cfg.model_dir, cfg.adapters, cfg.backend)


def test_llm_serve_config_file_is_a_base_with_adapters_on_gpus():
    from domainft.config.serve import validate_serve

    (app,) = yaml.safe_load((CLUSTER / "serve_llm.yaml").read_text())["applications"]
    cfg = validate_serve(app["args"])
    assert cfg.backend in ("transformers", "vllm") and cfg.replica_gpus >= 1 and len(cfg.adapters) >= 1
    assert cfg.max_tokens < (cfg.max_model_len or 0)  # room for a prompt (`domainft serve` refuses less)
