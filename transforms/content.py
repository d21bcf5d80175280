"""DetectContentProblems: many viewers of one video stalling at the same playhead."""

from __future__ import annotations

from typing import Iterable, NamedTuple, Optional

from transforms.alerting import alert_id, breakdown, unexplained_stalls
from transforms.model import Alert, Cause, PlayedRange, View
from transforms.spans import add_span, coverage_at, coverage_totals, merge_spans, runs
from transforms.stats import binomial_sf
from transforms.thresholds import Thresholds
from transforms.viewers import sum_pairs

ALL_RENDITIONS = ""
# Share of stall positions the reported interval must hold (the rest are
# background stalls that happened to fall in the same windows).
_CORE_SHARE = 0.8
_MIN_BASELINE = 1e-6


class StallPoint(NamedTuple):
    """A stall as the content detector sees it."""

    playhead_ms: int
    wall_ms: int
    rendition: Optional[str]
    cdn: Optional[str]
    asn: Optional[str]
    country: Optional[str]


class Track(NamedTuple):
    """What one viewer did in one video: played ranges and counted stalls."""

    ranges: tuple[PlayedRange, ...]
    stalls: tuple[StallPoint, ...]


class Profile:
    """Per (video, rendition level): exposure per window as a difference array,
    and the first stall of each viewer per window."""

    __slots__ = ("diff", "stalled")

    def __init__(self) -> None:
        self.diff: dict[int, int] = {}
        self.stalled: dict[int, dict[str, StallPoint]] = {}


def view_track(view: View, flagged: Iterable[str], windows) -> tuple[str, Track]:
    """Key a view by (video, viewer); drop stalls of flagged viewers and stalls
    that a delivery alert explains, but keep their exposure."""
    if view.viewer_id in flagged:
        stalls = ()
    else:
        stalls = tuple(StallPoint(s.playhead_ms, s.start_ms, s.rendition, view.cdn,
                                  view.asn, view.country)
                       for s in unexplained_stalls(view, windows)
                       if s.playhead_ms is not None)     # an unplaced CMCD stall: no position
    return f"{view.video_id}\x1f{view.viewer_id}", Track(view.played, stalls)


def level_contributions(keyed: tuple[str, Iterable[Track]], bucket_ms: int):
    """One viewer's exposure windows and stall windows, for the all-renditions
    level and for each rendition they played."""
    key, tracks = keyed
    video_id, viewer_id = key.split("\x1f", 1)
    ranges = [r for t in tracks for r in t.ranges]
    stalls = [s for t in tracks for s in t.stalls]
    levels = {ALL_RENDITIONS} | {r.rendition for r in ranges if r.rendition is not None}
    for level in sorted(levels):
        level_ranges = [r for r in ranges if level == ALL_RENDITIONS or r.rendition == level]
        level_stalls = [s for s in stalls if level == ALL_RENDITIONS or s.rendition == level]
        windows = _window_spans(level_ranges, bucket_ms)
        if windows:
            yield (video_id, level), (viewer_id, windows, tuple(level_stalls))


