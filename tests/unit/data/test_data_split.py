"""Stratified split: per-class fractions, determinism, stability when another class changes."""
import numpy as np

from domainft.data.split import eval_count, stratified_split


def test_eval_count_bounds():
    assert eval_count(1, 0.2) == 0
    assert eval_count(2, 0.1) == 1
    assert eval_count(100, 0.2) == 20
    assert eval_count(3, 0.9) == 2


def test_stratified_fraction_per_class():
    labels = np.array([0] * 100 + [1] * 50 + [2] * 10)
    is_eval = stratified_split(labels, 0.2, seed=42)
    assert [int(is_eval[labels == c].sum()) for c in range(3)] == [20, 10, 2]


def test_deterministic_and_seeded():
    labels = np.array([0, 1] * 50)
    a, b = stratified_split(labels, 0.3, 7), stratified_split(labels, 0.3, 7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, stratified_split(labels, 0.3, 8))


def test_other_classes_do_not_move_when_one_class_grows():
    base = np.array([0] * 20 + [1] * 20)
    grown = np.concatenate([base, [1] * 15])
    a, b = stratified_split(base, 0.25, 3), stratified_split(grown, 0.25, 3)
    np.testing.assert_array_equal(a[:20], b[:20])
