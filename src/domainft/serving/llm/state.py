"""The causal LM behind one server process: loaded in the background like a classifier (serving/state.py),
warmed with a one-token answer, and a scheduler that decodes every request in one running batch.

Continuous batching: one loop per process owns a serving.llm.decode.BatchDecoder. Between two decoding steps
it admits the requests that arrived (up to `max_batch_size` in the batch; the rest wait their turn), so a
request joins the batch at the next step boundary instead of waiting for the longest answer of a batch to
finish, and an answer that finishes leaves at once. A request whose client goes away leaves at the next step.
Steps run one at a time in one worker thread, off the event loop, which stays free to accept requests and
answer /healthz. No Ray: the Ray Serve deployment (distributed/serve.py) runs one of these per replica, and
the tests run it under a plain ASGI client.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import AsyncIterator, Callable, Optional

from domainft.serving.llm.decode import Delta, GenRequest
from domainft.serving.state import ModelHolder, logger

Stream = Callable[[GenRequest], AsyncIterator[Delta]]  # a request -> its deltas, the last with a finish reason
PROBE_TOKENS = 1


def probe_request(model) -> GenRequest:
    """A one-token greedy answer to a short prompt (warm-up and health probe)."""
    return GenRequest(tuple(model.text_prompt("Hello")), PROBE_TOKENS)


class _Ticket:
    """A request on its way through the scheduler."""

    def __init__(self, request: GenRequest):
        self.request = request
        self.deltas: asyncio.Queue = asyncio.Queue()
        self.rid: Optional[int] = None   # its id in the decoder, once admitted
        self.abandoned = False           # the client went away


def _log_end(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("the LLM scheduler stopped", exc_info=task.exception())


class LLMHolder(ModelHolder):
    """ModelHolder for a serving.llm.model.ChatModel (its `predictor`), with the batching scheduler."""

    last_step_at = 0.0  # time.monotonic() when a decoding step last finished

    def __init__(self, load: Callable, max_batch_size: int = 32, batch_wait_s: float = 0.0):
        """Args:
            load: builds the ChatModel (called once, in a background thread, by `start`).
            max_batch_size: most requests in the running batch (1: one at a time, no batching).
            batch_wait_s: after an idle spell, how long the first request waits for others to prefill with.
        """
        super().__init__(load)
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_s
        self._incoming: deque = deque()
        self._wake: Optional[asyncio.Event] = None
        self._loop_task: Optional[asyncio.Task] = None

    def _warm(self, model) -> None:
        if model.streams_itself:  # an engine of its own (vLLM) warms itself
            return
        decoder = model.decoder()
        decoder.add([probe_request(model)])
        while not decoder.done:
            decoder.step()

    def _stepped(self, decoder) -> dict:
        out = decoder.step()
        self.last_step_at = time.monotonic()
        return out

    def progressing(self, within_s: float) -> bool:
        return time.monotonic() - self.last_step_at < within_s

    async def stream(self, request: GenRequest) -> AsyncIterator[Delta]:
        """The request's deltas, decoded in the running batch; the last has a finish reason."""
        if self.predictor is None:
            raise RuntimeError(f"not ready: {self.detail}")
        if self.predictor.streams_itself:
            async for delta in self.predictor.stream(request):
                yield delta
            return
        ticket = _Ticket(request)
        self._incoming.append(ticket)
        self._ensure_loop()
        self._wake.set()
        finished = False
        try:
            while not finished:
                delta = await ticket.deltas.get()
                if isinstance(delta, BaseException):
                    raise delta
                finished = delta.finish_reason is not None
                yield delta
        finally:
            if not finished:
                ticket.abandoned = True
                self._wake.set()

    def _ensure_loop(self) -> None:
        """The scheduler loop of this event loop (a test may run several loops one after another)."""
        loop = asyncio.get_running_loop()
        if self._loop_task is None or self._loop_task.done() or self._loop_task.get_loop() is not loop:
            self._wake = asyncio.Event()
            self._loop_task = loop.create_task(self._schedule(), name="domainft-llm-scheduler")
            self._loop_task.add_done_callback(_log_end)

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        decoder = self.predictor.decoder()
        tickets: dict[int, _Ticket] = {}
        while True:
            if decoder.done and not self._incoming:
                self._wake.clear()
                await self._wake.wait()
                if self.batch_wait_s:  # a burst after an idle spell prefills together
                    await asyncio.sleep(self.batch_wait_s)
            for rid, t in list(tickets.items()):
                if t.abandoned:
                    decoder.cancel(rid)
                    del tickets[rid]
            while self._incoming and decoder.size < self.max_batch_size:
                t = self._incoming.popleft()
                if t.abandoned:
                    continue
                try:
                    (t.rid,) = decoder.add([t.request])
                except ValueError as e:  # a request the decoder refuses (the app checks first: a bug to get here)
                    t.deltas.put_nowait(e)
                    continue
                tickets[t.rid] = t
            if decoder.done:
                continue
            try:
                deltas = await loop.run_in_executor(self._executor, self._stepped, decoder)
            except Exception as e:  # the batch is lost: every request in it gets the error, the next ones go on
                for t in tickets.values():
                    t.deltas.put_nowait(e)
                tickets, decoder = {}, self.predictor.decoder()
                continue
            for rid, delta in deltas.items():
                t = tickets.get(rid)
                if t is not None:
                    t.deltas.put_nowait(delta)
                    if delta.finish_reason is not None:
                        del tickets[rid]

    async def probe_decoding(self, timeout_s: float) -> None:
        """A one-token answer through the scheduler (it joins the running batch at the next step) within
        `timeout_s`. A replica still finishing decoding steps within `timeout_s` is busy, not wedged, and
        passes (see ModelHolder.probe_with)."""
        async def one_token() -> None:
            async for _ in self.stream(probe_request(self.predictor)):
                pass
        await self.probe_with(one_token, timeout_s, "a one-token answer", self.progressing)
