"""Progress from Ray workers and Ray Data tasks to the driver's console.

Workers do not print (their output goes to Ray's log files): they push small events to one
`ProgressHub` actor, fire-and-forget, and a driver thread drains it and draws the bars and lines.
Events are dicts with a "kind": "line" (text), "bar" (name, total, unit: open or reset a bar),
"advance" (name, n, postfix), "close" (name). `Progress` is a training worker's side: throughput and
rank 0's training bar.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Optional

import ray

from domainft import console

if TYPE_CHECKING:
    import torch

    from domainft.core.geometry import Geometry


@ray.remote(num_cpus=0, max_restarts=0)
class ProgressHub:
    def __init__(self):
        self.events: list[dict] = []

    def push(self, *events: dict) -> None:
        self.events.extend(events)

    def drain(self) -> list[dict]:
        out, self.events = self.events, []
        return out


class Reporter:
    """What a worker or task holds: `line`, `bar`, `advance`, `close`; no-ops without a hub."""

    def __init__(self, hub: Optional[Any]):
        self.hub = hub

    def _push(self, event: dict) -> None:
        if self.hub is None:
            if event["kind"] == "line":
                console.say(event["text"])
            return
        self.hub.push.remote(event)  # not awaited: progress never blocks training

    def line(self, text: str) -> None:
        self._push({"kind": "line", "text": text})

    def bar(self, name: str, total: Optional[int], unit: str = "it", initial: int = 0) -> None:
        self._push({"kind": "bar", "name": name, "total": total, "unit": unit, "initial": initial})

    def advance(self, name: str, n: int = 1, postfix: Optional[str] = None) -> None:
        self._push({"kind": "advance", "name": name, "n": n, "postfix": postfix})

    def close(self, name: str) -> None:
        self._push({"kind": "close", "name": name})


class LiveProgress:
    """Driver side: a thread that drains the hub every `interval` seconds and renders the events."""

    def __init__(self, interval: float = 0.5):
        self.hub = ProgressHub.remote()
        self.interval = interval
        self.bars: dict[str, Any] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="domainft-progress", daemon=True)

    def reporter(self) -> Reporter:
        return Reporter(self.hub)

    def __enter__(self) -> "LiveProgress":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._render(self._drain())
        for b in self.bars.values():
            b.close()
        self.bars.clear()
        ray.kill(self.hub)

    def _drain(self) -> list[dict]:
        try:
            return ray.get(self.hub.drain.remote(), timeout=30)
        except Exception:  # the hub is best effort: a lost event never fails a run
            return []

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._render(self._drain())

    def _render(self, events: list[dict]) -> None:
        for e in events:
            kind, name = e["kind"], e.get("name")
            if kind == "line":
                console.say(e["text"])
            elif kind == "bar":
                if name in self.bars:
                    self.bars.pop(name).close()
                self.bars[name] = console.bar(e["total"], name, e["unit"])
                if e.get("initial"):
                    self.bars[name].update(e["initial"])
            elif kind == "advance" and name in self.bars:
                b = self.bars[name]
                b.update(e["n"])
                if e.get("postfix"):
                    b.set_postfix_str(e["postfix"], refresh=False)
            elif kind == "close" and name in self.bars:
                self.bars.pop(name).close()


class Progress:
    """Throughput for the epoch record, and rank 0's training bar (the loss is fetched from the device
    only every `every` steps: a host sync). Bar advances are batched: one event to the hub at most
    every `push_interval` seconds (the driver draws every 0.5 s), not an actor call per step."""

    def __init__(self, every: int, geo: Geometry, reporter: Reporter, rank: int, push_interval: float = 0.5):
        self.every, self.geo, self.reporter, self.rank = every, geo, reporter, rank
        self.t0, self.start_step, self.warm_time, self.warm_step = time.time(), 0, None, None
        self.bar_open = False
        # -inf: the first step is pushed at once (time.monotonic() may count from boot, under the interval)
        self.push_interval, self.pending, self.last_push = push_interval, 0, float("-inf")

    def start_epoch(self, step: int) -> None:
        self.t0, self.start_step = time.time(), step
        self.warm_time, self.warm_step = None, None
        if self.rank == 0 and not self.bar_open:
            self.reporter.bar("train", self.geo.total_steps, "steps", initial=step)
            self.bar_open = True

    def mark(self, step: int, loss: torch.Tensor) -> None:
        # Steady-state throughput starts after a few steps (allocator warm-up, first collectives).
        if self.warm_time is None and step - self.start_step >= min(3, max(1, self.geo.steps_per_epoch // 4)):
            self.warm_time, self.warm_step = time.time(), step
        if self.rank != 0:
            return
        postfix = None
        last = step == self.geo.total_steps
        if step % self.every == 0 or last:
            postfix = f"loss {loss.item():.4f}, {self.samples_per_s(step):.1f} samples/s"  # host sync
        self.pending += 1
        now = time.monotonic()
        epoch_end = step % self.geo.steps_per_epoch == 0  # flushed before eval, which can take a while
        if postfix is not None or epoch_end or now - self.last_push >= self.push_interval:
            self.reporter.advance("train", self.pending, postfix)
            self.pending, self.last_push = 0, now
        if last:
            self.reporter.close("train")

    def samples_per_s(self, step: int) -> float:
        if self.warm_time is None or step == self.warm_step:
            return (step - self.start_step) * self.geo.global_batch / max(time.time() - self.t0, 1e-9)
        return (step - self.warm_step) * self.geo.global_batch / max(time.time() - self.warm_time, 1e-9)
