"""DetectStallClusters on hand-built views: what it must find and must not."""

import dataclasses
import math
import random

import apache_beam as beam
import pytest
from apache_beam.testing import util

from tests.builders import as_member, final_alerts, fn_api_pipeline, make_view, ms
from transforms.alerting import alert_id
from transforms.model import Cause
from transforms.stalls import DetectStallClusters
from transforms.thresholds import Thresholds


def _check(views, check, thresholds=None):
    with fn_api_pipeline() as p:
        alerts = (p | beam.Create(views) | beam.Map(as_member)
                  | DetectStallClusters(thresholds))
        util.assert_that(alerts, lambda out: check(final_alerts(out)))


def _audience(n, video="vid", stall_at=None, stallers=(), prefix="u", start_s=0, **dims):
    """n viewers play 0-600 s of a video; those in ``stallers`` stall at ``stall_at`` s."""
    return [make_view(f"{prefix}{i}-view", f"{prefix}{i}", video, start_s=start_s + 7 * i,
                      stalls=((start_s + 7 * i + stall_at, stall_at),) if i in stallers else (),
                      **dims)
            for i in range(n)]


def _content(alerts):
    return [a for a in alerts if a.cause is Cause.CONTENT]


def test_detect__content_cluster_with_a_tight_interval():
    views = _audience(40, stall_at=300.5, stallers=range(12), cdn="cdn-a")
    views += [make_view(f"x{i}", f"x{i}", start_s=3, stalls=((100 + 50 * i, 50 + 120 * i),))
              for i in range(3)]                               # scattered background stalls

    def check(alerts):
        [a] = _content(alerts)
        assert a.video_id == "vid" and a.rendition is None
        assert 300_000 <= a.start_ms <= a.end_ms <= 301_000
        assert a.affected_viewers == 12 and a.exposed_viewers == 43
        assert a.p_value < 1e-6 and a.observed_rate > 3 * a.baseline_rate
        assert dict(dict(a.breakdown)["cdn"]) == {"cdn-a": 12}
    _check(views, check)


def test_detect__same_finding_same_alert_id_whatever_the_input_order():
    views = _audience(40, stall_at=300.5, stallers=range(12))
    # named by the bucket of the earliest stall in wall-clock time: 300.5 s is in 5 s bucket 60
    expected = [alert_id("content", "vid", None, 60)]
    for ordered in (views, list(reversed(views))):
        _check(ordered, lambda alerts: util.equal_to(expected)([a.alert_id for a in alerts]))


def test_detect__a_title_with_three_viewers_is_not_enough():
    _check(_audience(3, stall_at=180, stallers=range(3)), util.equal_to([]))


def test_detect__four_stalled_viewers_stay_below_min_viewers():
    _check(_audience(40, stall_at=180, stallers=range(4)), util.equal_to([]))


def test_detect__min_viewers_is_configurable():
    def check(alerts):
        assert len(_content(alerts)) == 1
    _check(_audience(40, stall_at=180, stallers=range(4)), check, Thresholds(min_viewers=4))


def test_detect__rendition_specific_fault():
    views = _audience(30, stall_at=300, stallers=range(10), rendition="1080p")
    views += _audience(30, prefix="w", rendition="480p")

    def check(alerts):
        [a] = _content(alerts)
        assert a.rendition == "1080p" and a.affected_viewers == 10
    _check(views, check)


def test_detect__fault_on_every_rendition_is_video_wide():
    views = _audience(30, stall_at=300, stallers=range(10), rendition="1080p")
    views += _audience(30, prefix="w", stall_at=300, stallers=range(10), rendition="480p")

    def check(alerts):
        [a] = _content(alerts)
        assert a.rendition is None and a.affected_viewers == 20
    _check(views, check)


def test_detect__cdn_outage_in_a_premiere_is_delivery_not_content():
    # 60 viewers watch a premiere with aligned playheads (playhead = wall time);
    # at 300 s the cdn-b half stalls together, as do cdn-b viewers of other videos.
    views = []
    for i in range(60):
        cdn = "cdn-b" if i % 2 else "cdn-a"
        stalls = ((300 + i % 5, 300 + i % 5),) if cdn == "cdn-b" else ()
        views.append(make_view(f"p{i}", f"p{i}", "premiere", start_s=0, stalls=stalls, cdn=cdn))
    for i in range(40):
        cdn = "cdn-b" if i % 2 else "cdn-a"
        stalls = ((310, 100 + 7 * i),) if cdn == "cdn-b" else ()
        views.append(make_view(f"o{i}", f"o{i}", f"other{i % 8}", start_s=0, stalls=stalls, cdn=cdn))

    def check(alerts):
        assert _content(alerts) == []
        [d] = [a for a in alerts if a.cause is Cause.DELIVERY]
        assert (d.dimension, d.value) == ("cdn", "cdn-b")
        assert d.affected_viewers == 50 and d.start_ts <= views[0].start_ms + 300_000 < d.end_ts
    _check(views, check)


