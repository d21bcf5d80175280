"""AggregateMetrics: per-minute QoE aggregates overall and per dimension value."""

from __future__ import annotations

from typing import Iterable, Optional

import apache_beam as beam

from transforms.model import MetricRow, View

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


class _Acc:
    __slots__ = ("views", "watch_ms", "rebuffer_ms", "rebuffer_count", "failures",
                 "ebvs", "startups")

    def __init__(self) -> None:
        self.views = self.watch_ms = self.rebuffer_ms = self.rebuffer_count = 0
        self.failures = self.ebvs = 0
        self.startups: list[int] = []


class _QoeCombineFn(beam.CombineFn):
    def create_accumulator(self) -> _Acc:
        return _Acc()

    def add_input(self, acc: _Acc, view: View) -> _Acc:
        acc.views += 1
        acc.watch_ms += view.watch_ms
        acc.rebuffer_ms += view.rebuffer_ms
        acc.rebuffer_count += view.rebuffer_count
        acc.failures += view.playback_failure
        acc.ebvs += view.exited_before_start
        if view.startup_ms is not None:
            acc.startups.append(view.startup_ms)
        return acc

    def merge_accumulators(self, accs: Iterable[_Acc]) -> _Acc:
        accs = iter(accs)
        out = next(accs)
        for a in accs:
            out.views += a.views
            out.watch_ms += a.watch_ms
            out.rebuffer_ms += a.rebuffer_ms
            out.rebuffer_count += a.rebuffer_count
            out.failures += a.failures
            out.ebvs += a.ebvs
            out.startups.extend(a.startups)
        return out

    def extract_output(self, acc: _Acc) -> _Acc:
        return acc


def to_row(key: tuple[int, str, str], acc: _Acc) -> MetricRow:
    minute_ms, dimension, value = key
    startups = sorted(acc.startups)
    return MetricRow(
        minute_ms=minute_ms, dimension=dimension, value=value, views=acc.views,
        watch_ms=acc.watch_ms, rebuffer_ms=acc.rebuffer_ms, rebuffer_count=acc.rebuffer_count,
        startup_p50_ms=percentile(startups, 0.50), startup_p95_ms=percentile(startups, 0.95),
        rebuffer_pct=100.0 * acc.rebuffer_ms / acc.watch_ms if acc.watch_ms else 0.0,
        rebuffer_per_min=acc.rebuffer_count * 60_000.0 / acc.watch_ms if acc.watch_ms else 0.0,
        playback_failure_pct=100.0 * acc.failures / acc.views,
        ebvs_pct=100.0 * acc.ebvs / acc.views,
    )


def metric_keys(view: View, minute_ms: int):
    """(minute, dimension, value) cells a view counts in, bucketed by view end
    time (Mux buckets quality metrics by the end of the view)."""
    minute = view.end_ms // minute_ms * minute_ms
    yield (minute, "all", "all"), view
    for dimension in DIMENSIONS:
        value = getattr(view, dimension)
        if value is not None:
            yield (minute, dimension, str(value)), view


class AggregateMetrics(beam.PTransform):
    """Per-minute QoE per dimension value.

    Input:  PCollection[View] (global window).
    Output: PCollection[MetricRow], one per (minute of view end, dimension,
            value), with ``dimension="all"`` for the whole audience.

    Args:
      minute_ms: width of a time bucket in ms (60 000 by default).
    """

    def __init__(self, minute_ms: int = 60_000) -> None:
        super().__init__()
        if minute_ms <= 0:
            raise ValueError(f"minute_ms must be > 0, got {minute_ms}")
        self._minute_ms = minute_ms

    def expand(self, views: beam.PCollection) -> beam.PCollection:
        return (views
                | "KeyByCell" >> beam.FlatMap(metric_keys, self._minute_ms)
                | "CombineCells" >> beam.CombinePerKey(_QoeCombineFn())
                | "ToRows" >> beam.MapTuple(to_row))
