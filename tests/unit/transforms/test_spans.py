"""Difference arrays against direct counting."""

import random

from transforms.spans import add_span, coverage_at, coverage_totals


def test_spans__coverage_matches_direct_counting():
    rng = random.Random(5)
    spans = [(a, a + rng.randint(0, 20)) for a in (rng.randint(-10, 100) for _ in range(200))]
    left = {}
    for a, b in spans:
        add_span(left, a, b)
    points = range(-15, 130)
    direct = {p: sum(a <= p <= b for a, b in spans) for p in points}
    assert coverage_at(left, points) == direct
    assert coverage_totals(left) == (sum(direct.values()), sum(1 for v in direct.values() if v))


def test_runs__group_by_index_gap():
    from transforms.spans import runs
    cells = [(1, "a"), (2, "b"), (4, "c"), (7, "d")]
    assert [[c[1] for c in r] for r in runs(cells, max_step=1)] == [["a", "b"], ["c"], ["d"]]
    assert [[c[1] for c in r] for r in runs(cells, max_step=2)] == [["a", "b", "c"], ["d"]]
