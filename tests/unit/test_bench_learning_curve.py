"""The pure helpers of scripts/bench_learning_curve.py (subsets, dev-disjointness, uncertainty order)."""

import sys

from support import ROOT

sys.path.insert(0, str(ROOT / "scripts"))

import bench_learning_curve as lc  # noqa: E402

from dupq.data import Pair  # noqa: E402


def test_sizes_are_sorted_distinct_and_clipped_to_the_pool():
    assert lc.parse_sizes("1000,100,all,100,99999", 5000) == [100, 1000, 5000]


def test_subsets_are_nested_and_seeded():
    items = list(range(50))
    a = lc.nested_subsets(items, [5, 20, 50], seed=3)
    assert set(a[5]) <= set(a[20]) <= set(a[50]) and sorted(a[50]) == items
    assert a == lc.nested_subsets(items, [5, 20, 50], seed=3)
    assert a[20] != lc.nested_subsets(items, [20], seed=4)[20]


def test_pairs_sharing_a_dev_question_are_dropped():
    pairs = [Pair("a", "b", 1), Pair("c", "d", 0), Pair("e", "a", 0)]
    kept, dropped = lc.drop_sharing(pairs, lc.questions_of([Pair("a", "x", 1)]))
    assert kept == [Pair("c", "d", 0)] and dropped == 2


def test_uncertainty_takes_the_scores_nearest_the_threshold():
    assert lc.most_uncertain([0.9, 0.52, 0.1, 0.47, 0.5], 0.5, 3) == [4, 1, 3]


def test_best_of_picks_the_higher_ap():
    assert lc.best_of([{"ap": 0.8, "epochs": 1}, {"ap": 0.85, "epochs": 4}, None])["epochs"] == 4
    assert lc.best_of([]) is None
