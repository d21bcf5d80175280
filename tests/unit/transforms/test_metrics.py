"""A metric row from its views, worked by hand from docs/metrics.md ("Aggregates")."""

import pytest

from tests.builders import make_view
from transforms.metrics import Contribution, cell_key, metric_keys, percentile, to_row


def test_percentile__of_nothing_is_none():
    assert percentile([], 0.5) is None


@pytest.mark.parametrize("values, q, expected", [
    ([700], 0.95, 700),
    ([100, 200, 300, 400], 0.5, 250),          # halfway between the 2nd and 3rd
    ([100, 200, 300, 400], 0.95, 385),         # position 2.85: 300 + 0.85 x 100
    ([100, 200, 300, 400, 5_000], 0.95, 4_080),  # position 3.8: 400 + 0.8 x 4,600
])
def test_percentile__linear_interpolation_between_closest_ranks(values, q, expected):
    assert percentile(values, q) == pytest.approx(expected)


def test_to_row__sums_shares_and_percentiles_of_four_views():
    # (watch, rebuffer ms, rebuffers, failure, ebvs, startup)
    parts = [Contribution(60_000, 3_000, 2, False, False, 400),
             Contribution(120_000, 0, 0, False, False, 800),
             Contribution(0, 0, 0, False, True, None),         # left before the first frame
             Contribution(30_000, 6_000, 1, True, False, 1_200)]
    row = to_row(cell_key(1_800_000, "cdn", "cdn-a"), parts, version=3)
    assert (row.minute_ms, row.dimension, row.value, row.version) == (1_800_000, "cdn", "cdn-a", 3)
    assert (row.views, row.watch_ms, row.rebuffer_ms, row.rebuffer_count) == (4, 210_000, 9_000, 3)
    assert row.startup_p50_ms == 800                              # of the 3 that started
    assert row.startup_p95_ms == pytest.approx(1_160)             # 800 + 0.9 x 400
    assert row.rebuffer_pct == pytest.approx(100 * 9_000 / 210_000)
    assert row.rebuffer_per_min == pytest.approx(3 / 3.5)         # 3 rebuffers in 3.5 watch minutes
    assert (row.playback_failure_pct, row.ebvs_pct) == (25.0, 25.0)


def test_to_row__a_cell_whose_views_all_moved_away_is_zeros():
    row = to_row(cell_key(60_000, "all", "all"), [], version=2)
    assert (row.views, row.watch_ms, row.startup_p50_ms, row.rebuffer_pct, row.ebvs_pct) == \
        (0, 0, None, 0.0, 0.0)


def test_metric_keys__a_view_counts_in_the_minute_it_ends_once_per_dimension():
    view = make_view("a", "u1", "vid", start_s=50, played=((0, 40, "720p"),), cdn="cdn-a")
    keys = [key for key, _ in metric_keys(view, 60_000)]
    minute = (view.end_ms // 60_000) * 60_000                   # ends at 90 s: minute 60 s
    assert view.start_ms // 60_000 != view.end_ms // 60_000
    assert {m for m, _, _ in keys} == {minute}
    assert ("all", "all") in {(d, v) for _, d, v in keys}
    assert ("cdn", "cdn-a") in {(d, v) for _, d, v in keys}
    assert len(keys) == len({(d, v) for _, d, v in keys})       # each dimension once
