"""CMCD v2 event reports: parsing into Beacons and views from them (docs/cmcd.md)."""

import os

import orjson
import pytest

from tests.builders import T0_MS, ev
from transforms.model import Beacon, DeadLetter, EventKind, RawRecord
from transforms.parse import parse_message
from transforms.viewstate import summarize_views
from tests import ROOT

K = EventKind


def report(at_s: float, e: str = "ps", sta: str = None, sid: str = "s1", cid: str = "vod-1",
           sn: int = None, **keys) -> str:
    """One CMCD v2 report line; ``keys`` are extra raw key=value texts."""
    parts = [f'cid="{cid}"', f"e={e}", f'sid="{sid}"', f"ts={T0_MS + int(at_s * 1000)}", "v=2"]
    if sta:
        parts.append(f"sta={sta}")
    if sn is not None:
        parts.append(f"sn={sn}")
    parts += [f"{k}={v}" for k, v in keys.items()]
    return ",".join(sorted(parts))


def parse(*lines: str, **defaults) -> list:
    record = {"cmcd": "\n".join(lines), **defaults}
    return parse_message(RawRecord(orjson.dumps(record), "collector-1.ndjson:7"), 1_048_576)


def view_of(*lines: str, **defaults):
    beacons = [b for b in parse(*lines, **defaults) if isinstance(b, Beacon)]
    views = summarize_views(beacons[0].view_id, beacons)
    assert len(views) == 1, views
    return views[0]


def numbered(*lines: str) -> list[str]:
    return [f"{line},sn={i}" for i, line in enumerate(lines, 1)]


def test_dashjs_body_from_the_issue__parses_with_inner_lists():
    body = 'bl=(0;v 0;a),cid="vod-1",e=ps,sid="4506",sn=2,sta=r,ts=1795830383559,v=2'
    [b] = parse(body, viewer_id="h:abc", browser="Chrome", received_ms=1795830384000)
    assert (b.view_id, b.video_id, b.kind, b.seq, b.protocol) == ("4506", "vod-1", K.WAITING, 2, "cmcd")
    assert (b.client_ms, b.event_ms, b.viewer_id, b.browser) == (1795830383559, 1795830383559, "h:abc", "Chrome")
    assert b.playhead_ms is None and not b.playhead_estimated


def test_batched_body__every_line_lands_once_and_bad_lines_get_reasons():
    lines = [report(0, sta="s", sn=1), "not a cmcd=(", report(1, sta="p", sn=2),
             'e=ps,sid="x",sta=p,ts=1795830383559,v=2',                 # no cid
             report(2, sta="z", sn=4),                                   # unknown state
             'cid="c",e=ps,sid="x",sta=p,ts=1795830383559',              # v1: no v=2
             report(3, e="e", sn=5),                                     # error without ec
             report(4, sta="p", sn=6).replace(f"ts={T0_MS + 4000}", "ts=1795830383"),  # seconds
             "", report(5, e="t", sta="p", sn=7)]
    out = parse(*lines)
    assert len(out) == 9                       # the blank line is not a record
    reasons = [o.reason for o in out if isinstance(o, DeadLetter)]
    assert reasons == ["invalid_cmcd", "missing_field:cid", "invalid_value:sta",
                       "unsupported_version", "missing_field:ec", "out_of_range:ts"]
    dead = [o for o in out if isinstance(o, DeadLetter)]
    assert dead[0].payload == "not a cmcd=(" and dead[0].source == "collector-1.ndjson:7#1"
    assert [o.kind for o in out if isinstance(o, Beacon)] == [K.PLAY, K.PLAYING, K.PLAYING]


def test_a_record_whose_cmcd_is_not_text_or_empty_is_one_dead_letter():
    [dead] = parse_message(RawRecord(b'{"cmcd": 5}', "f:1"), 1_048_576)
    assert dead.reason == "wrong_type:cmcd"
    [dead] = parse_message(RawRecord(b'{"cmcd": "\\n"}', "f:2"), 1_048_576)
    assert dead.reason == "empty_batch"


def test_keys__bitrate_error_cdn_stream_type_viewer_key_and_player_figures():
    out = parse(report(0, e="bc", sta="p", br="(2400;v 128;a)", cdn='"fastly"', st="v"),
                report(1, e="e", sta="p", ec='("HLS_FRAG_LOAD" "X")'),
                report(2, e="e", sta="f", ec='("MEDIA_ERR_DECODE")'),
                report(3, e="t", sta="p", pt=61000, msd=850, bsd="(1200 300)",
                       **{"com.stallwatch-vid": '"viewer-9"'}),
                viewer_id="h:ip+ua")
    bc, soft, fatal, t = out
    assert (bc.kind, bc.bitrate_bps, bc.rendition, bc.cdn, bc.stream_type) == (
        K.RENDITIONCHANGE, 2_400_000, "2400k", "fastly", "on-demand")
    assert (soft.kind, soft.fatal, soft.error_code) == (K.ERROR, False, "HLS_FRAG_LOAD,X")
    assert (fatal.kind, fatal.fatal, fatal.error_code) == (K.ERROR, True, "MEDIA_ERR_DECODE")
    # bsd is a list per object type: the largest (no type given) or the video
    # member, never a sum of buffers that starved together.
    assert (t.kind, t.playhead_ms, t.reported_startup_ms, t.reported_stall_ms) == (K.PLAYING, 61000, 850, 1200)
    assert t.viewer_id == "viewer-9" and bc.viewer_id == "h:ip+ua"   # the custom key wins


