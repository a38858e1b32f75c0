"""The model behind one server process: loaded in the background, ready once it has answered.

A replica starts answering HTTP at once (/healthz: alive) while the model loads; /readyz and
/v1/classify say 503 until the model is loaded and a warm-up prediction came back. The health probe
runs a one-text prediction through the same path as requests, with a timeout, so a replica whose
prediction path is wedged fails it (ray 61263: Serve's default check only pings the actor).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Awaitable, Callable, Optional, Sequence

import numpy as np

from domainft.serving.predictors import Predictor

logger = logging.getLogger("domainft.serving")

Classify = Callable[[Sequence[str]], Awaitable[np.ndarray]]  # texts -> probabilities [N, C]
PROBE_TEXT = "health check"


class ModelHolder:
    """Holds the predictor of one process.

    Attributes:
        state: loading | ready | failed (the load raised) | unhealthy (the last probe timed out or raised).
        detail: Why it is not ready.
        predictor: The loaded predictor, else None.
    """

    def __init__(self, load: Callable[[], Predictor]):
        """Args:
            load: Builds the predictor (e.g. `functools.partial(load_predictor, folder, "torch")`); called
                once, in a background thread, by `start`.
        """
        self._load = load
        self.predictor: Optional[Predictor] = None
        self.state, self.detail = "loading", "the model is loading"
        # Forwards run one at a time off the event loop: a second concurrent forward would only split the
        # same cores, and the loop stays free to accept requests and answer /healthz.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="domainft-predict")

    def start(self) -> "ModelHolder":
        threading.Thread(target=self._load_and_warm, name="domainft-load", daemon=True).start()
        return self

    def _load_and_warm(self) -> None:
        try:
            predictor = self._load()
            self._warm(predictor)  # first forward: allocations, kernels, lazy init
        except Exception as e:  # reported by /readyz and the health check, logged with its traceback
            logger.exception("loading the model failed")
            self.state, self.detail = "failed", f"loading the model failed: {type(e).__name__}: {e}"
            return
        self.predictor = predictor
        self.state, self.detail = "ready", ""

    def _warm(self, predictor: Predictor) -> None:
        predictor.predict_proba([PROBE_TEXT])

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    async def predict(self, texts: Sequence[str]) -> np.ndarray:
        """Probabilities for `texts` (one forward at a time, in the worker thread)."""
        if self.predictor is None:
            raise RuntimeError(f"not ready: {self.detail}")
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.predictor.predict_proba,
                                                                list(texts))

    async def probe(self, classify: Classify, timeout_s: float) -> None:
        """A one-text prediction through `classify` within `timeout_s`.

        Passes while the model is loading; raises when loading failed, when the prediction raises, or
        when it takes longer than `timeout_s` (the replica is wedged). Sets `state` accordingly.
        """
        async def one_text() -> None:
            probs = await classify([PROBE_TEXT])
            if not np.isfinite(probs).all():
                raise ValueError("non-finite probabilities")
        await self.probe_with(one_text, timeout_s, "a one-text prediction")

    async def probe_with(self, check: Callable[[], Awaitable[None]], timeout_s: float, what: str,
                         progressing: Optional[Callable[[float], bool]] = None) -> None:
        """Run `check` (a request through the serving path) within `timeout_s`, unless the model is still loading;
        a timeout or an error marks the holder unhealthy, and raises, so that Serve replaces the replica.
        `progressing(timeout_s)`: True when the model finished work within the last `timeout_s`, in which case a
        timeout means a busy replica, not a wedged one, and passes."""
        if self.state == "loading":
            return
        if self.state == "failed":
            raise RuntimeError(self.detail)
        try:
            await asyncio.wait_for(check(), timeout_s)
        except asyncio.TimeoutError:
            if progressing is not None and progressing(timeout_s):
                self.state, self.detail = "ready", ""
                return
            self.state, self.detail = "unhealthy", f"{what} took longer than {timeout_s:g} s"
            raise RuntimeError(f"wedged: {self.detail}") from None
        except Exception as e:
            self.state, self.detail = "unhealthy", f"{what} raised {type(e).__name__}: {e}"
            raise
        self.state, self.detail = "ready", ""
