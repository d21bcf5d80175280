"""The pipeline agrees with an independent SQL implementation (bench/reference.sql, DuckDB).

The reference is written from docs/beacons.md, docs/metrics.md and docs/detection.md, not from
the pipeline's code. On two generated workloads, ``clean`` and ``small`` (the mess of the demo:
duplicates, reordered and malformed lines, clocks skewed by minutes to days), the two must agree
**exactly** on:

- every view: events, startup, EBVS, failure, rebuffer count and duration, watch and playing
  time, seeks and seek latency, furthest playhead;
- every (video, 5 s playhead bucket) cell of the stall profile: distinct viewers whose stall
  started there, and distinct viewers who played through;
- every metric row (minute of view end x dimension value): views, sums, startup p50/p95,
  rebuffer %, rebuffers per minute, failure %, EBVS %. Both use linear-interpolated percentiles;
  floats are compared to 1e-9 relative, the rest exactly.

Measured: equal in every field on clean (150 viewers, seed 23: 298 views, 10,844 profile cells,
2,349 metric rows) and small (500 viewers, seed 11: 979 views, 11,688 cells, 4,701 metric rows);
any difference is a bug in one of the two.
"""

from __future__ import annotations

import collections
import math

import pytest

from pipeline import cli
from tests import runs

pytestmark = pytest.mark.integration

BUCKET_MS = 5_000
EXACT = ("events", "rebuffer_count", "rebuffer_ms", "watch_ms", "playing_ms", "seek_count",
         "seek_ms", "max_playhead_ms", "play_requested", "playback_failure")


# (scenario, viewers, seed): the clean one, and one with the demo's mess.
WORKLOADS = {"clean": ("clean", 150, 23), "messy": ("small", 500, 11)}


@pytest.fixture(scope="module", params=sorted(WORKLOADS))
def both(request, tmp_path_factory):
    from bench import reference
    scenario, viewers, seed = WORKLOADS[request.param]
    source = tmp_path_factory.mktemp("workload")
    output = tmp_path_factory.mktemp("run")
    assert cli.main(["generate", f"--out={source}", f"--scenario={scenario}",
                     f"--viewers={viewers}", f"--seed={seed}"]) == 0
    runs.stallwatch(f"--source={source}", f"--output={output}")
    return (runs.views(str(output)), runs.metrics(str(output)),
            reference.run(str(source), threads=2, bucket_ms=BUCKET_MS))


def test_every_view_metric_equals_the_sql_reference(both):
    views, _, ref = both
    expected = {row["view_id"]: row for row in ref.views.to_pylist()}
    assert len(views) == len(expected) > 250
    mismatches = []
    for view in views:
        row = expected[view["view_id"]]
        want = {name: row[name] for name in EXACT}
        want["startup_ms"] = row["startup_raw"] if row["first_frame"] else None
        want["exited_before_start"] = (row["play_requested"] and not row["first_frame"]
                                       and not row["playback_failure"])
        got = {name: view[name] for name in want}
        if got != want:
            mismatches.append((view["view_id"], {k: (got[k], want[k]) for k in want if got[k] != want[k]}))
    assert mismatches == []
    assert sum(v["rebuffer_count"] for v in views) > 100        # the comparison has stalls to compare


def test_stall_profile_and_exposure_equal_the_sql_reference(both):
    views, _, ref = both
    stalled, exposed = collections.defaultdict(set), collections.defaultdict(set)
    for view in views:
        for stall in view["stalls"]:
            stalled[(view["video_id"], stall["playhead_ms"] // BUCKET_MS)].add(view["viewer_id"])
        for played in view["played"]:
            for bucket in range(played["start_ms"] // BUCKET_MS, played["end_ms"] // BUCKET_MS + 1):
                exposed[(view["video_id"], bucket)].add(view["viewer_id"])
    want_stalled = {(r["video_id"], r["bucket"]): r["stalled_viewers"] for r in ref.stalls.to_pylist()}
    want_exposed = {(r["video_id"], r["bucket"]): r["exposed_viewers"] for r in ref.exposure.to_pylist()}
    assert {k: len(v) for k, v in stalled.items()} == want_stalled
    assert {k: len(v) for k, v in exposed.items()} == want_exposed
    assert len(want_exposed) > 1_000


def test_every_metric_row_equals_the_sql_reference(both):
    _, metrics, ref = both
    key = ("minute_ms", "dimension", "value")
    got = {tuple(row[k] for k in key): row for row in metrics}
    want = {tuple(row[k] for k in key): row for row in ref.metrics.to_pylist()}
    assert set(got) == set(want) and len(want) > 1_000
    assert {dimension for _, dimension, _ in want} >= {"all", "video_id", "cdn", "rendition"}
    mismatches = []
    for cell, expected in want.items():
        for name, value in expected.items():
            if name in key:
                continue
            actual = got[cell][name]
            same = (actual is None and value is None) or (
                actual is not None and value is not None
                and math.isclose(actual, value, rel_tol=1e-9, abs_tol=1e-9))
            if not same:
                mismatches.append((cell, name, actual, value))
    assert mismatches == []
    # the comparison has percentiles, stalls, failures and EBVS to compare
    assert all(sum(1 for row in want.values() if row[name]) > 50
               for name in ("startup_p95_ms", "rebuffer_count", "playback_failure_pct", "ebvs_pct"))