def test_startup_rebuffering_is_startup_not_a_stall():
    # dash.js reports sta=r before its first sta=p: that wait is startup time.
    view = view_of(*numbered(report(0, sta="s"), report(0.2, sta="r"), report(2.5, sta="p"),
                             report(12.5, e="t", sta="p"), report(20, sta="e")))
    assert view.startup_ms == 2500 and view.rebuffer_count == 0 and not view.exited_before_start
    assert view.protocol == "cmcd" and view.max_playhead_ms == 17500      # 17.5 s played


def test_missing_pt__playhead_is_estimated_from_time_spent_playing():
    view = view_of(*numbered(report(0, sta="s"), report(1, sta="p"),
                             report(11, e="t", sta="p"),          # 10 s played
                             report(12, sta="a"), report(20, sta="p"),   # paused 8 s: no advance
                             report(25, sta="r"),                 # stall at 10 + 1 + 5 = 16 s
                             report(29, sta="p"), report(31, sta="e")))
    [stall] = view.stalls
    assert (stall.playhead_ms, stall.duration_ms, stall.playhead_estimated) == (16_000, 4000, True)
    assert view.rebuffer_ms == 4000 and view.max_playhead_ms == 18_000
    assert view.played[0].start_ms == 0 and view.played[-1].end_ms == 18_000


def test_a_reported_pt_wins_and_resets_the_estimate():
    view = view_of(*numbered(report(0, sta="s"), report(1, sta="p", pt=30_000),   # started at 30 s
                             report(6, sta="r"), report(8, sta="p"), report(9, sta="e")))
    [stall] = view.stalls
    assert (stall.playhead_ms, stall.playhead_estimated) == (35_000, True)


def test_after_a_seek_with_unknown_target_stalls_are_counted_but_not_placed():
    view = view_of(*numbered(report(0, sta="s"), report(1, sta="p"),
                             report(5, sta="k"), report(6, sta="r"),   # seek wait: not a stall
                             report(7, sta="p"), report(10, sta="r"), report(12, sta="p"),
                             report(20, e="t", sta="p", pt=90_000),     # pt known again
                             report(22, sta="r"), report(23, sta="p")))
    first, second = view.stalls
    assert first.playhead_ms is None and first.duration_ms == 2000
    assert (second.playhead_ms, second.playhead_estimated) == (92_000, True)
    assert view.seek_count == 1 and view.seek_ms == 2000 and view.rebuffer_count == 2


def test_live_streams_are_never_estimated():
    view = view_of(*numbered(report(0, sta="s", st="l"), report(1, sta="p"),
                             report(5, sta="r"), report(7, sta="p")))
    [stall] = view.stalls
    assert stall.playhead_ms is None and view.stream_type == "live"


def test_live_latency_ltc_places_a_live_view_on_program_time():
    # 8 s behind the live edge at every report: program time = ts - ltc.
    view = view_of(*numbered(report(0, sta="s", st="l", pt=500_000, ltc=8000),
                             report(1, sta="p", pt=500_000, ltc=8000),
                             report(5, sta="r", pt=504_000, ltc=8000),
                             report(7, sta="p", pt=504_000, ltc=10_000)))
    assert view.program_time_from == "latency"
    [stall] = view.stalls
    assert stall.playhead_ms + view.program_offset_ms == T0_MS + 5000 - 8000


def test_sn_duplicates_are_dropped_and_gaps_tolerated():
    lines = numbered(report(0, sta="s"), report(1, sta="p"), report(5, sta="r"), report(7, sta="p"))
    resent = lines[2]                   # a retried POST delivers report 3 again
    gap = [lines[0], lines[1], lines[2], resent, lines[3].replace("sn=4", "sn=9"),
           report(30, sta="e", sn=12)]
    view = view_of(*gap)
    assert view.duplicate_events == 1 and view.rebuffer_count == 1 and view.rebuffer_ms == 2000


def test_no_starting_report__startup_comes_from_msd():
    # Shaka's release build sends no play-state reports: only interval reports.
    view = view_of(*numbered(report(3, e="t", sta="p", msd=1700), report(13, e="t", sta="p")))
    assert view.startup_ms == 1700 and view.reported_startup_ms == 1700