def test_detect__bad_wifi_viewer_is_flagged_and_creates_no_content_alert():
    views = _audience(60, stall_at=200, stallers=range(4))          # 4: not enough alone
    for j in range(3):                                              # one viewer stalls everywhere
        views.append(make_view(f"bad-{j}", "bad", "vid", start_s=1000 * j,
                               stalls=tuple((1000 * j + s, s) for s in (50, 200, 330, 470))))

    def check(alerts):
        assert _content(alerts) == []
        [v] = [a for a in alerts if a.cause is Cause.VIEWER]
        assert v.viewer_id == "bad" and v.stalls == 12
    _check(views, check)


def test_thresholds__validate():
    for bad in ({"min_viewers": 0}, {"content_alpha": 1.5}, {"min_rate_ratio": 0.5},
                {"delivery_dimensions": ()}, {"prior_viewer_windows": -1}):
        with pytest.raises(ValueError):
            Thresholds(**bad)


def _binomial_tail(k, n, p):
    """P(X >= k), X ~ Binomial(n, p), summed exactly term by term."""
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def test_detect__a_content_alert_has_the_numbers_worked_by_hand_from_the_docs():
    """40 viewers play 0-600 s of one video, one a minute (no delivery
    bucket sees two stalls). 10 stall at 302 s; 8 others stall once each at
    scattered positions. Worked from docs/detection.md, not from the code:

    - buckets of 5 s: a viewer plays buckets 0-120; window w holds buckets w
      and w + 1, so each viewer is exposed to windows -1..120: 122 windows,
      exposed = 40 x 122 = 4,880 viewer-windows;
    - each stall counts in the two windows holding its bucket: stalled =
      18 x 2 = 36 viewer-windows; windows 59 and 60 (bucket 60) have k = 10
      of n = 40;
    - one video, so the global rate g = 36 / 4,880 and the baseline outside
      the window p0 = (36 - 10 + 500 g) / (4,880 - 40 + 500);
    - observed 10 / 40 = 0.25 >= 3 p0, and P(X >= 10 | Bin(40, p0)) < 10^-3 / 122;
    - the background windows have k = 1 < 5: one alert, 10 of 40 viewers.
    """
    views = [make_view(f"u{i}-view", f"u{i}", "vid", start_s=60 * i, cdn="cdn-a",
                       stalls=(((60 * i + 302), 302),) if i < 10 else
                       (((60 * i + 40 + 60 * (i - 10)), 40 + 60 * (i - 10)),) if i < 18 else ())
             for i in range(40)]
    g = 36 / 4_880
    p0 = (36 - 10 + 500 * g) / (4_880 - 40 + 500)
    p_value = _binomial_tail(10, 40, p0)
    assert 0.25 >= 3 * p0 and p_value < 1e-3 / 122                 # the hand-worked verdict

    def check(alerts):
        [a] = alerts
        assert a.cause is Cause.CONTENT and a.video_id == "vid" and a.rendition is None
        assert (a.start_ms, a.end_ms) == (302_000, 302_000)
        assert (a.affected_viewers, a.exposed_viewers, a.stalls) == (10, 40, 10)
        assert a.observed_rate == 0.25 and a.baseline_rate == round(p0, 6)
        assert math.isclose(a.p_value, p_value, rel_tol=1e-9)
    _check(views, check)


def test_detect__significance_is_corrected_for_the_windows_of_the_video():
    """5 of 40 viewers stall at 302 s and 20 others once each, 13 s apart
    (20-267 s). By hand: stalled = 2 x 25 = 50 viewer-windows of 4,880,
    p0 = (50 - 5 + 500 g) / 5,340 with g = 50 / 4,880, and P(X >= 5 |
    Bin(40, p0)) = 3.6e-5: below content_alpha (10^-3) but above 10^-3 / 122
    windows, so no alert; with content_alpha 122 times larger, the alert."""
    views = [make_view(f"u{i}-view", f"u{i}", "vid", start_s=60 * i, cdn="cdn-a",
                       stalls=((60 * i + 302, 302),) if i < 5 else
                       ((60 * i + 20 + 13 * (i - 5), 20 + 13 * (i - 5)),) if i < 25 else ())
             for i in range(40)]
    g = 50 / 4_880
    p_value = _binomial_tail(5, 40, (50 - 5 + 500 * g) / 5_340)
    assert 1e-3 / 122 < p_value < 1e-3

    def silent(alerts):
        assert _content(alerts) == [], alerts
    _check(views, silent)

    def check(alerts):
        [a] = _content(alerts)
        assert (a.affected_viewers, a.exposed_viewers) == (5, 40)
        assert math.isclose(a.p_value, p_value, rel_tol=1e-9)
    _check(views, check, Thresholds(content_alpha=1e-3 * 122))


