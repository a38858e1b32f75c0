"""`ray job submit` end to end against a real Ray head: what users do on KubeRay, on this machine.

Starts its own head (`ray start --head`, dashboard on, its own temp dir and ports, so neither the
session's `ray.init` nor anyone else's Ray is touched) with Ray's token authentication on and a
token of its own, checks that a client without the token is refused, submits with the `ray job
submit` command as cluster/README.md documents it (RAY_AUTH_MODE=token, RAY_AUTH_TOKEN_PATH),
uploading the repository as the job's working dir with the excludes of cluster/runtime_env.yaml,
runs a smoke `domainft` job, waits for SUCCEEDED, checks its outputs, and stops exactly the
processes of that head.
"""
from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
import yaml

from corpora import word_corpus

# The command the job runs: `train` is the real thing (prepare + fit + export, ~1-2 min here);
# "prepare" and "validate" exercise the same plumbing faster (see OUTPUT_CHECKS).
JOB_COMMAND = "train"
JOB_TIMEOUT_S = 420
HEAD_START_TIMEOUT_S = 120

ROOT = Path(__file__).resolve().parents[2]
RAY_BIN = str(Path(sys.executable).with_name("ray"))
RUNTIME_ENV = ROOT / "cluster" / "runtime_env.yaml"
SMOKE_CONFIG = "configs/smoke.yaml"  # relative: read from the uploaded working dir on the cluster
KEEP_SMALL = 5 * 1024**2  # what we upload is code and configs: a few hundred KiB


def _free_ports(n: int) -> list[int]:
    """n distinct free TCP ports (held open together, so none is handed out twice)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _runtime_env_file() -> dict:
    return yaml.safe_load(RUNTIME_ENV.read_text())


def _head_processes(temp_dir: str) -> list[psutil.Process]:
    """Processes of the head started with `temp_dir` (every Ray process carries it in its command line)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(temp_dir in arg for arg in p.info["cmdline"] or []):
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def _stop_head(temp_dir: str) -> None:
    """Stop only this head's processes, by pid (plain `ray stop` would kill every Ray on the machine)."""
    procs = [p for p in _head_processes(temp_dir) if p.pid != os.getpid()]
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)  # `ray stop --grace-period 5`; a test's head holds nothing
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


@dataclass
class Head:
    address: str        # the dashboard (job server) URL
    token_path: Path    # the file holding the cluster's token

    def client_env(self, with_token: bool = True) -> dict:
        """The environment of a client shell: the documented way to give `ray job ...` the token."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH_", "RAY_ADDRESS"))}
        return {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_path)} if with_token else env


@pytest.fixture()
def ray_head():
    """A Ray head with the dashboard (the job server lives there) on free local ports and token auth on."""
    missing = [m for m in ("aiohttp", "aiohttp_cors", "grpc", "opencensus", "prometheus_client")
               if importlib.util.find_spec(m) is None]
    assert not missing, (f"Ray's job server runs in the dashboard, which needs ray[default]; missing here: "
                         f"{', '.join(missing)}. Install ray[default,train,tune]==2.60.0 (pyproject, constraints).")
    # Short path: Ray's unix socket paths under the temp dir must stay under ~107 characters.
    temp_dir = tempfile.mkdtemp(prefix="dftjob-", dir="/tmp")
    # The head's own token (as a KubeRay Secret would give it), not ~/.ray/auth_token: RAY_AUTH_TOKEN_PATH
    # comes before the default file, and every process of the head (and the job's driver) inherits it.
    token_path = Path(temp_dir) / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    # Every port Ray would otherwise take at a fixed default, so a second Ray on the machine cannot collide.
    gcs, dashboard_port, client, agent_http, agent_grpc, metrics, runtime_env_agent = _free_ports(7)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN_PATH": str(token_path)}
    env.pop("RAY_AUTH_TOKEN", None)
    env.pop("RAY_ADDRESS", None)
    cmd = [RAY_BIN, "start", "--head", f"--port={gcs}", "--node-ip-address=127.0.0.1", "--num-cpus=2",
           "--num-gpus=0", f"--object-store-memory={256 * 1024**2}", "--include-dashboard=true",
           "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}", f"--ray-client-server-port={client}",
           f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={runtime_env_agent}",
           f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    try:
        started = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=HEAD_START_TIMEOUT_S)
        assert started.returncode == 0, f"ray start failed:\n{started.stdout}\n{started.stderr}"
        yield Head(f"http://127.0.0.1:{dashboard_port}", token_path)
    finally:
        _stop_head(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_working_dir_package_is_small_and_complete(tmp_path):
    """What `--working-dir .` uploads with our excludes (Ray's own packer, .gitignore not consulted)."""
    from ray._private.runtime_env.packaging import GCS_STORAGE_MAX_SIZE, create_package

    excludes = _runtime_env_file()["excludes"]
    package = tmp_path / "pkg.zip"
    create_package(str(ROOT), package, include_gitignore=False, excludes=excludes)
    size = package.stat().st_size
    names = zipfile.ZipFile(package).namelist()
    assert size < GCS_STORAGE_MAX_SIZE, f"{size} bytes: over Ray's working_dir limit"
    assert size < KEEP_SMALL, f"working dir package is {size / 2**20:.1f} MiB: what is in it? {names[:50]}"
    for excluded in (".git/", ".venv/", "data/", "runs/", "models/"):
        assert not any(n.startswith(excluded) for n in names), excluded
    assert not any("__pycache__" in n for n in names)
    for needed in (SMOKE_CONFIG, "src/domainft/data/__init__.py", "cluster/runtime_env.yaml", "pyproject.toml"):
        assert needed in names, needed


def _check_train(out: Path, logs: str) -> None:
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]) == 1 and metrics["best"]["epoch"] == 1
    assert (out / "best" / "config.json").is_file()
    assert any((out / "best").glob("*.safetensors"))
    assert (out / "data" / "data_report.json").is_file()


