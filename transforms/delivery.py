"""Delivery problems: stalls concentrated in time on one CDN / ASN / country.

The test (docs/detection.md) works on *cells*: per (value, wall-clock
bucket), the distinct viewers on the value who began a stall there (k) and
the views of the value active there (n). ``delivery_alerts`` builds the
cells from a set of views at once; sharded and incremental,
``DeliveryCells`` (keyed by dimension and value) keeps them up to date from
``DeliveryDelta``s and reports the cells that changed to ``DeliveryTest``
(keyed by dimension), which compares each value with the others in the
same bucket, runs the alert lifecycle and sends the dimension's delivery
windows (what explains stalls) to the viewer and content stages.

State bounds: DeliveryCells, per (dimension, value): one count per bucket
of the retention window, and the stalled viewers of those buckets.
DeliveryTest, per dimension: one (k, n) per (value, bucket) of the window,
and the stalled viewers of the buckets next to a bucket with at least
``min_viewers`` of them (an alert's extent can only reach those).
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable, NamedTuple, Optional

from apache_beam import pvalue

from transforms.alerting import Lifecycle, alert_id, breakdown, delivery_windows
from transforms.broadcast import DeliveryWindows, Rank, next_rank
from transforms.contributions import DeliveryDelta, delivery_facts
from transforms.facts import view_facts
from transforms.model import Alert, Cause, View
from transforms.spans import runs, span_deltas
from transforms.stats import binomial_sf
from transforms.thresholds import Thresholds

# Prior weight (viewer-buckets) of the dimension-wide rate in each reference rate.
_PRIOR = 50.0
WINDOWS = "windows"


class Cell(NamedTuple):
    k: int                                       # distinct viewers who began a stall here
    n: int                                       # views active here
    viewers: Optional[tuple[tuple[str, str], ...]]   # (viewer, video of their first view); None: not sent


def test_cells(dimension: str, cells: dict[tuple[str, int], Cell], t: Thresholds) -> list[Alert]:
    """Test every (value, bucket) with stalls against the other values in the same bucket."""
    total_k: collections.Counter = collections.Counter()
    total_n: collections.Counter = collections.Counter()
    stalled = 0
    for (_, bucket), cell in cells.items():
        if cell.k > 0:
            total_k[bucket] += cell.k
            stalled += 1
    for (_, bucket), cell in cells.items():
        if bucket in total_k:
            total_n[bucket] += cell.n
    all_k, all_n = sum(total_k.values()), sum(total_n.values())
    if not all_n:
        return []
    global_rate = all_k / all_n
    tests = max(1, stalled)
    flagged: dict[str, list[tuple[int, float, float, float]]] = collections.defaultdict(list)
    for (value, bucket), cell in cells.items():
        k, n = cell.k, cell.n
        if k < t.min_viewers or n <= 0:
            continue
        rest_k, rest_n = total_k[bucket] - k, total_n[bucket] - n
        reference = (rest_k + _PRIOR * global_rate) / (max(0, rest_n) + _PRIOR)
        observed = k / n
        if observed < t.min_rate_ratio * reference:
            continue
        p = binomial_sf(k, n, reference)
        if p < t.delivery_alpha / tests:
            flagged[value].append((bucket, p, reference, observed))
    alerts = []
    for value in sorted(flagged):
        for run in runs(sorted(flagged[value]), max_step=2):   # bridge a single quiet bucket
            alerts.append(_delivery_alert(dimension, value, run, cells, t))
    return alerts


def _delivery_alert(dimension: str, value: str, run, cells: dict[tuple[str, int], Cell],
                    t: Thresholds) -> Alert:
    first, last = run[0][0], run[-1][0]
    viewers: dict[str, str] = {}
    for bucket in range(first, last + 1):
        cell = cells.get((value, bucket))
        for viewer, video in (cell.viewers or ()) if cell is not None else ():
            viewers.setdefault(viewer, video)
    best = min(run, key=lambda c: c[1])
    peak = cells[(value, best[0])]       # the bucket the rates come from
    return Alert(
        alert_id=alert_id("delivery", dimension, value, first),
        cause=Cause.DELIVERY, video_id=None, rendition=None, start_ms=None, end_ms=None,
        dimension=dimension, value=value, viewer_id=None,
        start_ts=first * t.delivery_bucket_ms,
        end_ts=(last + 1) * t.delivery_bucket_ms,
        affected_viewers=peak.k, exposed_viewers=peak.n,
        stalls=sum(cells[(value, c[0])].k for c in run),
        baseline_rate=round(best[2], 6), observed_rate=round(best[3], 6),
        p_value=best[1],
        breakdown=breakdown(video_id=viewers.values()),
    )


def delivery_alerts(views: Iterable[View], t: Thresholds) -> list[Alert]:
    """CDN / ASN / country values whose viewers stall together.

    One alert per (dimension, value, wall-clock window). In each bucket, the
    share of a value's active views that stalled is tested (one-sided
    binomial) against the share among the other values of the same dimension
    in the same bucket, so a content fault, which hits every CDN alike,
    cancels out.
    """
    active: dict[str, dict[tuple[str, int], int]] = collections.defaultdict(dict)
    stalled: dict[str, dict[tuple[str, int], dict[str, str]]] = collections.defaultdict(dict)
    for view in sorted(views, key=lambda v: v.view_key):
        facts = view_facts(view, t.delivery_dimensions)
        for (dimension, value), fact in delivery_facts(facts, t.delivery_dimensions,
                                                       t.delivery_bucket_ms).items():
            for bucket in range(fact.first, fact.last + 1):
                cell = (value, bucket)
                active[dimension][cell] = active[dimension].get(cell, 0) + 1
            for bucket in fact.stall_buckets:
                stalled[dimension].setdefault((value, bucket), {}).setdefault(view.viewer_id,
                                                                              view.video_id)
    alerts = []
    for dimension in sorted(active):
        cells = {cell: Cell(len(stalled[dimension].get(cell, {})), n,
                            tuple(stalled[dimension].get(cell, {}).items()))
                 for cell, n in active[dimension].items()}
        alerts += test_cells(dimension, cells, t)
    return alerts


# -- sharded and incremental ----------------------------------------------------------

class CellReport(NamedTuple):
    """The cells of one value that changed: (bucket, k, n, viewers or None)."""

    value: str
    rank: Rank
    cells: tuple[tuple[int, int, int, Optional[tuple[tuple[str, str], ...]]], ...]


@dataclasses.dataclass
class _Value:
    active: dict = dataclasses.field(default_factory=dict)     # bucket -> active views
    stalled: dict = dataclasses.field(default_factory=dict)    # bucket -> {viewer: {view_key: video}}
    dirty: set = dataclasses.field(default_factory=set)
    detailed: set = dataclasses.field(default_factory=set)     # buckets last sent with viewers
    cutoff: Optional[int] = None
    epoch: Optional[int] = None
    seq: int = 0


class DeliveryCells:
    """Evaluator of one (dimension, value)'s cells. Input: DeliveryDelta.
    Output: (dimension, CellReport)."""

    def __init__(self, t: Thresholds, retention_ms: int) -> None:
        self._t, self._retention_ms = t, retention_ms

    def empty(self, key: str) -> _Value:
        return _Value()

    def urgent(self, d: DeliveryDelta) -> bool:
        return bool(d.new and set(d.new.stall_buckets) - set(d.old.stall_buckets if d.old else ()))

    def fold(self, acc: _Value, d: DeliveryDelta, ts_ms: int) -> _Value:
        old, new = d.old, d.new
        floor = acc.cutoff if acc.cutoff is not None else -(1 << 62)
        for first, last, delta in span_deltas([(old.first, old.last)] if old else [],
                                              [(new.first, new.last)] if new else []):
            for bucket in range(max(first, floor), last + 1):
                count = acc.active.get(bucket, 0) + delta
                if count:
                    acc.active[bucket] = count
                else:
                    acc.active.pop(bucket, None)
                acc.dirty.add(bucket)
        for bucket in set(old.stall_buckets if old else ()):
            views = acc.stalled.get(bucket, {}).get(d.viewer_id, {})
            views.pop(d.view_key, None)
            if not views:
                acc.stalled.get(bucket, {}).pop(d.viewer_id, None)
                if bucket in acc.stalled and not acc.stalled[bucket]:
                    del acc.stalled[bucket]
            acc.dirty.add(bucket)
        for bucket in set(new.stall_buckets if new else ()):
            if bucket >= floor:
                acc.stalled.setdefault(bucket, {}).setdefault(d.viewer_id, {})[d.view_key] = \
                    new.video_id
                acc.dirty.add(bucket)
        return acc

    def evaluate(self, key: str, acc: _Value, as_of_ms: int, settled: bool):
        dimension, value = key.split("\x1f", 1)
        if self._retention_ms > 0:
            cutoff = (as_of_ms - self._retention_ms) // self._t.delivery_bucket_ms
            if acc.cutoff is None or cutoff > acc.cutoff:
                acc.cutoff = cutoff
                for table in (acc.active, acc.stalled):
                    for bucket in [b for b in table if b < cutoff]:
                        del table[bucket]
                acc.detailed = {b for b in acc.detailed if b >= cutoff}
                acc.dirty = {b for b in acc.dirty if b >= cutoff}
        near = {b + step for b, viewers in acc.stalled.items()
                if len(viewers) >= self._t.min_viewers for step in (-1, 0, 1)}
        detailed = {b for b in near if b in acc.stalled}
        report = sorted(acc.dirty | (detailed ^ acc.detailed))
        acc.dirty.clear()
        acc.detailed = detailed
        if not report:
            return [], None
        cells = []
        for bucket in report:
            viewers = acc.stalled.get(bucket, {})
            cells.append((bucket, len(viewers), acc.active.get(bucket, 0),
                          tuple((viewer, views[min(views)]) for viewer, views in sorted(viewers.items()))
                          if bucket in detailed else None))
        return [(dimension, CellReport(value, next_rank(acc, as_of_ms), tuple(cells)))], None


@dataclasses.dataclass
class _Dimension:
    cells: dict = dataclasses.field(default_factory=dict)      # (value, bucket) -> (rank, Cell)
    sent: dict = dataclasses.field(default_factory=dict)       # value -> {alert_id: Alert}
    cutoff: Optional[int] = None
    epoch: Optional[int] = None
    seq: int = 0


class DeliveryTest:
    """Evaluator of one dimension's test and alert lifecycle. Input:
    CellReport. Outputs: Alert; (None, DeliveryWindows) on WINDOWS after
    every evaluation (it is also the delivery clock of the causal hold)."""

    def __init__(self, t: Thresholds, lifecycle: Lifecycle, retention_ms: int) -> None:
        self._t, self._lifecycle, self._retention_ms = t, lifecycle, retention_ms

    def empty(self, key: str) -> _Dimension:
        return _Dimension()

    def fold(self, acc: _Dimension, report: CellReport, ts_ms: int) -> _Dimension:
        for bucket, k, n, viewers in report.cells:
            cell = (report.value, bucket)
            seen = acc.cells.get(cell)
            if seen is None or report.rank > seen[0]:
                acc.cells[cell] = (report.rank, Cell(k, n, viewers))
        return acc

    def evaluate(self, dimension: str, acc: _Dimension, as_of_ms: int, settled: bool):
        if self._retention_ms > 0:
            cutoff = (as_of_ms - self._retention_ms) // self._t.delivery_bucket_ms
            if acc.cutoff is None or cutoff > acc.cutoff:
                acc.cutoff = cutoff
                for cell in [c for c in acc.cells if c[1] < cutoff]:
                    del acc.cells[cell]
        cells = {cell: c for cell, (_, c) in acc.cells.items() if c.k or c.n}
        found = test_cells(dimension, cells, self._t)
        by_value: dict[str, list[Alert]] = collections.defaultdict(list)
        for alert in found:
            by_value[alert.value].append(alert)
        out, wakes = [], []
        for value in sorted(set(by_value) | set(acc.sent)):
            alerts, sent, wake = self._lifecycle(by_value.get(value, []), acc.sent.get(value, {}),
                                                 as_of_ms, settled)
            out += alerts
            if wake is not None:
                wakes.append(wake)
            if sent:
                acc.sent[value] = sent
            else:
                acc.sent.pop(value, None)
        windows = DeliveryWindows(dimension, next_rank(acc, as_of_ms), delivery_windows(found),
                                  as_of_ms)
        out.append(pvalue.TaggedOutput(WINDOWS, (None, windows)))
        return out, min(wakes, default=None)
