"""Viewer problems: one viewer stalling everywhere is their network, not ours.

``test_viewer`` is the test (docs/detection.md) of one viewer's record
against the population's stall rate; ``viewer_alerts`` computes records and
population from a set of views at once. Sharded and incremental,
``ViewerStats`` (keyed by a shard of the viewer id) keeps the watch time of
viewers without stalls per time slice and the activity of viewers with
stalls, sends its part of the population to ``SumShards`` and the viewers
who could be flagged (enough stalls at enough positions) to ``ViewerTest``,
which tests them against the population, runs their alert lifecycle and
tells the content stages whom it flags.

State bounds, per shard key: ViewerStats, one number per slice of the
retention window and the live views of the viewers who stalled in it;
ViewerTest, those viewers' views if they could be flagged, and their alerts.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, NamedTuple, Optional

from apache_beam import pvalue

from transforms.alerting import Lifecycle, Window, alert_id, breakdown, explained
from transforms.broadcast import (DeliveryWindows, FlaggedViewers, Partial, Rank, Total,
                                  all_windows, delivery_clock, keep_latest, next_rank)
from transforms.contributions import ViewActivity, ViewerActivity, WatchDelta, slice_of, view_activity
from transforms.facts import view_facts
from transforms.model import Alert, Cause, View
from transforms.stats import poisson_sf
from transforms.thresholds import Thresholds

POSITION_MS = 30_000
CANDIDATES, PARTIAL, FLAGS = "candidates", "partial", "flags"


class ViewStalls(NamedTuple):
    """What one view contributes to its viewer's record, stalls that a
    delivery window explains left out."""

    watch_ms: int
    stall_ms: tuple[int, ...]                     # wall-clock starts
    positions: tuple[tuple[str, int], ...]        # (video, position // 30 s)
    video_id: str
    cdn: str
    asn: str


def view_stalls(view: ViewActivity, windows: tuple[Window, ...]) -> ViewStalls:
    dim = (lambda name: next((v for d, v in view.dims if d == name), None))
    stalls = [(start, ph) for start, ph in view.stalls
              if not (windows and explained(dim, start, windows))]
    return ViewStalls(view.watch_ms, tuple(start for start, _ in stalls),
                      tuple((view.video_id, ph // POSITION_MS) for _, ph in stalls if ph is not None),
                      view.video_id, str(dim("cdn")), str(dim("asn")))


def test_viewer(viewer_id: str, records: list[ViewStalls], population: tuple[int, int],
                viewers_tested: int, t: Thresholds) -> list[Alert]:
    """Poisson test of one viewer's stall count against the population rate."""
    stalls = sorted(ms for a in records for ms in a.stall_ms)
    positions = {p for a in records for p in a.positions}
    if len(stalls) < t.viewer_min_stalls or len(positions) < t.viewer_min_positions:
        return []
    total_stalls, total_watch = population
    watch = sum(a.watch_ms for a in records)
    if not total_watch or not watch:
        return []
    rate = total_stalls / total_watch
    expected = rate * watch
    p = poisson_sf(len(stalls), expected)
    if p >= t.viewer_alpha / max(1, viewers_tested) or len(stalls) < t.min_rate_ratio * expected:
        return []
    return [Alert(
        alert_id=alert_id("viewer", viewer_id),
        cause=Cause.VIEWER, video_id=None, rendition=None, start_ms=None, end_ms=None,
        dimension=None, value=None, viewer_id=viewer_id,
        start_ts=stalls[0], end_ts=stalls[-1],
        affected_viewers=1, exposed_viewers=1, stalls=len(stalls),
        baseline_rate=round(rate * 60_000, 6),            # stalls per watch-minute
        observed_rate=round(len(stalls) * 60_000 / watch, 6),
        p_value=p,
        breakdown=breakdown(video_id=[v for v, _ in sorted(positions)],
                            cdn=[a.cdn for a in records], asn=[a.asn for a in records]),
    )]


