"""DetectViewerProblems: one viewer stalling everywhere is their network, not ours."""

from __future__ import annotations

from typing import Iterable, NamedTuple

from transforms.alerting import alert_id, breakdown, unexplained_stalls
from transforms.model import Alert, Cause, View
from transforms.stats import poisson_sf
from transforms.thresholds import Thresholds

POSITION_MS = 30_000


class ViewerActivity(NamedTuple):
    """What one view contributes to its viewer's record."""

    watch_ms: int
    stall_ms: tuple[int, ...]                     # wall-clock starts
    positions: tuple[tuple[str, int], ...]        # (video, playhead // 30 s)
    video_id: str
    cdn: str
    asn: str


def viewer_activity(view: View, windows) -> tuple[str, ViewerActivity]:
    """Key a view by viewer, keeping stalls that no delivery alert explains."""
    stalls = unexplained_stalls(view, windows)
    return view.viewer_id, ViewerActivity(
        watch_ms=view.watch_ms,
        stall_ms=tuple(s.start_ms for s in stalls),
        positions=tuple((view.video_id, s.playhead_ms // POSITION_MS) for s in stalls
                        if s.playhead_ms is not None),
        video_id=view.video_id, cdn=str(view.cdn), asn=str(view.asn))


def sum_pairs(pairs: Iterable[tuple[int, int]]) -> tuple[int, int]:
    a = b = 0
    for x, y in pairs:
        a += x
        b += y
    return a, b


def test_viewer(keyed: tuple[str, Iterable[ViewerActivity]],
                population: tuple[int, int], viewers_tested: int,
                t: Thresholds) -> list[Alert]:
    """Poisson test of one viewer's stall count against the population rate."""
    viewer_id, activities = keyed[0], list(keyed[1])
    stalls = sorted(ms for a in activities for ms in a.stall_ms)
    positions = {p for a in activities for p in a.positions}
    if len(stalls) < t.viewer_min_stalls or len(positions) < t.viewer_min_positions:
        return []
    total_stalls, total_watch = population
    watch = sum(a.watch_ms for a in activities)
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
        breakdown=breakdown(video_id=[v for v, _ in positions],
                            cdn=[a.cdn for a in activities],
                            asn=[a.asn for a in activities]),
    )]


def viewer_alerts(views: Iterable[View], windows, t: Thresholds) -> list[Alert]:
    """Viewers who stall far more often than everyone else.

    Stalls a delivery window (dimension, value, start_ts, end_ts) explains are
    not held against the viewer. One alert per flagged viewer: at least
    ``viewer_min_stalls`` stalls over ``viewer_min_positions`` positions and
    a Poisson tail below viewer_alpha / viewers tested.
    """
    per_viewer: dict[str, list[ViewerActivity]] = {}
    for view in views:
        viewer, activity = viewer_activity(view, windows)
        per_viewer.setdefault(viewer, []).append(activity)
    population = sum_pairs((len(a.stall_ms), a.watch_ms)
                           for acts in per_viewer.values() for a in acts)
    tested = sum(1 for acts in per_viewer.values() if any(a.stall_ms for a in acts))
    return [a for viewer in sorted(per_viewer)
            for a in test_viewer((viewer, per_viewer[viewer]), population, tested, t)]
