"""The per-view state machine: startup, stalls, seeks, pauses, failures, duplicates."""

import dataclasses
import random

from tests.builders import ev, ms, one_view, watched
from transforms.model import PlayedRange, Stall
from transforms.viewstate import summarize_views


def test_view__startup_watch_and_playing_time():
    v = one_view(ev("viewstart", 0), ev("play", 0.5, 0), ev("playing", 1.7, 0),
                 ev("heartbeat", 11.7, 10), ev("ended", 21.7, 20), ev("viewend", 22))
    assert v.startup_ms == 1200
    assert v.playing_ms == 20_000
    assert v.watch_ms == 21_200          # startup + playing; nothing after ended
    assert v.max_playhead_ms == 20_000
    assert not v.exited_before_start and not v.playback_failure
    assert v.played == (PlayedRange(0, 20_000, None),)


def test_view__waiting_during_startup_is_startup_not_rebuffer():
    v = one_view(ev("play", 0, 0), ev("waiting", 0.1, 0), ev("playing", 3, 0), ev("ended", 13, 10))
    assert v.startup_ms == 3000 and v.rebuffer_count == 0 and v.rebuffer_ms == 0


def test_view__waiting_after_first_frame_is_a_stall():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("heartbeat", 11, 10),
                 ev("waiting", 13, 12), ev("playing", 17, 12), ev("ended", 27, 22))
    assert v.stalls == (Stall(ms(13), 4000, 12_000, None, None),)
    assert v.rebuffer_ms == 4000 and v.watch_ms == 27_000
    assert round(v.rebuffer_pct, 3) == round(100 * 4000 / 27_000, 3)
    assert round(v.rebuffer_per_min, 4) == round(60_000 / 27_000, 4)


def test_view__sdk_rebuffer_events_make_a_stall():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("rebufferstart", 5, 4),
                 ev("rebufferend", 7.5, 4), ev("ended", 10, 6.5))
    assert [(s.playhead_ms, s.duration_ms) for s in v.stalls] == [(4000, 2500)]


def test_view__waiting_and_rebufferstart_together_are_one_stall():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("waiting", 5, 4),
                 ev("rebufferstart", 5.01, 4), ev("rebufferend", 8, 4), ev("playing", 8, 4))
    assert v.rebuffer_count == 1 and v.rebuffer_ms == 3000


def test_view__seek_wait_is_seek_latency_not_rebuffer():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("heartbeat", 11, 10),
                 ev("seeking", 12, 300), ev("waiting", 12.1, 300), ev("seeked", 14, 300),
                 ev("playing", 14.5, 300), ev("heartbeat", 24.5, 310))
    assert v.rebuffer_count == 0
    assert v.seek_count == 1 and v.seek_ms == 2500 and v.seek_latency_ms == 2500
    assert v.watch_ms == 24_500
    # the skipped part was never played ("seeking" reports the target, so the
    # last second before the seek is not known to have been played either)
    assert v.played == (PlayedRange(0, 10_000, None), PlayedRange(300_000, 310_000, None))


def test_view__scrubbing_is_one_seek():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("seeking", 5, 100),
                 ev("seeking", 5.5, 200), ev("seeking", 6, 250), ev("seeked", 6.5, 250),
                 ev("playing", 7, 250))
    assert v.seek_count == 1 and v.seek_ms == 2000


def test_view__seek_while_paused_ends_at_seeked():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("pause", 5, 4), ev("seeking", 10, 60),
                 ev("seeked", 10.4, 60), ev("play", 30, 60), ev("playing", 30.2, 60),
                 ev("ended", 40.2, 70))
    assert v.seek_count == 1 and v.seek_ms == 400
    assert v.watch_ms == 1000 + 4000 + 400 + 200 + 10_000    # the pause is not watch time


def test_view__stall_ends_when_the_playhead_moves_again():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("waiting", 5, 4),
                 ev("heartbeat", 15, 4), ev("heartbeat", 25, 10), ev("ended", 35, 20))
    assert [(s.playhead_ms, s.duration_ms) for s in v.stalls] == [(4000, 20_000)]


def test_view__pause_is_not_watch_time_and_waiting_while_paused_is_ignored():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("pause", 11, 10),
                 ev("waiting", 50, 10), ev("play", 611, 10), ev("playing", 611.5, 10),
                 ev("ended", 621.5, 20))
    # startup 1 s + playing 10 s + resume 0.5 s + playing 10 s; the 600 s pause excluded
    assert v.watch_ms == 21_500 and v.rebuffer_count == 0


