"""Ray Serve: the classifier API (serving/app.py) and the OpenAI-compatible LLM API (serving/llm/app.py) as
deployments whose replicas batch requests; the task of the model folder picks one (APPS). The classifier's
replicas batch with `@serve.batch`; an LLM replica's scheduler (serving/llm/state.py) keeps one continuous batch
that requests join and leave between decoding steps.

Each replica loads its predictor in the background and answers /healthz at once; /readyz and /v1/classify
say 503 until the model answered a warm-up. Every text of every request is one item of the replica's batch
queue, so a forward pass runs up to `max_batch_size` texts from many clients. Overload is bounded: a replica
holds `max_ongoing` requests, each proxy queues `max_queued` more, and beyond that Ray Serve's proxy answers
503 with Retry-After (BackpressureConfig) instead of growing a queue. `check_health` runs a one-text
prediction through the batch queue with a timeout, so a replica whose prediction path is wedged is replaced
(Serve's default check only pings the actor: ray 61263, 26204).

`domainft serve` (commands/serve.py) calls `start_application`; a Serve config file (cluster/serve.yaml, `serve run` / `serve deploy`,
a RayService's serveConfigV2) names `domainft.distributed.serve:app_builder` with the same options as `args`.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
from ray import serve
from ray.serve.config import BackpressureConfig

from domainft.config.serve import ServeConfig, validate_serve
from domainft.errors import UserError
from domainft.serving.app import build_app
from domainft.serving.llm.app import build_llm_app
from domainft.serving.llm.state import LLMHolder
from domainft.serving.predictors import Predictor
from domainft.serving.state import ModelHolder
from domainft.tasks import task_of_model_dir

APP_NAME = "domainft"
DEPLOYMENT = "Classifier"
LLM_DEPLOYMENT = "ChatLM"
HEALTH_MARGIN_S = 5.0  # Serve's own timeout on check_health: after ours, so ours reports why


@serve.deployment(name=DEPLOYMENT)
@serve.ingress()
class Classifier:
    """One replica: a ModelHolder, the batch queue in front of it, and the FastAPI app over both."""

    def __init__(self, load: Callable[[], Predictor], max_batch_size: int, batch_wait_s: float, max_texts: int,
                 max_body_bytes: int, retry_after_s: int, health_timeout_s: float):
        self.holder = ModelHolder(load).start()
        self.predict_one.set_max_batch_size(max_batch_size)
        self.predict_one.set_batch_wait_timeout_s(batch_wait_s)
        self.limits = dict(max_texts=max_texts, max_body_bytes=max_body_bytes, retry_after_s=retry_after_s)
        self.health_timeout_s = health_timeout_s

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)  # set per deployment in __init__
    async def predict_one(self, texts: list[str]) -> list[np.ndarray]:
        return list(await self.holder.predict(texts))

    async def classify(self, texts: Sequence[str]) -> np.ndarray:
        """Each text joins the batch queue on its own; the rows come back in input order."""
        return np.stack(await asyncio.gather(*(self.predict_one(t) for t in texts)))

    def __serve_build_asgi_app__(self):
        return build_app(self.holder, self.classify, **self.limits)

    async def check_health(self) -> None:
        await self.holder.probe(self.classify, self.health_timeout_s)


@serve.deployment(name=LLM_DEPLOYMENT)
@serve.ingress()
class ChatLM:
    """One replica of the OpenAI-compatible API: an LLMHolder (a ChatModel with its adapters and the scheduler
    that decodes every request of the replica in one continuous batch) and the FastAPI app over it."""

    def __init__(self, load: Callable[[], Any], max_batch_size: int, batch_wait_s: float, max_tokens: int,
                 max_body_bytes: int, retry_after_s: int, health_timeout_s: float):
        self.holder = LLMHolder(load, max_batch_size, batch_wait_s).start()
        self.limits = dict(max_tokens=max_tokens, max_body_bytes=max_body_bytes, retry_after_s=retry_after_s)
        self.health_timeout_s = health_timeout_s

    def __serve_build_asgi_app__(self):
        return build_llm_app(self.holder, **self.limits)

    async def check_health(self) -> None:
        await self.holder.probe_decoding(self.health_timeout_s)


def _classifier_app(cfg: ServeConfig, load: Callable[[], Any]):
    return Classifier.options(**_deployment_options(cfg)).bind(
        load, cfg.max_batch_size, cfg.batch_wait_ms / 1000.0, cfg.max_texts, cfg.max_body_bytes, cfg.retry_after_s,
        cfg.health_timeout_s)


def _llm_app(cfg: ServeConfig, load: Callable[[], Any]):
    return ChatLM.options(**_deployment_options(cfg)).bind(
        load, cfg.max_batch_size, cfg.batch_wait_ms / 1000.0, cfg.max_tokens, cfg.max_body_bytes, cfg.retry_after_s,
        cfg.health_timeout_s)


APPS = {"classify": _classifier_app, "openai": _llm_app}  # by Task.serve_api


def _deployment_options(cfg: ServeConfig) -> dict:
    return dict(num_replicas=cfg.replicas, max_ongoing_requests=cfg.ongoing, max_queued_requests=cfg.max_queued,
                backpressure_config=BackpressureConfig(status_code=503, retry_after_s=cfg.retry_after_s),
                health_check_period_s=cfg.health_period_s,
                health_check_timeout_s=cfg.health_timeout_s + HEALTH_MARGIN_S,
                ray_actor_options={"num_cpus": cfg.replica_cpus, "num_gpus": cfg.replica_gpus})


def build_application(cfg: ServeConfig, load: Optional[Callable[[], Any]] = None):
    """The Serve application for `cfg`: the deployment of the task whose model the folder holds (`load`
    replaces its predictor loader, e.g. a slow one in a test)."""
    task = task_of_model_dir(cfg.model_dir)
    return APPS[task.serve_api](cfg, load or task.predictor_loader(cfg))


def app_builder(args: dict):
    """Application builder for Serve config files: `import_path: domainft.distributed.serve:app_builder`,
    `args:` the ServeConfig fields (model_dir required)."""
    cfg = validate_serve(dict(args), "serve config args")
    task_of_model_dir(cfg.model_dir).check_model_dir(cfg)
    return build_application(cfg)


def local_url(host: str, port: int) -> str:
    return f"http://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"


def wait_ready(url: str, timeout_s: float = 600.0, interval_s: float = 0.5) -> dict:
    """Poll GET {url}/readyz until 200; raise UserError if loading failed or `timeout_s` passed."""
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=10) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as e:  # 503 while loading: our JSON, or Serve's own while deploying
            body = e.read().decode("utf-8", "replace")
            try:
                status = json.loads(body)
            except json.JSONDecodeError:
                status = {"status": "starting", "detail": body.strip()}
            if status.get("status") == "failed":
                raise UserError(f"the model did not load: {status.get('detail')}") from None
            last = status.get("detail") or status.get("status") or str(e.code)
        except (urllib.error.URLError, OSError) as e:
            last = str(getattr(e, "reason", e))
        time.sleep(interval_s)
    raise UserError(f"{url}/readyz: not ready after {timeout_s:g} s ({last})")


def start_application(cfg: ServeConfig, host: str, port: int, load: Optional[Callable[[], Predictor]] = None) -> str:
    """Start Serve's HTTP proxy on host:port and deploy the app on the connected Ray; returns the local URL."""
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_application(cfg, load), name=APP_NAME, route_prefix="/")
    return local_url(host, port)


@contextlib.contextmanager
def application_on_ray(cfg: ServeConfig, host: str, port: int, address: Optional[str] = None) -> Iterator[str]:
    """The app deployed on Ray (the cluster at `address`, RAY_ADDRESS, or a local one started here); yields
    its local URL. On exit: a Ray started here is shut down, else only the app is deleted."""
    import os

    import ray

    from domainft.distributed.cluster import init_ray

    if address:
        os.environ["RAY_ADDRESS"] = address
    started_ray = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    init_ray()
    try:
        yield start_application(cfg, host, port)
    finally:
        if started_ray:
            serve.shutdown()
            ray.shutdown()
        else:
            serve.delete(APP_NAME)
