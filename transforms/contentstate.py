"""Content detection, sharded and incremental.

``ContentProfiles`` (keyed by a shard of the video id) keeps, per video and
level, the distinct viewers exposed to each position window (playhead, or
program time for live views) and the first counted stall of each viewer
per window, updated by ``ContentDelta``s. Per
evaluation it sends the shard's part of the all-titles rate to
``SumShards`` and, per video that changed, the windows that could be
flagged (they pass the test with the all-titles rate at 0, its most
permissive value) to ``ContentTest``, which tests them with the current
all-titles rate and delivery windows and runs each video's alert lifecycle.

State bounds (per shard key; retention ``R``, slice ``L``):
- ContentProfiles: per video and level, one count per window with exposure
  in the last R + L (x the live slices for aging), and the placed stalls of
  the viewers who stalled in that time.
- ContentTest: the candidate windows of its videos, their alerts.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

from apache_beam import pvalue

from transforms.alerting import Lifecycle
from transforms.broadcast import (DeliveryWindows, FlaggedViewers, Partial, Rank, Total,
                                  all_flagged, all_windows, delivery_clock, keep_latest,
                                  next_rank, to_shards)
from transforms.content import LevelCounts, counted, pretest, stalled_windows, video_alerts
from transforms.contributions import ALL_RENDITIONS, ContentDelta, StallPoint, slice_of
from transforms.spans import span_deltas
from transforms.thresholds import Thresholds

SUMMARIES, PRIOR = "summaries", "prior"


class LevelSummary(NamedTuple):
    level: str
    exposed: int
    covered: int
    stalled: int
    # (window, viewers exposed, ((viewer, their placed stalls in the window), ...))
    candidates: tuple[tuple[int, int, tuple[tuple[str, tuple[StallPoint, ...]], ...]], ...]


class Summaries(NamedTuple):
    """What changed in one ContentProfiles evaluation, per video: the levels
    that have windows to test (none: nothing to test any more)."""

    rank: Rank
    videos: tuple[tuple[str, tuple[LevelSummary, ...]], ...]


@dataclasses.dataclass
class _Video:
    exposure: dict = dataclasses.field(default_factory=dict)   # level -> {window: viewers}
    slices: dict = dataclasses.field(default_factory=dict)     # slice -> level -> {window: viewers}
    exposed: dict = dataclasses.field(default_factory=dict)    # level -> viewer-windows
    covered: dict = dataclasses.field(default_factory=dict)    # level -> windows with exposure
    records: dict = dataclasses.field(default_factory=dict)    # viewer -> {epoch: (rank, slice, levels, stalls)}
    stalled: dict = dataclasses.field(default_factory=dict)    # level -> {window: {viewer: StallPoint}}
    owned: dict = dataclasses.field(default_factory=dict)      # viewer -> ((level, window), ...)
    k: dict = dataclasses.field(default_factory=dict)          # level -> stalled viewer-windows
    sent: tuple = ()                                           # levels of the last summary


@dataclasses.dataclass
class _Profiles:
    videos: dict = dataclasses.field(default_factory=dict)
    windows: dict = dataclasses.field(default_factory=dict)    # dimension -> DeliveryWindows
    flags: dict = dataclasses.field(default_factory=dict)      # viewer shard -> FlaggedViewers
    applied: tuple = ((), frozenset())                          # exclusions the counts reflect
    dirty: set = dataclasses.field(default_factory=set)         # (video, viewer) to recount
    changed: set = dataclasses.field(default_factory=set)       # videos to summarize
    cutoff: Optional[int] = None                                # oldest live slice
    reported: tuple = ()
    epoch: Optional[int] = None
    seq: int = 0


def _add(counts: dict, totals: Optional[tuple[dict, dict]], level: str,
         first: int, last: int, delta: int) -> None:
    """Add ``delta`` viewers to windows first..last of ``counts[level]``
    (and keep the level's exposed / covered totals)."""
    windows = counts.setdefault(level, {})
    for w in range(first, last + 1):
        before = windows.get(w, 0)
        after = before + delta
        if after:
            windows[w] = after
        else:
            del windows[w]
        if totals is not None:
            exposed, covered = totals
            exposed[level] = exposed.get(level, 0) + delta
            covered[level] = covered.get(level, 0) + (after > 0) - (before > 0)
    if not windows:
        del counts[level]


class ContentProfiles:
    """Evaluator of the content counts (see the module docstring).

    Input items: ContentDelta, DeliveryWindows, FlaggedViewers. Outputs:
    (shard, Summaries) on SUMMARIES for the ContentTest shard of the same
    id, ("prior", Partial(stalled, exposed)) on PRIOR.
    """

    def __init__(self, t: Thresholds, slice_ms: int, retention_ms: int) -> None:
        self._t, self._slice_ms, self._retention_ms = t, slice_ms, retention_ms

    def empty(self, key: str) -> _Profiles:
        return _Profiles()

    def urgent(self, item) -> bool:
        return (isinstance(item, ContentDelta) and item.new is not None
                and set(item.new.stalls) - set(item.old.stalls if item.old else ()) != set())

    def fold(self, acc: _Profiles, item, ts_ms: int) -> _Profiles:
        if isinstance(item, ContentDelta):
            video = acc.videos.setdefault(item.video_id, _Video())
            self._expose(video, item.old, item.new, acc.cutoff)
            records = video.records.setdefault(item.viewer_id, {})
            seen = records.get(item.epoch)
            if seen is None or item.rank > seen[0]:
                new = item.new
                records[item.epoch] = ((item.rank, new.slice_ms, tuple(dict(new.levels)), new.stalls)
                                       if new is not None else (item.rank, None, (), ()))
                acc.dirty.add((item.video_id, item.viewer_id))
            acc.changed.add(item.video_id)
        elif isinstance(item, DeliveryWindows):
            keep_latest(acc.windows, item.dimension, item)
        elif isinstance(item, FlaggedViewers):
            keep_latest(acc.flags, item.shard, item)
        return acc

    def _expose(self, video: _Video, old, new, cutoff: Optional[int]) -> None:
        old = old if old is not None and (cutoff is None or old.slice_ms >= cutoff) else None
        new = new if new is not None and (cutoff is None or new.slice_ms >= cutoff) else None
        before, after = dict(old.levels) if old else {}, dict(new.levels) if new else {}
        totals = (video.exposed, video.covered)
        same_slice = old is not None and new is not None and old.slice_ms == new.slice_ms
        for level in sorted(set(before) | set(after)):
            for first, last, delta in span_deltas(before.get(level, ()), after.get(level, ())):
                _add(video.exposure, totals, level, first, last, delta)
                if same_slice:
                    _add(video.slices.setdefault(new.slice_ms, {}), None, level, first, last, delta)
        if not same_slice:
            for track, sign in ((old, -1), (new, 1)):
                if track is not None:
                    in_slice = video.slices.setdefault(track.slice_ms, {})
                    for level, spans in track.levels:
                        for first, last in spans:
                            _add(in_slice, None, level, first, last, sign)
                    if not in_slice:
                        del video.slices[track.slice_ms]

    def evaluate(self, key: str, acc: _Profiles, as_of_ms: int, settled: bool):
        if self._retention_ms > 0:
            self._age(acc, slice_of(as_of_ms - self._retention_ms, self._slice_ms))
        exclusions = (all_windows(acc.windows), all_flagged(acc.flags))
        if exclusions != acc.applied:
            acc.applied = exclusions
            acc.dirty |= {(video_id, viewer) for video_id, video in acc.videos.items()
                          for viewer in video.records}
        for video_id, viewer in sorted(acc.dirty):
            if video_id in acc.videos:
                self._recount(acc.videos[video_id], viewer, acc)
                acc.changed.add(video_id)
        acc.dirty.clear()
        out = []
        changed = []
        for video_id in sorted(acc.changed):
            video = acc.videos.get(video_id)
            levels = self._summary(video) if video is not None else ()
            if video is not None and levels != video.sent:
                video.sent = levels
                changed.append((video_id, levels))
            if video is not None and not video.exposure and not video.records:
                del acc.videos[video_id]
        acc.changed.clear()
        part = (sum(v.k.get(ALL_RENDITIONS, 0) for v in acc.videos.values()),
                sum(v.exposed.get(ALL_RENDITIONS, 0) for v in acc.videos.values()))
        if changed or part != acc.reported:
            rank = next_rank(acc, as_of_ms)
            if changed:
                out.append(pvalue.TaggedOutput(SUMMARIES, (key, Summaries(rank, tuple(changed)))))
            if part != acc.reported:
                acc.reported = part
                out.append(pvalue.TaggedOutput(PRIOR, ("prior", Partial(key, rank, part))))
        return out, None

    def _age(self, acc: _Profiles, cutoff: int) -> None:
        if acc.cutoff is not None and cutoff <= acc.cutoff:
            return
        acc.cutoff = cutoff
        for video_id, video in acc.videos.items():
            for slice_ms in [s for s in video.slices if s < cutoff]:
                for level, windows in video.slices.pop(slice_ms).items():
                    for w, n in windows.items():
                        _add(video.exposure, (video.exposed, video.covered), level, w, w, -n)
                acc.changed.add(video_id)
            for viewer, records in video.records.items():
                for epoch in [e for e, r in records.items() if r[1] is None or r[1] < cutoff]:
                    del records[epoch]
                    acc.dirty.add((video_id, viewer))

    def _recount(self, video: _Video, viewer: str, acc: _Profiles) -> None:
        for level, w in video.owned.pop(viewer, ()):
            del video.stalled[level][w][viewer]
            video.k[level] -= 1
            if not video.stalled[level][w]:
                del video.stalled[level][w]
        records = [r for r in video.records.get(viewer, {}).values() if r[3]]
        if not records:
            video.records.pop(viewer, None)
            return
        windows, flagged = acc.applied
        points = [p for r in records for p in r[3] if counted(p, viewer, flagged, windows)]
        levels = {level for r in records for level in r[2]}
        entries = stalled_windows(points, levels, self._t.bucket_ms)
        for (level, w), point in entries.items():
            video.stalled.setdefault(level, {}).setdefault(w, {})[viewer] = point
            video.k[level] = video.k.get(level, 0) + 1
        video.owned[viewer] = tuple(entries)

    def _summary(self, video: _Video) -> tuple[LevelSummary, ...]:
        out = []
        for level in sorted(video.stalled):
            base = LevelCounts(video.exposed.get(level, 0), video.covered.get(level, 0),
                               video.k.get(level, 0), {})
            candidates = []
            for w, viewers in sorted(video.stalled[level].items()):
                n = video.exposure.get(level, {}).get(w, 0)
                if pretest(len(viewers), n, base, 0.0, self._t) is not None:
                    candidates.append((w, n, tuple(
                        (viewer, self._points(video, viewer, level, w)) for viewer in sorted(viewers))))
            if candidates:
                out.append(LevelSummary(level, base.exposed, base.covered, base.stalled,
                                        tuple(candidates)))
        return tuple(out)

    def _points(self, video: _Video, viewer: str, level: str, w: int) -> tuple[StallPoint, ...]:
        """A viewer's placed stalls in window ``w`` at ``level``, counted or not
        (the test applies the exclusions it knows)."""
        records = [r for r in video.records.get(viewer, {}).values() if r[3]]
        levels = {name for r in records for name in r[2]}
        return tuple(sorted(p for r in records for p in r[3]
                            if p.playhead_ms // self._t.bucket_ms in (w, w + 1)
                            and (level == ALL_RENDITIONS and level in levels
                                 or (p.rendition == level and level in levels))))


@dataclasses.dataclass
class _Tests:
    summaries: dict = dataclasses.field(default_factory=dict)   # video -> (rank, levels)
    total: Optional[Total] = None                               # the all-titles rate
    windows: dict = dataclasses.field(default_factory=dict)     # dimension -> DeliveryWindows
    flags: dict = dataclasses.field(default_factory=dict)       # viewer shard -> FlaggedViewers
    sent: dict = dataclasses.field(default_factory=dict)        # video -> {alert_id: Alert}
    held: dict = dataclasses.field(default_factory=dict)        # video -> {alert_id: first seen}


def level_counts(summary: LevelSummary, flagged, windows) -> LevelCounts:
    """A level's counts with the exclusions known now applied to its candidates."""
    tested = {}
    for w, n, viewers in summary.candidates:
        first = {}
        for viewer, points in viewers:
            point = next((p for p in points if counted(p, viewer, flagged, windows)), None)
            if point is not None:
                first[viewer] = point
        tested[w] = (n, first)
    return LevelCounts(summary.exposed, summary.covered, summary.stalled, tested)


class ContentTest:
    """Evaluator of the content test and lifecycle (see the module docstring).

    Input items: Summaries, Total (the all-titles rate), DeliveryWindows,
    FlaggedViewers. Output: Alert.
    """

    def __init__(self, t: Thresholds, lifecycle: Lifecycle) -> None:
        self._t, self._lifecycle = t, lifecycle

    def empty(self, key: str) -> _Tests:
        return _Tests()

    def fold(self, acc: _Tests, item, ts_ms: int) -> _Tests:
        if isinstance(item, Summaries):
            for video_id, levels in item.videos:
                seen = acc.summaries.get(video_id)
                if seen is None or item.rank > seen[0]:
                    acc.summaries[video_id] = (item.rank, levels)
        elif isinstance(item, Total):
            if acc.total is None or item.rank > acc.total.rank:
                acc.total = item
        elif isinstance(item, DeliveryWindows):
            keep_latest(acc.windows, item.dimension, item)
        elif isinstance(item, FlaggedViewers):
            keep_latest(acc.flags, item.shard, item)
        return acc

    def evaluate(self, key: str, acc: _Tests, as_of_ms: int, settled: bool):
        if acc.total is None and not settled:
            return [], None              # the all-titles rate is one hop behind: wait for it
        rate = acc.total.values if acc.total is not None else (0, 0)
        windows, flagged = all_windows(acc.windows), all_flagged(acc.flags)
        clock = delivery_clock(acc.windows)
        out, wakes = [], []
        for video_id in sorted(set(acc.summaries) | set(acc.sent)):
            _, levels = acc.summaries.get(video_id, (None, ()))
            counts = {s.level: level_counts(s, flagged, windows) for s in levels}
            found = video_alerts(video_id, counts, rate, self._t) if counts else []
            held = acc.held.setdefault(video_id, {})
            alerts, sent, wake = self._lifecycle(found, acc.sent.get(video_id, {}), as_of_ms,
                                                 settled, clock, held)
            out += alerts
            if wake is not None:
                wakes.append(wake)
            acc.sent[video_id] = sent
            for name, table in (("sent", acc.sent), ("held", acc.held)):
                if not table[video_id]:
                    del table[video_id]
            if not levels and video_id not in acc.sent and video_id in acc.summaries:
                del acc.summaries[video_id]
        return out, min(wakes, default=None)


class SumShards:
    """Evaluator of a global sum: the latest Partial of each shard, summed,
    sent to every shard of the stage that uses it when it changes."""

    def __init__(self, shards: int) -> None:
        self._shards = shards

    def empty(self, key: str):
        return _Sums()

    def fold(self, acc, item: Partial, ts_ms: int):
        keep_latest(acc.parts, item.shard, item)
        return acc

    def evaluate(self, key: str, acc, as_of_ms: int, settled: bool):
        parts = list(acc.parts.values())
        total = tuple(sum(values) for values in zip(*(p.values for p in parts))) if parts else ()
        if total == acc.sent:
            return [], None
        acc.sent = total
        return to_shards(None, self._shards, Total(next_rank(acc, as_of_ms), total)), None


@dataclasses.dataclass
class _Sums:
    parts: dict = dataclasses.field(default_factory=dict)
    sent: tuple = ()
    epoch: Optional[int] = None
    seq: int = 0