def test_view__exit_before_video_start():
    v = one_view(ev("viewstart", 0), ev("play", 0, 0), ev("waiting", 0.2, 0), ev("viewend", 9))
    assert v.exited_before_start and v.startup_ms is None and not v.playback_failure
    assert v.watch_ms == 9000


def test_view__no_play_intent_is_not_an_exit_before_start():
    v = one_view(ev("viewstart", 0), ev("playerready", 1), ev("viewend", 30))
    assert not v.play_requested and not v.exited_before_start and v.watch_ms == 0


def test_view__fatal_error_before_first_frame_is_a_startup_failure_not_ebvs():
    v = one_view(ev("play", 0, 0), ev("error", 2, 0, error_code="E_SRC"), ev("viewend", 3))
    assert v.playback_failure and v.startup_failure and not v.exited_before_start
    assert v.error_code == "E_SRC"


def test_view__fatal_error_mid_play_is_a_playback_failure_only():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("error", 30, 29, error_code="NET"))
    assert v.playback_failure and not v.startup_failure


def test_view__business_and_non_fatal_errors_are_not_failures():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0),
                 ev("error", 5, 4, fatal=False, error_code="WARN"),
                 ev("error", 9, 8, fatal=True, business_error=True), ev("viewend", 10))
    assert not v.playback_failure and v.business_error


def test_view__duplicates_by_event_id_seq_or_content_count_once():
    base = [ev("play", 0, 0, event_id="a"), ev("playing", 1, 0, event_id="b"),
            ev("waiting", 5, 4, seq=7), ev("playing", 7, 4, seq=8), ev("heartbeat", 17, 14)]
    dupes = [ev("playing", 1, 0, event_id="b"), ev("waiting", 5, 4, seq=7), ev("heartbeat", 17, 14)]
    v = one_view(*(base + dupes))
    assert v.duplicate_events == 3 and v.events == 5 and v.rebuffer_count == 1


def test_view__a_resent_seq_is_a_duplicate_even_restamped():
    # An SDK that retries a batch re-stamps it: same seq, a later ts. The
    # second "waiting" must not open a second stall at 6 s.
    v = one_view(ev("play", 0, 0, seq=0), ev("playing", 1, 0, seq=1), ev("waiting", 5, 4, seq=2),
                 ev("playing", 7, 4, seq=3), ev("waiting", 8, 5, seq=2), ev("playing", 9, 5, seq=3),
                 ev("heartbeat", 17, 14, seq=4))
    assert (v.duplicate_events, v.events, v.rebuffer_count, v.rebuffer_ms) == (2, 5, 1, 2_000)


def test_view__arrival_order_does_not_matter():
    beacons = watched("v1", "u1", to_s=300, stall_at_s=120)
    shuffled = beacons[:]
    random.Random(3).shuffle(shuffled)
    assert one_view(*shuffled) == one_view(*beacons)


def test_view__seq_orders_events_when_the_client_clock_jumps():
    # The device clock jumps back 30 s after the stall; seq keeps the real order.
    v = one_view(ev("play", 0, 0, seq=0), ev("playing", 1, 0, seq=1), ev("waiting", 5, 4, seq=2),
                 ev("playing", 7, 4, seq=3), ev("heartbeat", -20, 12, seq=4))
    assert v.rebuffer_count == 1 and v.startup_ms == 1000


def test_view__five_minute_stall_force_ends_the_view():
    beacons = [ev("play", 0, 0), ev("playing", 1, 0), ev("waiting", 10, 9)]
    beacons += [ev("heartbeat", 10 + 10 * i, 9) for i in range(1, 35)]     # stuck for 340 s
    beacons += [ev("playing", 400, 9), ev("heartbeat", 410, 19)]
    first, second = summarize_views("v1", beacons, max_stall_ms=300_000)
    assert first.force_ended and first.rebuffer_ms == 300_000 and first.end_ms == ms(310)
    assert not second.force_ended and second.start_ms == ms(310 + 10)


def test_view__video_change_starts_a_new_view():
    beacons = watched("v1", "u1", video="a", to_s=30) + watched("v1", "u1", video="b",
                                                                 start_s=40, to_s=30)
    views = summarize_views("v1", beacons)
    assert [v.video_id for v in views] == ["a", "b"]
    assert len({v.view_key for v in views}) == 2


