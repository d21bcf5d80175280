"""AggregateMetrics: per-minute QoE aggregates overall and per dimension value."""

from __future__ import annotations

import dataclasses
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration

from transforms.model import MetricRow, View
from transforms.rolling import (Member, RollingEvaluate, own_stage, retraction, use_state,
                                with_event_ms)

DIMENSIONS = ("video_id", "cdn", "asn", "country", "browser", "os", "device",
              "rendition", "player_name", "stream_type")


def percentile(sorted_values: list[float], q: float) -> Optional[float]:
    """Linear-interpolated percentile (numpy's default) of sorted values."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class Contribution(NamedTuple):
    """What one view adds to a metric cell."""

    watch_ms: int
    rebuffer_ms: int
    rebuffer_count: int
    failure: bool
    ebvs: bool
    startup_ms: Optional[int]


def contribution(view: View) -> Contribution:
    return Contribution(view.watch_ms, view.rebuffer_ms, view.rebuffer_count,
                        view.playback_failure, view.exited_before_start, view.startup_ms)


def cell_key(minute_ms: int, dimension: str, value: str) -> str:
    """A cell as a state key (a string: state keys need a deterministic coder)."""
    return f"{minute_ms}\x1f{dimension}\x1f{value}"


def to_row(key: str, parts: list[Contribution], version: int = 1) -> MetricRow:
    """The cell's row; no parts (every view moved to another cell) is a row of zeros."""
    minute, dimension, value = key.split("\x1f", 2)
    minute_ms = int(minute)
    views = len(parts)
    watch = sum(p.watch_ms for p in parts)
    rebuffer_ms = sum(p.rebuffer_ms for p in parts)
    rebuffers = sum(p.rebuffer_count for p in parts)
    startups = sorted(p.startup_ms for p in parts if p.startup_ms is not None)
    return MetricRow(
        minute_ms=minute_ms, dimension=dimension, value=value, views=views,
        watch_ms=watch, rebuffer_ms=rebuffer_ms, rebuffer_count=rebuffers,
        startup_p50_ms=percentile(startups, 0.50), startup_p95_ms=percentile(startups, 0.95),
        rebuffer_pct=100.0 * rebuffer_ms / watch if watch else 0.0,
        rebuffer_per_min=rebuffers * 60_000.0 / watch if watch else 0.0,
        playback_failure_pct=100.0 * sum(p.failure for p in parts) / views if views else 0.0,
        ebvs_pct=100.0 * sum(p.ebvs for p in parts) / views if views else 0.0,
        version=version,
    )


def evaluate_cell(key, parts: list[Contribution], as_of: int,
                  sent: Optional[MetricRow], settled: bool = True) -> tuple[list[MetricRow], MetricRow, None]:
    """RollingEvaluate's evaluator: the cell's row, again with version + 1 if it changed."""
    version = sent.version + 1 if sent is not None else 1
    row = to_row(key, parts, version)
    if sent is not None and dataclasses.replace(sent, version=version) == row:
        return [], sent, None
    if sent is None and not parts:
        return [], None, None
    return [row], row, None


def metric_keys(view: View, minute_ms: int):
    """(minute, dimension, value) cells a view counts in, bucketed by view end
    time (Mux buckets quality metrics by the end of the view)."""
    minute = view.end_ms // minute_ms * minute_ms
    yield (minute, "all", "all"), view
    for dimension in DIMENSIONS:
        value = getattr(view, dimension)
        if value is not None:
            yield (minute, dimension, str(value)), view


def view_cells(view_key: str, view: View, minute_ms: int) -> list[tuple[str, Member]]:
    """(cell, Member) for each cell a view version counts in: both paths send these."""
    part = contribution(view)
    return [(cell_key(*key), Member(view_key, (view.version, 0), view.end_ms, part))
            for key, _ in metric_keys(view, minute_ms)]


