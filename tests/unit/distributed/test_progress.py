"""Rank 0's training bar: advances reach the hub batched (not one actor call per step), every step
counted, flushed at each epoch's end and with every loss line (no Ray cluster here)."""
import torch

from domainft.core.geometry import geometry
from domainft.distributed.progress import Reporter
from domainft.distributed.progress import Progress


class Recorder(Reporter):
    """A Reporter that keeps the events it would push to the driver's hub."""

    def __init__(self):
        super().__init__(None)
        self.events = []

    def _push(self, event):
        self.events.append(event)


def _run(push_interval, epochs=2, rank=0):
    geo = geometry(train_rows=160, world=1, micro_batch=8, grad_accum=1, epochs=epochs)  # 20 steps an epoch
    rec = Recorder()
    progress = Progress(every=7, geo=geo, reporter=rec, rank=rank, push_interval=push_interval)
    for epoch in range(epochs):
        progress.start_epoch(epoch * geo.steps_per_epoch)
        for step in range(epoch * geo.steps_per_epoch + 1, (epoch + 1) * geo.steps_per_epoch + 1):
            progress.mark(step, torch.tensor(0.5))
    return geo, rec.events


def test_advances_are_batched_and_every_step_is_counted():
    geo, events = _run(push_interval=3600.0)
    advances = [e for e in events if e["kind"] == "advance"]
    assert sum(e["n"] for e in advances) == geo.total_steps == 40
    # the first step, each loss line (steps 7, 14, 21, 28, 35), each epoch's end (20, 40): 8 events, not 40
    assert len(advances) == 8
    assert [e["postfix"] is not None for e in advances].count(True) == 6  # 7, 14, 21, 28, 35 and the last
    assert events[-1] == {"kind": "close", "name": "train"}


def test_without_an_interval_every_step_is_pushed():
    geo, events = _run(push_interval=0.0, epochs=1)
    assert [e["n"] for e in events if e["kind"] == "advance"] == [1] * geo.steps_per_epoch


def test_other_ranks_push_nothing():
    _, events = _run(push_interval=0.0, rank=1)
    assert events == []