def test_view__bitrate_switches_and_time_weighted_average():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0, rendition="480p", bitrate_bps=1_000_000),
                 ev("renditionchange", 11, 10, rendition="720p", bitrate_bps=3_000_000),
                 ev("renditionchange", 41, 40, rendition="480p", bitrate_bps=1_000_000),
                 ev("ended", 51, 50))
    assert (v.upshifts, v.downshifts, v.max_bitrate_bps) == (1, 1, 3_000_000)
    assert v.avg_bitrate_bps == (10 * 1e6 + 30 * 3e6 + 10 * 1e6) * 1000 / 50_000
    assert v.rendition == "720p"


def test_view__stall_keeps_the_rendition_it_started_on():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0, rendition="1080p"),
                 ev("waiting", 5, 4), ev("renditionchange", 6, 4, rendition="480p"),
                 ev("playing", 9, 4))
    assert v.stalls[0].rendition == "1080p"


def test_view__dimensions_and_missing_viewer_id():
    beacons = [dataclasses.replace(b, viewer_id=None, cdn="cdn-a", country="DE")
               for b in watched("v9", "x", to_s=20)]
    v = one_view(*beacons)
    assert v.viewer_id == "view:v9" and v.cdn == "cdn-a" and v.country == "DE"


def test_view__skewed_device_clock_keeps_durations_and_moves_to_the_real_time():
    day = 86_400_000
    beacons = [dataclasses.replace(b, client_ms=b.event_ms + 3 * day)   # device 3 days ahead
               for b in watched("v1", "u1", to_s=60, stall_at_s=30)]
    skewed, honest = one_view(*beacons), one_view(*watched("v1", "u1", to_s=60, stall_at_s=30))
    assert (skewed.start_ms, skewed.end_ms) == (honest.start_ms, honest.end_ms)
    assert skewed.stalls == honest.stalls and skewed.watch_ms == honest.watch_ms
    assert skewed.view_key == f"v1@{ms(0) + 3 * day}"


def _live(*beacons):
    return [dataclasses.replace(b, stream_type="live") for b in beacons]


def test_view__live_program_time_comes_from_the_player_first():
    # hls.js reports the program time (EXT-X-PROGRAM-DATE-TIME) with the
    # playhead: 12 s behind the live edge, then 16 s after a 4 s stall. A
    # latency on the same beacons is not used then.
    v = one_view(*_live(ev("play", 0, 3600), ev("playing", 1, 3600, program_time_ms=ms(1) - 12_000,
                                                   live_latency_ms=99_000),
                        ev("waiting", 11, 3610, program_time_ms=ms(11) - 12_000),
                        ev("playing", 15, 3610, program_time_ms=ms(11) - 12_000),
                        ev("heartbeat", 25, 3620, program_time_ms=ms(25) - 16_000)))
    assert v.program_time_from == "program_time"
    assert v.stalls[0].playhead_ms + v.program_offset_ms == ms(11) - 12_000


def test_view__live_latency_is_taken_against_event_time_not_the_skewed_device_clock():
    # The device clock is 2 h ahead; event time (arrival-bounded) is right.
    # dash.js reports 20 s of latency, 23 s after a 3 s stall.
    beacons = _live(ev("play", 0, 50), ev("playing", 1, 50, live_latency_ms=20_000),
                    ev("waiting", 9, 58, live_latency_ms=20_000),
                    ev("playing", 12, 58, live_latency_ms=23_000),
                    ev("heartbeat", 22, 68, live_latency_ms=23_000))
    v = one_view(*(dataclasses.replace(b, client_ms=b.event_ms + 2 * 3_600_000) for b in beacons))
    assert v.program_time_from == "latency"
    assert v.stalls[0].playhead_ms + v.program_offset_ms == ms(9) - 20_000


def test_view__live_without_program_time_or_latency_stays_on_its_playhead():
    v = one_view(*_live(ev("play", 0, 700), ev("playing", 2, 700), ev("waiting", 30, 728),
                        ev("playing", 34, 728)))
    assert (v.program_offset_ms, v.program_time_from) == (None, None)
    assert v.stalls[0].playhead_ms == 728_000


def test_view__on_demand_has_no_program_time_whatever_the_beacons_say():
    v = one_view(ev("play", 0, 0), ev("playing", 1, 0, program_time_ms=ms(1)),
                 ev("heartbeat", 11, 10, live_latency_ms=5000))
    assert (v.program_offset_ms, v.program_time_from) == (None, None)