class _ViewCellsFn(beam.DoFn):
    """Per view_key: which cells its last version counted in. A new version
    is sent to its cells, and retracted from cells it no longer belongs to
    (a resumed view ends in a later minute)."""

    SENT = userstate.ReadModifyWriteStateSpec("sent", coders.PickleCoder())
    GC = userstate.TimerSpec("gc", TimeDomain.WATERMARK)

    def __init__(self, minute_ms: int, gc_ms: int) -> None:
        self._minute_ms = minute_ms
        self._gc_ms = gc_ms

    def process(self, element: tuple[str, View], ts=beam.DoFn.TimestampParam,
                sent=beam.DoFn.StateParam(SENT), gc=beam.DoFn.TimerParam(GC)):
        view_key, view = element
        version, cells = sent.read() or (0, ())
        if view.version > version:         # else an older version, overtaken on the way
            yield from self._send(view_key, view, cells, sent, gc, ts)

    def _send(self, view_key: str, view: View, cells, sent, gc, ts):
        members = view_cells(view_key, view, self._minute_ms)
        yield from members
        current = tuple(cell for cell, _ in members)
        for cell in set(cells) - set(current):
            yield cell, retraction(view_key, view.end_ms)
        sent.write((view.version, current))
        gc.set(ts + Duration(micros=self._gc_ms * 1000))

    @userstate.on_timer(GC)
    def on_gc(self, sent=beam.DoFn.StateParam(SENT)):
        sent.clear()
        return ()


def _latest_cells(element: tuple[str, Iterable[tuple[int, View]]], minute_ms: int):
    """The bounded-input path of _ViewCellsFn: all versions of a view_key at
    once (with their event times), so only the latest is sent, to its cells
    (nothing to retract), at that version's time."""
    view_key, versions = element
    ms, view = max(versions, key=lambda item: item[1].version)
    for cell in view_cells(view_key, view, minute_ms):
        yield TimestampedValue(cell, ms / 1000)


class PerMinuteCells(beam.PTransform):
    """Base of the per-minute cell aggregations (AggregateMetrics,
    AggregateResponses): the bucket width, and cell state released twice the
    sessionizer's inactivity after its newest member."""

    def __init__(self, minute_ms: int = 60_000, inactivity_ms: int = 3_600_000,
                 stateful: Optional[bool] = None) -> None:
        super().__init__()
        if minute_ms <= 0 or inactivity_ms <= 0:
            raise ValueError(f"minute_ms and inactivity_ms must be > 0, got {minute_ms}, {inactivity_ms}")
        self._minute_ms = minute_ms
        self._gc_ms = 2 * inactivity_ms
        self._stateful = stateful


class AggregateMetrics(PerMinuteCells):
    """Per-minute QoE per dimension value.

    Input:  PCollection[View], versions of a view_key replacing each other.
    Output: PCollection[MetricRow], one per (minute of view end, dimension,
            value), with ``dimension="all"`` for the whole audience; emitted
            once the watermark passes the views in it, and again with
            ``version`` + 1 when a view update changes it (in batch: once).

    Args:
      minute_ms: width of a time bucket in ms (60 000 by default).
      inactivity_ms: how long a view can still be updated (cell state is
        released twice that long after its last view).
      stateful: see ``rolling.use_state`` (None: grouped once for a bounded
        input, keyed state and timers for an unbounded one).
    """

    def expand(self, views: beam.PCollection) -> beam.PCollection:
        keyed = (views
                 | "KeyByView" >> beam.Map(lambda v: (v.view_key, v))
                     .with_output_types(tuple[str, View]))
        stateful = use_state(self._stateful, views, early=False)
        if stateful:
            cells = (keyed
                     | "OwnStage" >> own_stage()
                     | "ToCells" >> beam.ParDo(_ViewCellsFn(self._minute_ms, self._gc_ms))
                         .with_output_types(tuple[str, Member]))
        else:
            cells = (keyed
                     | "WithTime" >> beam.Map(with_event_ms)
                     | "GroupVersions" >> beam.GroupByKey()
                     | "ToCells" >> beam.FlatMap(_latest_cells, self._minute_ms)
                         .with_output_types(tuple[str, Member]))
        return (cells
                | "Rows" >> RollingEvaluate(evaluate_cell, settle_ms=1_000, gc_ms=self._gc_ms,
                                            stateful=stateful))