def viewer_alerts(views: Iterable[View], windows: tuple[Window, ...], t: Thresholds) -> list[Alert]:
    """Viewers who stall far more often than everyone else.

    Stalls a delivery window explains are not held against the viewer. One
    alert per flagged viewer: at least ``viewer_min_stalls`` stalls over
    ``viewer_min_positions`` positions and a Poisson tail below
    viewer_alpha / viewers tested.
    """
    per_viewer: dict[str, list[ViewStalls]] = {}
    for view in sorted(views, key=lambda v: v.view_key):
        activity = view_activity(view_facts(view, t.delivery_dimensions))
        per_viewer.setdefault(view.viewer_id, []).append(view_stalls(activity, windows))
    population = (sum(len(a.stall_ms) for acts in per_viewer.values() for a in acts),
                  sum(a.watch_ms for acts in per_viewer.values() for a in acts))
    tested = sum(1 for acts in per_viewer.values() if any(a.stall_ms for a in acts))
    return [a for viewer in sorted(per_viewer)
            for a in test_viewer(viewer, per_viewer[viewer], population, tested, t)]


def could_be_flagged(views: Iterable[ViewActivity], t: Thresholds) -> bool:
    """Enough stalls at enough positions, before any is explained."""
    stalls = [(v.video_id, ph) for v in views for _, ph in v.stalls]
    positions = {(video, ph // POSITION_MS) for video, ph in stalls if ph is not None}
    return len(stalls) >= t.viewer_min_stalls and len(positions) >= t.viewer_min_positions


# -- sharded and incremental ----------------------------------------------------------

class Candidates(NamedTuple):
    """Viewers of one shard who could be flagged, with all their live views
    (none: no longer a candidate)."""

    rank: Rank
    viewers: tuple[tuple[str, tuple[ViewActivity, ...]], ...]


@dataclasses.dataclass
class _Stats:
    watch: dict = dataclasses.field(default_factory=dict)        # slice -> watch of viewers without stalls
    viewers: dict = dataclasses.field(default_factory=dict)      # viewer -> {epoch: (rank, slice, views)}
    windows: dict = dataclasses.field(default_factory=dict)      # dimension -> DeliveryWindows
    applied: tuple = ()
    counts: dict = dataclasses.field(default_factory=dict)       # viewer -> (unexplained stalls, watch)
    candidates: dict = dataclasses.field(default_factory=dict)   # viewer -> views sent
    dirty: set = dataclasses.field(default_factory=set)
    cutoff: Optional[int] = None
    reported: tuple = ()
    epoch: Optional[int] = None
    seq: int = 0


class ViewerStats:
    """Evaluator of one viewer shard's stats. Input: WatchDelta,
    ViewerActivity, DeliveryWindows. Outputs: ("population", Partial(stalls,
    watch, viewers with stalls)) on PARTIAL; (shard, Candidates) on CANDIDATES."""

    def __init__(self, t: Thresholds, slice_ms: int, retention_ms: int) -> None:
        self._t, self._slice_ms, self._retention_ms = t, slice_ms, retention_ms

    def empty(self, key: str) -> _Stats:
        return _Stats()

    def urgent(self, item) -> bool:
        return isinstance(item, ViewerActivity)

    def fold(self, acc: _Stats, item, ts_ms: int) -> _Stats:
        floor = acc.cutoff if acc.cutoff is not None else -(1 << 62)
        if isinstance(item, WatchDelta):
            for part, sign in ((item.old, -1), (item.new, 1)):
                if part is not None and part[0] >= floor:
                    acc.watch[part[0]] = acc.watch.get(part[0], 0) + sign * part[1]
                    if not acc.watch[part[0]]:
                        del acc.watch[part[0]]
        elif isinstance(item, ViewerActivity):
            records = acc.viewers.setdefault(item.viewer_id, {})
            seen = records.get(item.epoch)
            if seen is None or item.rank > seen[0]:
                records[item.epoch] = (item.rank, item.slice_ms, item.views)
                acc.dirty.add(item.viewer_id)
        elif isinstance(item, DeliveryWindows):
            keep_latest(acc.windows, item.dimension, item)
        return acc

    def evaluate(self, key: str, acc: _Stats, as_of_ms: int, settled: bool):
        if self._retention_ms > 0:
            cutoff = slice_of(as_of_ms - self._retention_ms, self._slice_ms)
            if acc.cutoff is None or cutoff > acc.cutoff:
                acc.cutoff = cutoff
                for slice_ms in [s for s in acc.watch if s < cutoff]:
                    del acc.watch[slice_ms]
                for viewer, records in acc.viewers.items():
                    for epoch in [e for e, r in records.items() if r[1] < cutoff]:
                        del records[epoch]
                        acc.dirty.add(viewer)
        windows = all_windows(acc.windows)
        if windows != acc.applied:
            acc.applied = windows
            acc.dirty |= set(acc.viewers)
        changed = []
        for viewer in sorted(acc.dirty):
            views = tuple(v for _, (_, _, vs) in sorted(acc.viewers.get(viewer, {}).items())
                          for v in vs)
            if not views:
                acc.viewers.pop(viewer, None)
                acc.counts.pop(viewer, None)
            else:
                acc.counts[viewer] = (sum(len(view_stalls(v, windows).stall_ms) for v in views),
                                      sum(v.watch_ms for v in views))
            keep = views if views and could_be_flagged(views, self._t) else ()
            if keep != acc.candidates.get(viewer, ()):
                changed.append((viewer, keep))
                if keep:
                    acc.candidates[viewer] = keep
                else:
                    acc.candidates.pop(viewer, None)
        acc.dirty.clear()
        part = (sum(s for s, _ in acc.counts.values()),
                sum(acc.watch.values()) + sum(w for _, w in acc.counts.values()),
                sum(1 for s, _ in acc.counts.values() if s))
        out = []
        if changed or part != acc.reported:
            rank = next_rank(acc, as_of_ms)
            if changed:
                out.append(pvalue.TaggedOutput(CANDIDATES, (key, Candidates(rank, tuple(changed)))))
            if part != acc.reported:
                acc.reported = part
                out.append(pvalue.TaggedOutput(PARTIAL, ("population", Partial(key, rank, part))))
        return out, None


@dataclasses.dataclass
class _Tests:
    candidates: dict = dataclasses.field(default_factory=dict)   # viewer -> (rank, views)
    total: Optional[Total] = None                                # (stalls, watch, tested)
    windows: dict = dataclasses.field(default_factory=dict)
    sent: dict = dataclasses.field(default_factory=dict)         # viewer -> {alert_id: Alert}
    held: dict = dataclasses.field(default_factory=dict)
    flagged: frozenset = frozenset()
    epoch: Optional[int] = None
    seq: int = 0


class ViewerTest:
    """Evaluator of one viewer shard's test and lifecycle. Input: Candidates,
    Total, DeliveryWindows. Outputs: Alert; (None, FlaggedViewers) on FLAGS
    when the shard's flagged viewers change."""

    def __init__(self, t: Thresholds, lifecycle: Lifecycle) -> None:
        self._t, self._lifecycle = t, lifecycle

    def empty(self, key: str) -> _Tests:
        return _Tests()

    def fold(self, acc: _Tests, item, ts_ms: int) -> _Tests:
        if isinstance(item, Candidates):
            for viewer, views in item.viewers:
                seen = acc.candidates.get(viewer)
                if seen is None or item.rank > seen[0]:
                    acc.candidates[viewer] = (item.rank, views)
        elif isinstance(item, Total):
            if acc.total is None or item.rank > acc.total.rank:
                acc.total = item
        elif isinstance(item, DeliveryWindows):
            keep_latest(acc.windows, item.dimension, item)
        return acc

    def evaluate(self, key: str, acc: _Tests, as_of_ms: int, settled: bool):
        if acc.total is None and not settled:
            return [], None              # the population is one hop behind: wait for it
        stalls, watch, tested = acc.total.values if acc.total is not None else (0, 0, 0)
        windows, clock = all_windows(acc.windows), delivery_clock(acc.windows)
        out, wakes, flagged = [], [], set()
        for viewer in sorted(set(acc.candidates) | set(acc.sent)):
            _, views = acc.candidates.get(viewer, (None, ()))
            found = test_viewer(viewer, [view_stalls(v, windows) for v in views],
                                (stalls, watch), tested, self._t) if views else []
            if found:
                flagged.add(viewer)
            held = acc.held.setdefault(viewer, {})
            alerts, sent, wake = self._lifecycle(found, acc.sent.get(viewer, {}), as_of_ms,
                                                 settled, clock, held)
            out += alerts
            if wake is not None:
                wakes.append(wake)
            acc.sent[viewer] = sent
            for table in (acc.sent, acc.held):
                if not table[viewer]:
                    del table[viewer]
            if not views:
                acc.candidates.pop(viewer, None)
        if frozenset(flagged) != acc.flagged:
            acc.flagged = frozenset(flagged)
            out.append(pvalue.TaggedOutput(FLAGS, (None, FlaggedViewers(
                key, next_rank(acc, as_of_ms), acc.flagged))))
        return out, min(wakes, default=None)