def _live_audience(n, stall_program_s=None, stall_wall_s=None, stall_cdn=None, seed=5):
    """n viewers of a live event on three CDNs, each with their own playhead
    origin and 6-30 s latency, watching 0-1200 s of program time (relative
    to T0). Every second one stalls at program time ``stall_program_s``
    (reaching it at their own wall time), or, on ``stall_cdn``, at wall time
    ``stall_wall_s`` (wherever their playhead is)."""
    rng = random.Random(seed)
    views = []
    for i in range(n):
        origin_s, latency_s = rng.randint(0, 7200), rng.uniform(6, 30)
        offset_ms = ms(0) - int(latency_s * 1000) - origin_s * 1000     # program - playhead
        cdn = ("cdn-a", "cdn-b", "cdn-c")[i % 3]
        stalls = ()
        if stall_program_s is not None and i % 2:
            stalls = ((stall_program_s + latency_s, origin_s + latency_s + stall_program_s),)
        if stall_cdn == cdn:
            stalls = ((stall_wall_s, origin_s + stall_wall_s - 2),)
        view = make_view(f"live{i}", f"l{i}", "live", start_s=latency_s,
                         played=((origin_s, origin_s + 1200, None),), stalls=stalls, cdn=cdn,
                         stream_type="live")
        views.append(dataclasses.replace(view, program_offset_ms=offset_ms,
                                         program_time_from="latency"))
    return views


def test_detect__a_live_fault_lines_up_on_program_time_across_cdns():
    # 30 of 60 viewers stall when their own playback reaches program time
    # 600 s: at wall 606-630 s, at 60 different playheads.
    views = _live_audience(60, stall_program_s=600)

    def check(alerts):
        [a] = _content(alerts)
        assert (a.video_id, a.timeline, a.affected_viewers) == ("live", "program", 30)
        assert ms(600) - 1000 <= a.start_ms <= a.end_ms <= ms(600) + 1000
        assert sorted(dict(dict(a.breakdown)["cdn"])) == ["cdn-a", "cdn-b", "cdn-c"]
        assert [x for x in alerts if x.cause is Cause.DELIVERY] == []
    _check(views, check)


def test_detect__a_live_fault_is_missed_on_the_playhead_timeline():
    # The same views without program time: the stalls do not line up.
    views = [dataclasses.replace(v, program_offset_ms=None)
             for v in _live_audience(60, stall_program_s=600)]

    def check(alerts):
        assert _content(alerts) == []
    _check(views, check)


def test_detect__a_cdn_outage_during_a_live_event_stays_delivery():
    views = _live_audience(60, stall_wall_s=300, stall_cdn="cdn-b")

    def check(alerts):
        assert _content(alerts) == []
        [d] = [a for a in alerts if a.cause is Cause.DELIVERY]
        assert (d.dimension, d.value, d.affected_viewers, d.exposed_viewers) == \
            ("cdn", "cdn-b", 20, 20)
    _check(views, check)


def test_detect__a_delivery_alert_counts_viewers_and_views_of_one_bucket():
    # cdn-b fails for 3 minutes while its audience turns over every minute:
    # 8 of its 10, 12 and 14 views of each minute stall (24 viewers in all).
    # The peak bucket, where the rate and the evidence are highest, is the first.
    views = []
    for minute in range(3):
        for i in range(10 + 2 * minute):
            start = 300 + 60 * minute + i
            stalls = ((start + 20, 20),) if i < 8 else ()
            views.append(make_view(f"b{minute}-{i}", f"b{minute}-{i}", f"v{i}", start_s=start,
                                   end_s=start + 40, played=((0, 40, None),), stalls=stalls,
                                   cdn="cdn-b"))
    views += [make_view(f"a{i}", f"a{i}", f"v{i}", start_s=0, played=((0, 900, None),), cdn="cdn-a")
              for i in range(40)]

    def check(alerts):
        [d] = [a for a in alerts if a.cause is Cause.DELIVERY]
        assert (d.affected_viewers, d.exposed_viewers, d.observed_rate) == (8, 10, 0.8)
        assert d.stalls == 24
    _check(views, check)
