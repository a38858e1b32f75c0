"""Class balance: ratio, oversampling, undersampling; deterministic."""
import numpy as np
import pytest

from domainft.data.balance import balance_repeats, class_ratio, target_counts


def test_ratio_ignores_empty_classes():
    assert class_ratio([10, 5, 0]) == 2.0
    assert class_ratio([0, 0]) is None


def test_under_limit_is_unchanged():
    assert target_counts([30, 10], 3.0, "oversample").tolist() == [30, 10]


def test_oversample_raises_minorities_to_the_limit():
    assert target_counts([100, 10, 40, 0], 2.0, "oversample").tolist() == [100, 50, 50, 0]


def test_undersample_cuts_majorities_to_the_limit():
    assert target_counts([100, 10, 25], 2.0, "undersample").tolist() == [20, 10, 20]


def test_none_leaves_counts():
    assert target_counts([100, 1], 1.0, "none").tolist() == [100, 1]


@pytest.mark.parametrize("method", ["oversample", "undersample"])
def test_repeats_reach_target_and_ratio(method):
    labels = np.array([0] * 90 + [1] * 7 + [2] * 30)
    rep = balance_repeats(labels, 3, 1.5, method, seed=1)
    after = np.bincount(labels, weights=rep, minlength=3)
    assert after.max() / after.min() <= 1.5
    assert rep.min() >= 0 and (rep[labels == 2] >= 0).all()
    np.testing.assert_array_equal(rep, balance_repeats(labels, 3, 1.5, method, seed=1))
    if method == "oversample":
        assert (rep >= 1).all() and after[0] == 90 and after[1] == 60
    else:
        assert set(np.unique(rep)) <= {0, 1} and after[1] == 7 and after[0] == 10


def test_oversample_copies_every_minority_row_evenly():
    labels = np.array([0] * 10 + [1] * 3)
    rep = balance_repeats(labels, 2, 1.0, "oversample", seed=0)
    assert rep[labels == 1].tolist() in ([4, 3, 3], [3, 4, 3], [3, 3, 4])
    assert (rep[labels == 0] == 1).all()
