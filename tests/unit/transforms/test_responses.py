"""AggregateResponses: per-minute delivery rows from CMCD response reports, worked by hand
from docs/metrics.md ("Delivery evidence from response reports")."""

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline, test_stream, util
from apache_beam.transforms.window import TimestampedValue

from tests.builders import T0_MS, ev, fn_api_pipeline
from transforms.metrics import percentile
from transforms.model import Beacon
from transforms.responses import (AggregateResponses, ResponseTally,
                                  counted_percentile, is_response, response_cells, rounded_ms,
                                  to_response_row)

MIN0, MIN1 = T0_MS, T0_MS + 60_000       # T0 is on a minute boundary


def rr(at_s: float, code=200, ttfb=None, ttlb=None, **fields) -> Beacon:
    """A CMCD response-received report at ``at_s`` seconds from T0."""
    return ev("heartbeat", at_s, protocol="cmcd", cmcd_event="rr", response_code=code,
              ttfb_ms=ttfb, ttlb_ms=ttlb, **fields)


def stamped(beacons):
    return [TimestampedValue(b, b.event_ms / 1000) for b in beacons]


def at(seconds: float) -> float:
    return T0_MS / 1000 + seconds


def row_tuple(row):
    """A row with its floats rounded, for exact comparison."""
    def r(x):
        return None if x is None else round(x, 6)
    return (row.minute_ms, row.dimension, row.value, row.requests, row.http_errors,
            r(row.http_error_pct), r(row.ttfb_p50_ms), r(row.ttfb_p95_ms), r(row.ttlb_p50_ms),
            row.version)


def tally_of(*responses) -> ResponseTally:
    tally = ResponseTally()
    for response in responses:
        tally.add(response)
    return tally


# Pure functions

@pytest.mark.parametrize("value, expected", [
    (0, 0), (7, 7), (99, 99),                 # exact below 100 ms
    (100, 100), (104, 100), (105, 110),       # 2 significant digits, half up
    (994, 990), (995, 1_000), (1_249, 1_200), (1_250, 1_300),
    (99.4, 99), (250.0, 250),                 # floats are rounded to whole ms first
    (604_800_000, 600_000_000),               # the parser's cap: 7 days
])
def test_rounded_ms__exact_below_100_ms_two_significant_digits_above(value, expected):
    assert rounded_ms(value) == expected


@pytest.mark.parametrize("value", [None, -1, -0.5, float("nan"), float("inf"), "120", True])
def test_rounded_ms__missing_negative_and_non_numeric_values_are_skipped(value):
    assert rounded_ms(value) is None


def test_rounded_ms__371_distinct_values_below_100_s():
    # 0..99, then 90 per decade (100..990, 1,000..9,900, 10,000..99,000), plus 100,000 (99,500+)
    assert len({rounded_ms(v) for v in range(100_000)}) == 100 + 3 * 90 + 1


def test_rounded_ms__within_5_percent_and_two_significant_digits_up_to_the_cap():
    rng = random.Random(5)
    for _ in range(20_000):
        value = int(10 ** rng.uniform(2, 8.78))           # 100 ms .. 7 days
        counted = rounded_ms(value)
        assert abs(counted - value) <= 0.05 * value
        assert len(str(counted).rstrip("0")) <= 2
    assert rounded_ms(rounded_ms(123_456)) == rounded_ms(123_456)   # counting is idempotent


def test_counted_percentile__of_nothing_is_none():
    assert counted_percentile({}, 0.5) is None
    assert counted_percentile({120: 0}, 0.5) is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_counted_percentile__equals_percentile_of_the_expanded_values(seed):
    rng = random.Random(seed)
    for _ in range(200):
        size = rng.randint(1, 300)
        values = [rounded_ms(rng.lognormvariate(5, 1.5)) for _ in range(size)]
        counts = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        for q in (0.0, 0.05, 0.5, 0.95, 0.99, 1.0):
            assert counted_percentile(counts, q) == percentile(sorted(values), q), (values, q)


def test_is_response__rr_reports_and_beacons_with_a_status_or_timings():
    assert is_response(rr(1, code=None))
    assert is_response(ev("heartbeat", 1, response_code=200))
    assert is_response(ev("heartbeat", 1, ttfb_ms=40))
    assert not is_response(ev("heartbeat", 1, cmcd_event="t"))
    assert not is_response(ev("play", 1, 0))


def test_response_cells__all_plus_cdn_and_host_when_known():
    cells = response_cells(rr(1, 404, 1_234, 50, cdn="cdn-a", host="edge1.example"))
    assert cells == [(("all", "all"), (404, 1_200, 50)), (("cdn", "cdn-a"), (404, 1_200, 50)),
                     (("host", "edge1.example"), (404, 1_200, 50))]
    assert [cell for cell, _ in response_cells(rr(1))] == [("all", "all")]


def test_tally_responses_fn__counts_errors_over_responses_with_a_status_and_skips_bad_values():
    tally = tally_of((200, 40, 300), (404, 60, None), (503, -5, 900), (None, 80, 500),
                     (-1, None, float("nan")), (0, 120, 1_234))
    assert (tally.requests, tally.http_errors, tally.with_code) == (6, 2, 4)  # -1, None: no status
    assert dict(tally.ttfb) == {40: 1, 60: 1, 80: 1, 120: 1}                  # -5 and None skipped
    assert dict(tally.ttlb) == {300: 1, 900: 1, 500: 1, 1_200: 1}
    row = to_response_row(MIN0, ("all", "all"), tally, version=2)
    assert row.http_error_pct == 50.0                     # 2 of the 4 with a status
    assert (row.ttfb_p50_ms, row.ttlb_p50_ms, row.version) == (70.0, 700.0, 2)
    assert row.ttfb_p95_ms == pytest.approx(114.0)                             # 80 + 0.85 x 40


