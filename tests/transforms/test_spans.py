"""Difference arrays against direct counting."""

import random

from transforms.spans import add_span, coverage_at, coverage_totals, merge_diff, merge_first


def test_spans__coverage_matches_direct_counting():
    rng = random.Random(5)
    spans = [(a, a + rng.randint(0, 20)) for a in (rng.randint(-10, 100) for _ in range(200))]
    left, right = {}, {}
    for i, (a, b) in enumerate(spans):
        add_span(left if i % 2 else right, a, b)
    merge_diff(left, right)                       # merging halves == one accumulator
    points = range(-15, 130)
    direct = {p: sum(a <= p <= b for a, b in spans) for p in points}
    assert coverage_at(left, points) == direct
    assert coverage_totals(left) == (sum(direct.values()), sum(1 for v in direct.values() if v))


def test_merge_first__keeps_the_first_value_per_member():
    target = {1: {"u1": "a"}}
    merge_first(target, {1: {"u1": "b", "u2": "c"}, 2: {"u3": "d"}})
    assert target == {1: {"u1": "a", "u2": "c"}, 2: {"u3": "d"}}


def test_runs__group_by_index_gap():
    from transforms.spans import runs
    cells = [(1, "a"), (2, "b"), (4, "c"), (7, "d")]
    assert [[c[1] for c in r] for r in runs(cells, max_step=1)] == [["a", "b"], ["c"], ["d"]]
    assert [[c[1] for c in r] for r in runs(cells, max_step=2)] == [["a", "b", "c"], ["d"]]
