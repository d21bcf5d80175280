"""Factories for hand-built test data. Times are seconds from T0."""

from __future__ import annotations

from typing import Optional

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from transforms.model import Alert, AlertStatus, Beacon, Cause, EventKind, PlayedRange, Stall, View
from transforms.viewstate import summarize_views

T0_MS = 1_793_556_000_000   # 2026-11-01T18:00:00Z

# The engine the DirectRunner picks for our batch graphs, named explicitly
# (Beam 2.62 knows it only by its module path).
FN_API_RUNNER = "apache_beam.runners.portability.fn_api_runner.FnApiRunner"


def fn_api_pipeline() -> TestPipeline:
    return TestPipeline(options=PipelineOptions([f"--runner={FN_API_RUNNER}"]))


def ms(at_s: float) -> int:
    return T0_MS + int(round(at_s * 1000))


def ev(kind: str, at_s: float, ph_s: Optional[float] = None, view: str = "v1",
       video: str = "vid", viewer: str = "u1", **fields) -> Beacon:
    """A beacon ``kind`` at ``at_s`` with the playhead at ``ph_s`` seconds."""
    return Beacon(view_id=view, video_id=video, kind=EventKind(kind), event_ms=ms(at_s),
                  playhead_ms=None if ph_s is None else int(round(ph_s * 1000)),
                  viewer_id=viewer, **fields)


def one_view(*beacons: Beacon, max_stall_s: int = 300) -> View:
    views = summarize_views(beacons[0].view_id, list(beacons), max_stall_s * 1000)
    assert len(views) == 1, views
    return views[0]


def watched(view: str, viewer: str, video: str = "vid", *, start_s: float = 0,
            from_s: float = 0, to_s: float = 600, stall_at_s: Optional[float] = None,
            stall_for_s: float = 4, hb_s: float = 10, ad_at_s: Optional[float] = None,
            ad_id: str = "ad-7", ad_s: float = 30, ad_stall_at_s: Optional[float] = None,
            **dims) -> list[Beacon]:
    """A plain view: play, first frame after 1 s, heartbeats, an optional stall, ended.

    ``start_s`` is the wall-clock start; the playhead goes ``from_s`` -> ``to_s``.
    ``ad_at_s``: a mid-roll break at that playhead, one ad ``ad_id`` of
    ``ad_s`` seconds, stalling ``stall_for_s`` at ``ad_stall_at_s`` into it.
    """
    out = [ev("viewstart", start_s, view=view, video=video, viewer=viewer, **dims),
           ev("play", start_s, from_s, view=view, video=video, viewer=viewer),
           ev("playing", start_s + 1, from_s, view=view, video=video, viewer=viewer)]
    t, ph = start_s + 1, from_s
    stalled = False
    while ph < to_s:
        step = min(hb_s, to_s - ph)
        if ad_at_s is not None and ph <= ad_at_s < ph + step:
            t += ad_at_s - ph
            ph = ad_at_s
            out += _ad_break(t, ph, ad_id, ad_s, ad_stall_at_s, stall_for_s,
                             view=view, video=video, viewer=viewer)
            t = (out[-1].event_ms - T0_MS) / 1000
            ad_at_s = None
            continue
        if stall_at_s is not None and not stalled and ph <= stall_at_s < ph + step:
            t += stall_at_s - ph
            ph = stall_at_s
            out.append(ev("waiting", t, ph, view=view, video=video, viewer=viewer))
            t += stall_for_s
            out.append(ev("playing", t, ph, view=view, video=video, viewer=viewer))
            stalled = True
            continue
        t += step
        ph += step
        out.append(ev("heartbeat", t, ph, view=view, video=video, viewer=viewer))
    out.append(ev("ended", t, ph, view=view, video=video, viewer=viewer))
    return out