def test_msd_and_bsd_are_kept_to_cross_check_derived_times():
    view = view_of(*numbered(report(0, sta="s"), report(1.2, sta="p", msd=1200),
                             report(6, sta="r"), report(9, sta="p", bsd=3000)))
    assert (view.startup_ms, view.reported_startup_ms) == (1200, 1200)
    assert (view.rebuffer_ms, view.reported_rebuffer_ms) == (3000, 3000)


def test_a_view_sent_as_cmcd_and_as_beacons_counts_its_stall_once():
    beacons = [ev("play", 0, 0, view="s1"), ev("playing", 1, 0, view="s1"),
               ev("waiting", 6, 5, view="s1"), ev("playing", 9, 5, view="s1"),
               ev("ended", 20, 16, view="s1")]
    reports = [b for b in parse(*numbered(report(0, sta="s", cid="vid"), report(1, sta="p", cid="vid"),
                                          report(6, sta="r", cid="vid"), report(9, sta="p", cid="vid")))]
    [view] = summarize_views("s1", beacons + reports)
    assert view.rebuffer_count == 1 and view.rebuffer_ms == 3000 and view.protocol == "beacon"
    assert view.events == 5 and view.duplicate_events == 4


@pytest.mark.parametrize("value, reason", [("sid=?1", "wrong_type:sid"), ("pt=-1", "out_of_range:pt"),
                                           ('pt="x"', "wrong_type:pt"), ('sn="1"', "wrong_type:sn")])
def test_wrongly_typed_keys_are_dead_letters(value, reason):
    line = report(0, sta="p")
    key = value.split("=")[0]
    line = ",".join(p for p in line.split(",") if not p.startswith(key + "=")) + "," + value
    [dead] = parse(line)
    assert isinstance(dead, DeadLetter) and dead.reason == reason


def test_a_seek_in_the_first_second_keeps_the_estimate():
    # Shaka reports sta=k right after its first frame: it positions itself at the start.
    view = view_of(*numbered(report(0, sta="r"), report(0.5, sta="p"), report(0.51, sta="k"),
                             report(0.52, sta="r"), report(0.6, sta="p"),
                             report(4.6, sta="r"), report(9, sta="p")))
    [stall] = view.stalls
    assert (stall.playhead_ms, stall.playhead_estimated) == (4010, True)


# -- reports captured from real players (tests/e2e/capture.py; docs/clients.md) --------------
CAPTURED = os.path.join(ROOT, "tests", "data", "cmcd")
HELD_SEGMENT_START_MS = 4_000      # the captures held segment 3 (media 4-6 s) for 9 s


def captured_views(name: str):
    """The views of one captured file: each POST body becomes one collector record."""
    bodies, current = [], None
    with open(os.path.join(CAPTURED, f"{name}.txt"), encoding="utf-8") as f:
        for line in f:
            if line.startswith("# POST"):
                if current:
                    bodies.append(current)
                current = ""
            else:
                current += line
    bodies.append(current)
    parsed = [p for i, body in enumerate(bodies)
              for p in parse_message(RawRecord(orjson.dumps({"cmcd": body}), f"{name}:{i}"), 1_048_576)]
    assert [p for p in parsed if isinstance(p, DeadLetter)] == []
    [view_id] = {b.view_id for b in parsed}
    return summarize_views(view_id, parsed)


@pytest.mark.parametrize("player", ["hls", "dash", "shaka"])
def test_captured_clean_playback__no_stall_and_a_startup(player):
    # dash.js and Shaka report sta=r before their first sta=p: startup, not a stall.
    [view] = captured_views(f"{player}-clean")
    assert view.rebuffer_count == 0 and not view.exited_before_start and not view.playback_failure
    assert 0 < view.startup_ms < 2_000
    assert view.max_playhead_ms > 35_000          # ~40 s played, estimated from the state timeline


@pytest.mark.parametrize("player", ["hls", "dash", "shaka"])
def test_captured_held_segment__stall_placed_at_the_segment_from_the_state_timeline(player):
    # No player sends pt; the stall's playhead is reconstructed. The browsers
    # saw `waiting` at 3.96 s (hls.js) and 3.88 s (dash.js, Shaka).
    [view] = captured_views(f"{player}-delayed")
    first = view.stalls[0]
    assert first.playhead_estimated
    assert abs(first.playhead_ms - HELD_SEGMENT_START_MS) <= 250, view.stalls
    assert 4_000 <= first.duration_ms <= 9_000       # the 9 s hold minus what was buffered
    assert all(s.playhead_ms is not None for s in view.stalls)


