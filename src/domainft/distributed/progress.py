"""Progress from Ray workers and Ray Data tasks to the driver's console.

Workers do not print (their output goes to Ray's log files): they push small events to one
`ProgressHub` actor, fire-and-forget, and a driver thread drains it and draws the bars and lines.
Events are dicts with a "kind": "line" (text), "bar" (name, total, unit: open or reset a bar),
"advance" (name, n, postfix), "close" (name).
"""
from __future__ import annotations

import threading
from typing import Any, Optional

import ray

from domainft import console


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
