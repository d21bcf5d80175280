"""Content problems: many viewers of one video stalling at the same position of the media:
the playhead, or program time for a live view (facts.view_facts).

The statistics (docs/detection.md) on the counts of one (video, level):
``find_content_clusters`` tests windows, ``reconcile_renditions`` tells a
rendition's fault from the whole video's. ``content_alerts`` computes the
counts from a set of views at once: the definition the sharded, incremental
stages (transforms/contentstate.py) must reproduce.
"""

from __future__ import annotations

from typing import Callable, Iterable, NamedTuple, Optional

from transforms.alerting import Window, alert_id, breakdown, explained
from transforms.contributions import ALL_RENDITIONS, StallPoint, content_track
from transforms.facts import ViewFacts, content_units, timeline, view_facts
from transforms.model import Alert, Cause, View
from transforms.spans import runs
from transforms.stats import binomial_sf
from transforms.thresholds import Thresholds

# Share of stall positions the reported interval must hold (the rest are
# background stalls that happened to fall in the same windows).
_CORE_SHARE = 0.8
_MIN_BASELINE = 1e-6


class LevelCounts(NamedTuple):
    """What the test needs of one (video, level)."""

    exposed: int        # exposed viewer-windows, over all windows
    covered: int        # windows with any exposure (the Bonferroni family)
    stalled: int        # stalled viewer-windows, over all windows
    # window -> (viewers exposed, {viewer: their first counted stall}); the
    # windows that may be flagged (at least every window that is).
    windows: dict[int, tuple[int, dict[str, StallPoint]]]


def dim_of(point: StallPoint) -> Callable[[str], Optional[str]]:
    return lambda name: next((v for d, v in point.dims if d == name), None)


def counted(point: StallPoint, viewer: str, flagged, windows: tuple[Window, ...]) -> bool:
    """A stall counts unless its viewer is flagged or a delivery window explains it."""
    return viewer not in flagged and not (windows and explained(dim_of(point), point.wall_ms,
                                                                   windows))


def stalled_windows(points: Iterable[StallPoint], levels: Iterable[str],
                    bucket_ms: int) -> dict[tuple[str, int], StallPoint]:
    """(level, window) -> a viewer's first stall there, from their counted stalls.

    A stall counts at the all-renditions level and at its rendition's level
    if the viewer played that rendition; window w holds buckets w and w + 1.
    """
    levels = set(levels)
    out: dict[tuple[str, int], StallPoint] = {}
    for p in sorted(points):
        bucket = p.playhead_ms // bucket_ms
        for level in (ALL_RENDITIONS, p.rendition):
            if level in levels and (level == ALL_RENDITIONS or p.rendition is not None):
                for w in (bucket - 1, bucket):
                    out.setdefault((level, w), p)
    return out


def pretest(k: int, n: int, counts: LevelCounts, prior_rate: float, t: Thresholds) -> Optional[tuple]:
    """(p, baseline, observed) if a window of ``k`` of ``n`` viewers passes the
    test against this level's baseline with ``prior_rate`` as the global rate."""
    if k < t.min_viewers or n <= 0:
        return None
    baseline = max(_MIN_BASELINE, (counts.stalled - k + t.prior_viewer_windows * prior_rate)
                   / (max(0, counts.exposed - n) + t.prior_viewer_windows))
    observed = k / n
    if observed < t.min_rate_ratio * baseline:
        return None
    p = binomial_sf(k, n, baseline)
    return (p, baseline, observed) if p < t.content_alpha / max(1, counts.covered) else None


def find_content_clusters(video_id: str, level: str, counts: LevelCounts,
                          global_rate: tuple[int, int], t: Thresholds) -> list[Alert]:
    """Windows where far more distinct viewers stall than the video's baseline."""
    g_stalled, g_total = global_rate
    prior_rate = g_stalled / g_total if g_total else 0.0
    flagged = []
    for w, (n, viewers) in counts.windows.items():
        result = pretest(len(viewers), n, counts, prior_rate, t)
        if result is not None:
            flagged.append((w,) + result + (n,))
    return [_content_alert(video_id, level or None, run, counts, t)
            for run in runs(sorted(flagged), max_step=1)]   # overlapping or touching windows


def core_interval(positions: list[int], share: float = _CORE_SHARE) -> tuple[int, int]:
    """The shortest [lo, hi] holding ``share`` of the positions."""
    positions = sorted(positions)
    need = max(1, int(round(share * len(positions))))
    best = (positions[0], positions[-1])
    for i in range(len(positions) - need + 1):
        lo, hi = positions[i], positions[i + need - 1]
        if hi - lo < best[1] - best[0]:
            best = (lo, hi)
    return best