def test_response_tally__merged_partial_tallies_equal_one_tally():
    """What a cell folds: one tally per bundle (transforms/responses.py)."""
    rng = random.Random(11)
    responses = [(rng.choice([200, 206, 404, 503, None]), rng.randint(-10, 3_000),
                  rng.choice([None, rng.randint(0, 20_000)])) for _ in range(500)]
    merged = ResponseTally()
    for part in [tally_of(*responses[i::3]) for i in range(3)]:
        merged.merge(part)
    assert merged == tally_of(*responses)


def test_to_response_row__no_status_is_zero_percent_and_no_timings_are_none():
    row = to_response_row(MIN1, ("cdn", "cdn-b"), tally_of((None, None, None)))
    assert (row.requests, row.http_errors, row.http_error_pct) == (1, 0, 0.0)
    assert (row.ttfb_p50_ms, row.ttfb_p95_ms, row.ttlb_p50_ms) == (None, None, None)


def test_aggregate_responses__refuses_a_bucket_of_zero():
    with pytest.raises(ValueError, match="minute_ms"):
        AggregateResponses(minute_ms=0)


# Pipelines

def test_aggregate_responses__batch_rows_per_minute_cdn_and_host():
    beacons = [
        # minute 0
        rr(5, 200, ttfb=40, ttlb=300, cdn="cdn-a", host="h1"),
        rr(20, 404, ttfb=60, ttlb=500, cdn="cdn-a", host="h2"),
        rr(30, 200, ttfb=120, ttlb=1_234, cdn="cdn-b", host="h1"),   # ttlb counted as 1,200
        rr(50, 503, ttfb=80, ttlb=None, cdn="cdn-b", host="h2"),     # failed: no last byte
        ev("play", 10, 0, cdn="cdn-a"),                              # not a response
        ev("heartbeat", 15, 5, protocol="cmcd", cmcd_event="t"),     # an interval report
        # minute 1
        rr(70, 200, ttfb=30, ttlb=250, cdn="cdn-a", host="h2"),
        rr(90, None, ttfb=50, ttlb=400, cdn="cdn-b", host="h1"),     # no rc: not in the error share
    ]
    expected = [
        # minute 0, all: 4 requests, 404 + 503 of 4 statuses; ttfb 40 60 80 120; ttlb 300 500 1,200
        (MIN0, "all", "all", 4, 2, 50.0, 70.0, 114.0, 500.0, 1),      # p95: 80 + 0.85 x 40
        (MIN0, "cdn", "cdn-a", 2, 1, 50.0, 50.0, 59.0, 400.0, 1),     # ttfb 40 60; ttlb 300 500
        (MIN0, "cdn", "cdn-b", 2, 1, 50.0, 100.0, 118.0, 1_200.0, 1),  # ttfb 80 120; ttlb 1,200
        (MIN0, "host", "h1", 2, 0, 0.0, 80.0, 116.0, 750.0, 1),       # ttfb 40 120; ttlb 300 1,200
        (MIN0, "host", "h2", 2, 2, 100.0, 70.0, 79.0, 500.0, 1),      # ttfb 60 80; ttlb 500
        # minute 1, all: 2 requests, one status (200); ttfb 30 50; ttlb 250 400
        (MIN1, "all", "all", 2, 0, 0.0, 40.0, 49.0, 325.0, 1),
        (MIN1, "cdn", "cdn-a", 1, 0, 0.0, 30.0, 30.0, 250.0, 1),
        (MIN1, "cdn", "cdn-b", 1, 0, 0.0, 50.0, 50.0, 400.0, 1),      # no status: 0 %
        (MIN1, "host", "h2", 1, 0, 0.0, 30.0, 30.0, 250.0, 1),
        (MIN1, "host", "h1", 1, 0, 0.0, 50.0, 50.0, 400.0, 1),
    ]
    with fn_api_pipeline() as p:
        rows = (p | beam.Create(stamped(beacons)) | AggregateResponses(60_000, 3_600_000))
        util.assert_that(rows | beam.Map(row_tuple), util.equal_to(expected))


def test_aggregate_responses__a_late_response_re_emits_the_cell_as_version_2():
    events = (test_stream.TestStream()
              .advance_watermark_to(at(0))
              .add_elements(stamped([rr(10, 200, ttfb=40), rr(20, 404, ttfb=60)]))
              .advance_watermark_to(at(70))            # minute 0 is complete: version 1
              .add_elements(stamped([rr(30, 503, ttfb=80)]))   # 40 s behind, lateness 600 s
              .advance_watermark_to(at(300))
              .advance_watermark_to_infinity())
    with test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"])) as p:
        rows = p | events | AggregateResponses(60_000, inactivity_ms=600_000)
        util.assert_that(rows | beam.Map(row_tuple), util.equal_to([
            (MIN0, "all", "all", 2, 1, 50.0, 50.0, 59.0, None, 1),     # on time: 200, 404
            (MIN0, "all", "all", 3, 2, round(200 / 3, 6), 60.0, 78.0, None, 2),  # + the late 503
        ]))