def test_view__live_offset_is_fixed_by_the_first_five_estimates():
    # Latency reports jitter by ±300 ms; later ones (a drifting estimate) do not move the
    # view's stalls once five are in.
    latencies = [10_000, 10_300, 9_700, 10_100, 9_900, 14_000, 15_000]
    beacons = [ev("play", 0, 100), ev("playing", 1, 100)]
    beacons += [ev("heartbeat", 1 + 10 * i, 100 + 10 * i, live_latency_ms=lat)
                for i, lat in enumerate(latencies, 1)]
    v = one_view(*_live(*beacons))
    assert v.program_offset_ms == ms(0) - 10_000 - 100_000 + 1_000    # upper median: 10,000
    shorter = one_view(*_live(*beacons[:7]))
    assert shorter.program_offset_ms == v.program_offset_ms


def test_view__a_beacon_ad_break_is_ad_time_and_its_stall_is_the_ads():
    """Beacon v1 ad events (Mux's names): a 30 s mid-roll at 2:00 with a 4 s
    stall 10 s into the ad. One view; the break is ad time, not watch time;
    the stall is the ad's, at its position in the ad, not content rebuffering."""
    view = one_view(*watched("v1", "u1", to_s=300, ad_at_s=120, ad_stall_at_s=10))
    assert (view.video_id, view.ad_breaks, view.ads, view.ad_ms) == ("vid", 1, 1, 34_500)
    assert (view.watch_ms, view.rebuffer_count, view.rebuffer_ms) == (301_000, 0, 0)
    [stall] = view.stalls
    assert (stall.video_id, stall.playhead_ms, stall.duration_ms) == ("ad-7", 10_000, 4_000)
    assert [(r.video_id, r.start_ms, r.end_ms) for r in view.played] == [
        (None, 0, 300_000), ("ad-7", 0, 30_000)]


def test_view__a_preroll_is_not_startup_time():
    """play, a pre-roll from 0.2 s to 15.5 s, the content's first frame 0.7 s
    later: startup 0.9 s, the break ad time."""
    view = one_view(ev("play", 0, 0), ev("adbreakstart", 0.2, 0), ev("adplaying", 0.5, 0, ad_id="pre"),
                    ev("adended", 15.5, 0, ad_id="pre"), ev("adbreakend", 15.5, 0),
                    ev("playing", 16.2, 0), ev("ended", 76.2, 60))
    assert (view.startup_ms, view.ad_ms, view.ads, view.watch_ms) == (900, 15_300, 1, 60_900)


def test_view__the_viewer_leaving_during_a_break_ends_the_view_in_it():
    view = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("adbreakstart", 11, 10),
                    ev("adplaying", 11.5, 10, ad_id="a"), ev("waiting", 15, 10), ev("viewend", 20, 10))
    assert (view.ad_ms, view.watch_ms, view.rebuffer_count, view.end_ms) == (9_000, 11_000, 0, ms(20))
    [stall] = view.stalls
    assert (stall.video_id, stall.playhead_ms, stall.duration_ms) == ("a", 3_500, 5_000)


def test_view__ad_events_in_the_same_millisecond_end_before_what_follows_starts():
    """No seq: back-to-back ads (a ends, b starts in the same ms), and a
    post-roll starting the ms the content ends, are ordered so each ad keeps
    its time and the content its end."""
    pod = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("adbreakstart", 21, 20),
                   ev("adplaying", 21.5, 20, ad_id="a"), ev("adplaying", 30, 20, ad_id="b"),
                   ev("adended", 30, 20, ad_id="a"), ev("waiting", 35, 20), ev("playing", 39, 20),
                   ev("adended", 44, 20, ad_id="b"), ev("adbreakend", 44, 20), ev("playing", 44, 20),
                   ev("ended", 64, 40))
    assert pod.ads == 2 and [(s.video_id, s.playhead_ms, s.duration_ms) for s in pod.stalls] == [("b", 5_000, 4_000)]
    assert [(r.video_id, r.end_ms) for r in pod.played if r.video_id] == [("a", 8_500), ("b", 10_000)]
    post = one_view(ev("play", 0, 0), ev("playing", 1, 0), ev("adbreakstart", 61, 60),
                    ev("ended", 61, 60), ev("adplaying", 61.5, 60, ad_id="p"),
                    ev("adended", 76.5, 60, ad_id="p"), ev("adbreakend", 76.5, 60), ev("viewend", 300, 60))
    assert (post.watch_ms, post.ad_ms) == (61_000, 15_500)