def _ad_break(t: float, ph: float, ad_id: str, ad_s: float, stall_at_s: Optional[float],
              stall_for_s: float, **who) -> list[Beacon]:
    """Beacon v1 events of a one-ad break at wall clock ``t``, content playhead ``ph``."""
    out = [ev("adbreakstart", t, ph, **who), ev("adplay", t, ph, ad_id=ad_id, **who),
           ev("adplaying", t + 0.5, ph, ad_id=ad_id, **who)]
    end = t + 0.5 + ad_s
    if stall_at_s is not None:
        out += [ev("waiting", t + 0.5 + stall_at_s, ph, **who),
                ev("playing", t + 0.5 + stall_at_s + stall_for_s, ph, **who)]
        end += stall_for_s
    return out + [ev("adended", end, ph, ad_id=ad_id, **who), ev("adbreakend", end, ph, **who),
                  ev("playing", end, ph, **who)]


def make_view(view: str, viewer: str, video: str = "vid", *, start_s: float = 0,
              end_s: Optional[float] = None, played: tuple[tuple[float, float, Optional[str]], ...] = ((0, 600, None),),
              stalls: tuple[tuple[float, float], ...] = (), rendition: Optional[str] = None,
              **dims) -> View:
    """A View built directly: ``played`` as (from_s, to_s, rendition) playhead
    ranges, ``stalls`` as (wall_s, playhead_s)."""
    stall_objs = tuple(Stall(ms(w), 3000, int(p * 1000), rendition, None) for w, p in stalls)
    ranges = tuple(PlayedRange(int(a * 1000), int(b * 1000), r or rendition) for a, b, r in played)
    ranges += tuple(PlayedRange(s.playhead_ms, s.playhead_ms, rendition) for s in stall_objs)
    end = end_s if end_s is not None else start_s + max(b for _, b, _ in played)
    return View(
        view_key=f"{view}@{ms(start_s)}", view_id=view, video_id=video, viewer_id=viewer,
        start_ms=ms(start_s), end_ms=ms(end), events=10, duplicate_events=0,
        watch_ms=int((end - start_s) * 1000), playing_ms=int((end - start_s) * 1000),
        play_requested=True, startup_ms=1000, exited_before_start=False,
        playback_failure=False, startup_failure=False, business_error=False, error_code=None,
        rebuffer_count=len(stall_objs), rebuffer_ms=3000 * len(stall_objs), seek_count=0,
        seek_ms=0, max_playhead_ms=int(max(b for _, b, _ in played) * 1000),
        avg_bitrate_bps=None, max_bitrate_bps=None, upshifts=0, downshifts=0,
        force_ended=False, stalls=stall_objs, played=ranges, rendition=rendition, **dims)


def as_member(view: View, complete_s: int = 60):
    """A view as the sessionizer hands it to the detectors: a Member stamped
    when it would have been emitted (``complete_s`` after its end)."""
    from apache_beam.transforms.window import TimestampedValue
    from transforms.rolling import Member
    return TimestampedValue(Member(view.view_key, (view.version, 0), view.end_ms, view),
                            (view.end_ms + complete_s * 1000) / 1000.0)


def final_alerts(alerts):
    """The current state of each alert_id (highest version), retracted ones dropped."""
    from transforms.model import AlertStatus
    latest = {}
    for a in alerts:
        if a.alert_id not in latest or a.version > latest[a.alert_id].version:
            latest[a.alert_id] = a
    return sorted((a for a in latest.values() if a.status is not AlertStatus.RETRACTED),
                  key=lambda a: a.alert_id)


def alert(version: int = 1, status: str = "open", affected: int = 6, *, alert_id: str = "a1",
          cause: str = "content", as_of_s: float = 600) -> Alert:
    """One version of a content (or delivery / viewer) alert, for the notifier's tests."""
    content, delivery = cause == "content", cause == "delivery"
    return Alert(
        alert_id=alert_id, cause=Cause(cause), video_id="vid-12" if content else None,
        rendition=None, start_ms=720_000 if content else None,
        end_ms=750_000 if content else None, dimension="cdn" if delivery else None,
        value="cdn-b" if delivery else None, viewer_id=None if content or delivery else "viewer-9",
        start_ts=ms(300), end_ts=ms(as_of_s), affected_viewers=affected, exposed_viewers=40,
        stalls=affected + 2, baseline_rate=0.01, observed_rate=0.2, p_value=1e-9,
        breakdown=(("cdn", (("cdn-a", affected),)),), status=AlertStatus(status),
        version=version, as_of_ms=ms(as_of_s))