def _window_spans(ranges: Iterable[PlayedRange], bucket_ms: int) -> tuple[tuple[int, int], ...]:
    """Merged [first, last] window indexes touched; window w = buckets w and w+1."""
    return tuple(merge_spans((r.start_ms // bucket_ms - 1, r.end_ms // bucket_ms) for r in ranges))


def add_to_profile(acc: Profile, item, bucket_ms: int) -> None:
    """Add one viewer's (viewer_id, windows, stalls) to a profile."""
    viewer_id, windows, stalls = item
    for first, last in windows:
        add_span(acc.diff, first, last)
    for s in stalls:
        bucket = s.playhead_ms // bucket_ms
        for w in (bucket - 1, bucket):
            acc.stalled.setdefault(w, {}).setdefault(viewer_id, s)


def exposure_totals(profile: Profile) -> tuple[dict[int, int], int, int, int]:
    """(exposure at windows with stalls, total viewer-windows, windows with
    exposure, total stalled viewer-windows)."""
    total, covered = coverage_totals(profile.diff)
    stalled = sum(len(v) for v in profile.stalled.values())
    return coverage_at(profile.diff, profile.stalled), total, covered, stalled


def profile_rate(key_profile: tuple[tuple[str, str], Profile]) -> tuple[int, int]:
    """(stalled viewer-windows, exposed viewer-windows) of an all-renditions profile."""
    _, total, _, stalled = exposure_totals(key_profile[1])
    return stalled, total


def find_content_clusters(keyed: tuple[tuple[str, str], Profile],
                          global_rate: tuple[int, int], t: Thresholds) -> list[Alert]:
    """Windows where far more distinct viewers stall than the video's baseline."""
    (video_id, level), profile = keyed
    at, total, covered, stalled_total = exposure_totals(profile)
    g_stalled, g_total = global_rate
    prior_rate = g_stalled / g_total if g_total else 0.0
    alpha = t.content_alpha / max(1, covered)
    flagged: list[tuple[int, float, float, float, int]] = []
    for w, viewers in profile.stalled.items():
        k, n = len(viewers), at.get(w, 0)
        if k < t.min_viewers or n <= 0:
            continue
        baseline = max(_MIN_BASELINE, (stalled_total - k + t.prior_viewer_windows * prior_rate)
                       / (max(0, total - n) + t.prior_viewer_windows))
        observed = k / n
        if observed < t.min_rate_ratio * baseline:
            continue
        p = binomial_sf(k, n, baseline)
        if p < alpha:
            flagged.append((w, p, baseline, observed, n))
    alerts = []
    for run in runs(sorted(flagged), max_step=1):       # overlapping or touching windows
        alerts.append(_content_alert(video_id, level or None, run, profile, t))
    return alerts


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


def _content_alert(video_id: str, rendition: Optional[str], run, profile: Profile,
                   t: Thresholds) -> Alert:
    affected: dict[str, StallPoint] = {}
    for cell in run:
        for viewer, s in profile.stalled[cell[0]].items():
            affected.setdefault(viewer, s)
    points = list(affected.values())
    start, end = core_interval([s.playhead_ms for s in points])
    best = min(run, key=lambda c: c[1])
    return Alert(
        alert_id=alert_id("content", video_id, rendition, run[0][0]),
        cause=Cause.CONTENT, video_id=video_id, rendition=rendition,
        start_ms=start, end_ms=end, dimension=None, value=None, viewer_id=None,
        start_ts=min(s.wall_ms for s in points), end_ts=max(s.wall_ms for s in points),
        affected_viewers=len(affected), exposed_viewers=max(c[4] for c in run),
        stalls=len(points), baseline_rate=round(best[2], 6), observed_rate=round(best[3], 6),
        p_value=best[1],
        breakdown=breakdown(rendition=[s.rendition for s in points], cdn=[s.cdn for s in points],
                            asn=[s.asn for s in points], country=[s.country for s in points]),
    )


def _overlaps(a: Alert, b: Alert, slack_ms: int) -> bool:
    return a.start_ms <= b.end_ms + slack_ms and b.start_ms <= a.end_ms + slack_ms


def reconcile_renditions(keyed: tuple[str, Iterable[Alert]], t: Thresholds) -> list[Alert]:
    """Keep a rendition-level alert instead of the video-level one when the
    viewers on the other renditions did not stall more than usual there."""
    candidates = list(keyed[1])
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


def content_alerts(views: Iterable[View], flagged: set[str], windows, t: Thresholds) -> list[Alert]:
    """Playhead intervals of a video (or one rendition) where stalls pile up.

    ``flagged`` viewers' stalls and stalls a delivery window explains are
    ignored (their exposure counts). Method in docs/detection.md: distinct
    stalled viewers per two-bucket playhead window against the viewers
    exposed to it, one-sided binomial test against the video's own baseline
    (shrunk toward the global rate), Bonferroni over the video's windows,
    then a rendition check. Views are taken in the order given (sorted by
    the caller), so the result is deterministic.
    """
    tracks: dict[str, list[Track]] = {}
    for view in views:
        key, track = view_track(view, flagged, windows)
        tracks.setdefault(key, []).append(track)
    profiles: dict[tuple[str, str], Profile] = {}
    for key in sorted(tracks):
        for level, item in level_contributions((key, tracks[key]), t.bucket_ms):
            add_to_profile(profiles.setdefault(level, Profile()), item, t.bucket_ms)
    global_rate = sum_pairs(profile_rate(kv) for kv in profiles.items()
                            if kv[0][1] == ALL_RENDITIONS)
    found: dict[str, list[Alert]] = {}
    for kv in sorted(profiles.items(), key=lambda kv: kv[0]):
        for alert in find_content_clusters(kv, global_rate, t):
            found.setdefault(alert.video_id, []).append(alert)
    return [a for video in sorted(found) for a in reconcile_renditions((video, found[video]), t)]
