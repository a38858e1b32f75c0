"""Which epoch is best so far, and when patience runs out: a pure function of the epochs' metric values.

The worker keeps the result in its checkpointed state, so a resumed run continues the same count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class BestSoFar:
    value: Optional[float] = None  # the best metric value so far (None before the first epoch)
    epoch: Optional[int] = None
    stale_epochs: int = 0  # epochs since the best one
    stopped_early: Optional[int] = None  # the epoch after which patience ran out


def track_best(best: BestSoFar, epoch: int, value: float, higher_is_better: bool,
               patience: Optional[int] = None) -> BestSoFar:
    """`best` after an epoch scored `value`: a strictly better value becomes the best (a tie keeps the
    earlier epoch); otherwise one more stale epoch, and with `patience` stale epochs the run stops."""
    better = best.value is None or (value > best.value if higher_is_better else value < best.value)
    if better:
        best = BestSoFar(value, epoch, 0, best.stopped_early)
    else:
        best = BestSoFar(best.value, best.epoch, best.stale_epochs + 1, best.stopped_early)
    if patience and best.stale_epochs >= patience and best.stopped_early is None:
        best = BestSoFar(best.value, best.epoch, best.stale_epochs, epoch)
    return best