def test_captured_msd__plausible_from_shaka_not_from_dashjs():
    # Cross-check of the player's own media start delay with the derived startup time.
    [shaka] = captured_views("shaka-delayed")
    [dash] = captured_views("dash-delayed")
    assert shaka.startup_ms == shaka.reported_startup_ms        # Shaka sends no sta=s: msd is used
    assert dash.reported_startup_ms < 50 < dash.startup_ms       # dash.js 5.2.1's msd is 1-10 ms


def test_a_recoverable_error_does_not_stop_the_estimate():
    # hls.js reports recoverable errors (e=e without sta=f) while it keeps playing.
    view = view_of(*numbered(report(0, sta="s"), report(1, sta="p"),
                             report(4, e="e", sta="p", ec='("FRAG_LOAD_TIMEOUT")'),
                             report(9, sta="r"), report(11, sta="p")))
    [stall] = view.stalls
    assert (stall.playhead_ms, view.playback_failure) == (8_000, False)


def views_of(*lines: str) -> list:
    beacons = [b for b in parse(*lines) if isinstance(b, Beacon)]
    return summarize_views(beacons[0].view_id, beacons)


def test_starvation__absolute_counters_add_only_their_growth_between_reports():
    """bsa / bsda are the session's totals: the first report with them is the
    baseline, a later one adds only what grew beyond the stalls seen since
    (a second video of the session does not inherit the first's), and no
    report adds more than 10 stalls; a count above a million is a dead letter."""
    movie = [report(0, sta="s", sn=0, pt=0), report(1, sta="p", sn=1, pt=0),
             report(20, sta="r", sn=2), report(22, sta="p", sn=3),
             report(30, e="t", sta="p", sn=4, pt=27000, bsa=1, bsda=2000),
             report(60, e="t", sta="p", sn=5, pt=57000, bsa=3, bsda=5000)]
    [view] = views_of(*movie)
    assert (view.rebuffer_count, view.rebuffer_ms) == (3, 5000)        # 1 seen + 2 that grew
    assert [(s.playhead_ms, s.playhead_uncertainty_ms) for s in view.stalls[1:]] == [(42000, 15000)] * 2
    second = [report(61, sta="p", sn=6, cid="vod-2", pt=0),
              report(90, e="t", sta="p", sn=7, cid="vod-2", pt=29000, bsa=3, bsda=5000)]
    views = views_of(*movie, *second)
    assert [(v.video_id, v.rebuffer_count) for v in views] == [("vod-1", 3), ("vod-2", 0)]
    [flood] = views_of(report(0, sta="p", sn=0, pt=0), report(30, e="t", sta="p", sn=1, pt=30000, bsa=0),
                       report(60, e="t", sta="p", sn=2, pt=60000, bsa=1_000_000))
    assert flood.rebuffer_count == 10
    [dead] = parse(report(0, e="t", sta="p", bsa=10**12))
    assert isinstance(dead, DeadLetter) and dead.reason == "out_of_range:bsa"


def test_starvation__a_stall_seen_through_play_states_is_not_counted_again():
    """A player posting ps to one target and t to another: the interval
    report's bs/bsd during (or just after) a seen stall adds nothing."""
    [view] = views_of(report(0, sta="s", sn=0, pt=0), report(1, sta="p", sn=1, pt=0),
                      report(25, sta="r", sn=2), report(30, e="t", sta="r", sn=3, bs="?1", bsd=5000),
                      report(32, sta="p", sn=4), report(60, e="t", sta="p", sn=5, bs="?1", bsd=2000))
    assert [(s.start_ms - T0_MS, s.duration_ms) for s in view.stalls] == [(25_000, 7_000)]


def test_ads__an_unclosed_break_ends_with_its_ad_a_new_view_or_another_video():
    """An ad that opened its own break (no abs) closes it when it ends; a
    CMCD report of another video during a break whose abe never came starts
    that video's view."""
    [view] = views_of(report(0, sta="s", sn=0, pt=0), report(1, sta="p", sn=1, pt=0),
                      report(31, e="as", sn=2, cid="ad-1"), report(46, e="ae", sn=3, cid="ad-1"),
                      report(47, sta="p", sn=4), report(107, sta="e", sn=5))
    assert (view.ad_ms, view.watch_ms, view.ads) == (15_000, 31_000 + 61_000, 1)
    views = views_of(report(0, sta="s", sn=0, pt=0), report(1, sta="p", sn=1, pt=0),
                     report(61, e="abs", sn=2, nr="?1"), report(61.5, e="as", sn=3, cid="ad-1"),
                     report(77, sta="s", sn=4, cid="vod-2", pt=0), report(78, sta="p", sn=5, cid="vod-2", pt=0),
                     report(138, sta="e", sn=6, cid="vod-2", pt=60000))
    assert [(v.video_id, v.ad_ms, v.watch_ms) for v in views] == [("vod-1", 500, 61_000),
                                                                 ("vod-2", 0, 61_000)]
