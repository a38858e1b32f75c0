"""Best-epoch tracking and early stopping: a pure function of each epoch's metric value."""
from domainft.core.selection import BestSoFar, track_best


def _run(values, higher=True, patience=None):
    best, seen = BestSoFar(), []
    for epoch, v in enumerate(values, 1):
        best = track_best(best, epoch, v, higher, patience)
        seen.append(best)
        if best.stopped_early:
            break
    return seen


def test_higher_is_better_keeps_the_first_of_equal_values():
    last = _run([0.5, 0.7, 0.7, 0.6])[-1]
    assert (last.value, last.epoch, last.stale_epochs, last.stopped_early) == (0.7, 2, 2, None)


def test_lower_is_better_for_the_loss():
    last = _run([1.0, 0.8, 0.9], higher=False)[-1]
    assert (last.value, last.epoch, last.stale_epochs) == (0.8, 2, 1)


def test_patience_stops_after_that_many_epochs_without_improvement_and_stays_stopped():
    seen = _run([0.5, 0.6, 0.6, 0.55, 0.9], patience=2)
    assert [b.stopped_early for b in seen] == [None, None, None, 4]  # epochs 3 and 4 did not improve on 2
    assert seen[-1].epoch == 2
    assert track_best(seen[-1], 5, 0.9, True, 2).stopped_early == 4  # once stopped, stopped


def test_no_patience_never_stops():
    assert _run([0.9, 0.1, 0.1, 0.1])[-1].stopped_early is None
