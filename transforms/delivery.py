"""DetectDeliveryProblems: stalls concentrated in time on one CDN / ASN / country."""

from __future__ import annotations

import collections
from typing import Iterable

from transforms.alerting import alert_id, breakdown
from transforms.model import Alert, Cause, View
from transforms.spans import add_span, coverage_at, runs
from transforms.stats import binomial_sf
from transforms.thresholds import Thresholds

# Prior weight (viewer-buckets) of the dimension-wide rate in each reference rate.
_PRIOR = 50.0


class _DimensionAcc:
    """Per dimension: active views per (value, bucket) as difference arrays, and
    the stalled viewers per (value, bucket)."""

    __slots__ = ("active", "stalled")

    def __init__(self) -> None:
        self.active: dict[str, dict[int, int]] = {}
        self.stalled: dict[tuple[str, int], dict[str, str]] = {}


def add_to_dimension(acc: _DimensionAcc, item) -> None:
    """Add (value, first_bucket, last_bucket, ((bucket, viewer, video), ...))."""
    value, first, last, stalls = item
    add_span(acc.active.setdefault(value, {}), first, last)
    for bucket, viewer, video in stalls:
        acc.stalled.setdefault((value, bucket), {}).setdefault(viewer, video)


def find_delivery_alerts(dimension: str, acc: _DimensionAcc, t: Thresholds) -> list[Alert]:
    """Test every (value, bucket) against the other values in the same bucket."""
    buckets = {b for (_, b) in acc.stalled}
    active = {v: coverage_at(diff, buckets) for v, diff in acc.active.items()}
    total_n = collections.Counter()
    total_k = collections.Counter()
    for (value, bucket), viewers in acc.stalled.items():
        total_k[bucket] += len(viewers)
    for value, counts in active.items():
        for bucket, n in counts.items():
            total_n[bucket] += n
    all_k, all_n = sum(total_k.values()), sum(total_n.values())
    if not all_n:
        return []
    global_rate = all_k / all_n
    tests = max(1, len(acc.stalled))
    flagged: dict[str, list[tuple[int, float, float, float]]] = collections.defaultdict(list)
    for (value, bucket), viewers in acc.stalled.items():
        k, n = len(viewers), active.get(value, {}).get(bucket, 0)
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
    for value, cells in flagged.items():
        for run in runs(sorted(cells), max_step=2):      # bridge a single quiet bucket
            alerts.append(_delivery_alert(dimension, value, run, acc, active[value], t))
    return alerts


def _delivery_alert(dimension: str, value: str, run, acc: _DimensionAcc,
                    active: dict[int, int], t: Thresholds) -> Alert:
    first, last = run[0][0], run[-1][0]
    viewers: dict[str, str] = {}
    for bucket in range(first, last + 1):
        for viewer, video in acc.stalled.get((value, bucket), {}).items():
            viewers.setdefault(viewer, video)
    best = min(run, key=lambda c: c[1])
    return Alert(
        alert_id=alert_id("delivery", dimension, value, first),
        cause=Cause.DELIVERY, video_id=None, rendition=None, start_ms=None, end_ms=None,
        dimension=dimension, value=value, viewer_id=None,
        start_ts=first * t.delivery_bucket_ms,
        end_ts=(last + 1) * t.delivery_bucket_ms,
        affected_viewers=len(viewers),
        exposed_viewers=max(active.get(c[0], 0) for c in run),
        stalls=sum(len(acc.stalled.get((value, c[0]), {})) for c in run),
        baseline_rate=round(best[2], 6), observed_rate=round(best[3], 6),
        p_value=best[1],
        breakdown=breakdown(video_id=viewers.values()),
    )


def _contributions(view: View, dimensions: tuple[str, ...], bucket_ms: int):
    first, last = view.start_ms // bucket_ms, view.end_ms // bucket_ms
    stalls = tuple((s.start_ms // bucket_ms, view.viewer_id, view.video_id)
                   for s in view.stalls)
    for dimension in dimensions:
        value = getattr(view, dimension)
        if value is not None:
            yield dimension, (str(value), first, last, stalls)


def delivery_alerts(views: Iterable[View], t: Thresholds) -> list[Alert]:
    """CDN / ASN / country values whose viewers stall together.

    One alert per (dimension, value, wall-clock window). In each bucket, the
    share of a value's active views that stalled is tested (one-sided
    binomial) against the share among the other values of the same dimension
    in the same bucket, so a content fault, which hits every CDN alike,
    cancels out.
    """
    accs: dict[str, _DimensionAcc] = {}
    for view in views:
        for dimension, item in _contributions(view, t.delivery_dimensions, t.delivery_bucket_ms):
            add_to_dimension(accs.setdefault(dimension, _DimensionAcc()), item)
    return [a for dimension in sorted(accs) for a in find_delivery_alerts(dimension, accs[dimension], t)]