def _content_alert(video_id: str, rendition: Optional[str], run, counts: LevelCounts,
                   t: Thresholds) -> Alert:
    affected: dict[str, StallPoint] = {}
    for cell in run:
        for viewer, s in sorted(counts.windows[cell[0]][1].items()):
            affected.setdefault(viewer, s)
    points = list(affected.values())
    start, end = core_interval([s.playhead_ms for s in points])
    # Named by the bucket of its earliest stall in wall-clock time: a stream finds
    # that stall first, and later stalls (which may extend the flagged windows
    # either way) do not change it, so batch and streaming name it alike.
    first = min(points, key=lambda s: (s.wall_ms, s.order))
    best = min(run, key=lambda c: c[1])
    dims = [dim_of(s) for s in points]
    return Alert(
        alert_id=alert_id("content", video_id, rendition, first.playhead_ms // t.bucket_ms),
        cause=Cause.CONTENT, video_id=video_id, rendition=rendition,
        start_ms=start, end_ms=end, dimension=None, value=None, viewer_id=None,
        start_ts=min(s.wall_ms for s in points), end_ts=max(s.wall_ms for s in points),
        affected_viewers=len(affected), exposed_viewers=max(c[4] for c in run),
        stalls=len(points), baseline_rate=round(best[2], 6), observed_rate=round(best[3], 6),
        p_value=best[1],
        breakdown=breakdown(rendition=[s.rendition for s in points],
                            cdn=[d("cdn") for d in dims], asn=[d("asn") for d in dims],
                            country=[d("country") for d in dims]),
        timeline=timeline(start),
    )


def _overlaps(a: Alert, b: Alert, slack_ms: int) -> bool:
    return a.start_ms <= b.end_ms + slack_ms and b.start_ms <= a.end_ms + slack_ms


def reconcile_renditions(candidates: Iterable[Alert], t: Thresholds) -> list[Alert]:
    """Keep a rendition-level alert instead of the video-level one when the
    viewers on the other renditions did not stall more than usual there."""
    candidates = list(candidates)
    whole = [c for c in candidates if c.rendition is None]
    per_rendition = [c for c in candidates if c.rendition is not None]
    claimed: set[str] = set()
    out = []
    for c in whole:
        overlapping = [r for r in per_rendition if _overlaps(c, r, t.bucket_ms)]
        claimed.update(r.alert_id for r in overlapping)
        best = max(overlapping, key=lambda r: r.affected_viewers, default=None)
        out.append(best if best is not None and _only_this_rendition(c, best, t) else c)
    out.extend(r for r in per_rendition if r.alert_id not in claimed)
    return out


def _only_this_rendition(whole: Alert, part: Alert, t: Thresholds) -> bool:
    others_k = max(0, whole.affected_viewers - part.affected_viewers)
    others_n = max(0, whole.exposed_viewers - part.exposed_viewers)
    if others_n < t.min_viewers:
        return False          # nobody else played it: cannot tell
    elevated = (others_k >= t.min_rate_ratio * whole.baseline_rate * others_n
                and binomial_sf(others_k, others_n, whole.baseline_rate) < 0.01)
    return not elevated


def video_alerts(video_id: str, levels: dict[str, LevelCounts], global_rate: tuple[int, int],
                 t: Thresholds) -> list[Alert]:
    """One video's content alerts from the counts of its levels."""
    found = [a for level in sorted(levels)
             for a in find_content_clusters(video_id, level, levels[level], global_rate, t)]
    return reconcile_renditions(found, t)


def content_alerts(views: Iterable[View], flagged: set[str], windows: tuple[Window, ...],
                   t: Thresholds) -> list[Alert]:
    """Playhead intervals of a video (or one rendition) where stalls pile up.

    ``flagged`` viewers' stalls and stalls a delivery window explains are
    ignored (their exposure counts). Method in docs/detection.md: distinct
    stalled viewers per two-bucket position window against the viewers
    exposed to it, one-sided binomial test against the video's own baseline
    (shrunk toward the global rate), Bonferroni over the video's windows,
    then a rendition check.
    """
    by_viewer: dict[tuple[str, str], list[ViewFacts]] = {}
    for view in sorted(views, key=lambda v: v.view_key):
        for unit in content_units(view_facts(view, t.delivery_dimensions)):
            by_viewer.setdefault((unit.video_id, unit.viewer_id), []).append(unit)
    exposure: dict[str, dict[str, dict[int, int]]] = {}       # video -> level -> window -> n
    stalled: dict[str, dict[str, dict[int, dict[str, StallPoint]]]] = {}
    for (video, viewer), facts in sorted(by_viewer.items()):
        track = content_track(facts, t.bucket_ms, 1)
        if track is None:
            continue
        for level, spans in track.levels:
            counts = exposure.setdefault(video, {}).setdefault(level, {})
            for first, last in spans:
                for w in range(first, last + 1):
                    counts[w] = counts.get(w, 0) + 1
        points = [p for p in track.stalls if counted(p, viewer, flagged, windows)]
        for (level, w), p in stalled_windows(points, dict(track.levels), t.bucket_ms).items():
            stalled.setdefault(video, {}).setdefault(level, {}).setdefault(w, {})[viewer] = p
    levels = {video: {level: LevelCounts(
        exposed=sum(counts.values()), covered=sum(1 for n in counts.values() if n > 0),
        stalled=sum(len(v) for v in stalled.get(video, {}).get(level, {}).values()),
        windows={w: (counts.get(w, 0), v) for w, v in stalled.get(video, {}).get(level, {}).items()})
        for level, counts in by_level.items()} for video, by_level in exposure.items()}
    global_rate = (sum(c[ALL_RENDITIONS].stalled for c in levels.values() if ALL_RENDITIONS in c),
                   sum(c[ALL_RENDITIONS].exposed for c in levels.values() if ALL_RENDITIONS in c))
    return [a for video in sorted(levels)
            for a in video_alerts(video, levels[video], global_rate, t)]