def _check_prepare(out: Path, logs: str) -> None:
    report = json.loads((out / "data" / "data_report.json").read_text())
    assert report["train_rows"] > 0 and report["eval_rows"] > 0


def _check_validate(out: Path, logs: str) -> None:
    assert "# valid" in logs and "max_steps_per_epoch: 3" in logs


OUTPUT_CHECKS = {"train": _check_train, "prepare": _check_prepare, "validate": _check_validate}


def _ray_cli(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAY_BIN, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.timeout(600)
def test_submit_smoke_job(ray_head, tmp_path, tiny_model_dir):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobStatus, JobSubmissionClient

    # Auth is on: without the token the job API refuses (Ray 2.60 sends none unless RAY_AUTH_MODE=token),
    # and a wrong token is refused too.
    refused = _ray_cli("job", "list", "--address", ray_head.address, env=ray_head.client_env(with_token=False))
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "Missing authentication token" in said, said[-2000:]
    with pytest.raises(AuthenticationError, match="Invalid authentication token"):
        JobSubmissionClient(ray_head.address, headers={"Authorization": "Bearer " + "0" * 64}).list_jobs()

    out = tmp_path / "smoke"
    # The job runs on this machine with the head's Python: the venv's interpreter, absolute data and
    # model paths (data/ and models/ are not uploaded), outputs in the test's tmp dir. A small corpus and
    # the tiny model: the plumbing is the test, not the model.
    corpus = word_corpus(tmp_path / "corpus.jsonl", 150)
    overrides = [f"data.train={corpus}", f"model.name_or_path={tiny_model_dir}", f"output_dir={out}"]
    entrypoint = [sys.executable, "-m", "domainft.cli", JOB_COMMAND, SMOKE_CONFIG, *overrides]
    runtime_env = _runtime_env_file()
    runtime_env["working_dir"] = str(ROOT)
    runtime_env["env_vars"] = {
        **runtime_env.get("env_vars", {}), "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions"),
        **{k: os.environ[k] for k in ("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S",
                                      "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION") if k in os.environ}}

    # Submitted the way cluster/README.md says: `ray job submit` with the token in the client's environment.
    job_id = f"smoke-{secrets.token_hex(4)}"
    submitted = _ray_cli("job", "submit", "--address", ray_head.address, "--submission-id", job_id, "--no-wait",
                         "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint, env=ray_head.client_env())
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr

    # Followed with the SDK, the token passed as the Authorization header (JobSubmissionClient's `headers`).
    token = ray_head.token_path.read_text()
    client = JobSubmissionClient(ray_head.address, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + JOB_TIMEOUT_S
    status = client.get_job_status(job_id)
    while status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED) and time.monotonic() < deadline:
        time.sleep(0.5)
        status = client.get_job_status(job_id)
    logs = client.get_job_logs(job_id)
    if status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
        client.stop_job(job_id)
    assert status == JobStatus.SUCCEEDED, f"job {job_id} ended {status}; logs:\n{logs[-6000:]}"
    info = client.get_job_info(job_id)
    assert info.runtime_env["working_dir"].startswith("gcs://_ray_pkg_")  # uploaded, not a local path
    OUTPUT_CHECKS[JOB_COMMAND](out, logs)
