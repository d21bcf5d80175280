"""Detection in streaming (TestStream on the DirectRunner): content alerts fire
while the views involved are still playing, are refined as more viewers stall,
closed when the stalls stop, and retracted when later evidence undoes them."""

import dataclasses
import heapq

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline, test_stream, util
from apache_beam.transforms.window import TimestampedValue

from tests.builders import T0_MS, final_alerts, watched
from transforms.model import AlertStatus, Cause
from transforms.sessionize import SessionizeViews
from transforms.stalls import DetectStallClusters, detect
from transforms.thresholds import Thresholds
from transforms.viewstate import summarize_views

STALL_AT_S = 300


def at(seconds: float) -> float:
    return T0_MS / 1000 + seconds


def _audience(n: int, stallers: range, spacing_s: int = 20):
    """n viewers start ``spacing_s`` apart and play 0-600 s of one video;
    those in ``stallers`` stall for 4 s at playhead 300 s."""
    return [watched(f"v{i}", f"u{i}", start_s=spacing_s * i, to_s=600,
                    stall_at_s=STALL_AT_S if i in stallers else None, cdn=f"cdn-{i % 3}")
            for i in range(n)]


def _stream(views, step_s: int = 10, lag_s: int = 300):
    """Beacons in event-time order, in steps of ``step_s``; the watermark
    trails by ``lag_s`` (as the replay holds it behind arrival)."""
    beacons = list(heapq.merge(*views, key=lambda b: b.event_ms))
    events = test_stream.TestStream().advance_watermark_to(at(-lag_s))
    step = []
    boundary = T0_MS + step_s * 1000
    for b in beacons:
        if b.event_ms >= boundary and step:
            events = (events.add_elements(step)
                      .advance_watermark_to((boundary - lag_s * 1000) / 1000))
            step = []
            while b.event_ms >= boundary:
                boundary += step_s * 1000
        step.append(TimestampedValue(b, b.event_ms / 1000))
    events = events.add_elements(step)
    # Far enough for every view to expire and every alert to close, in steps
    # of at most 10 minutes: the DirectRunner fires no timer on the jump to
    # +infinity itself, and holds no watermark for pending timers, so one
    # big jump would let a later stage's GC run before an earlier stage's
    # timer output reaches it (docs/streaming.md).
    end_ms = beacons[-1].event_ms + 3 * 3_600_000
    mark = boundary - lag_s * 1000
    while mark < end_ms:
        mark = min(end_ms, mark + 600_000)
        events = events.advance_watermark_to(mark / 1000)
    return events.advance_watermark_to_infinity()


def _run(events, check):
    with test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"])) as p:
        sessions = p | events | SessionizeViews(progress_s=30)
        alerts = sessions.progress | DetectStallClusters(every_s=10, close_after_s=300)
        util.assert_that(alerts, check)


def test_streaming_detect__content_alert_fires_early_is_refined_then_closed():
    views = _audience(24, stallers=range(0, 24, 2))            # 12 of 24 stall at 5:00
    stall_ms = sorted(T0_MS + (20 * i + 1 + STALL_AT_S) * 1000 for i in range(0, 24, 2))

    def check(alerts):
        content = sorted((a for a in alerts if a.cause is Cause.CONTENT), key=lambda a: a.version)
        assert content, "no content alert"
        assert len({a.alert_id for a in content}) == 1          # one finding, one id
        first, last = content[0], content[-1]
        assert first.version == 1 and first.status is AlertStatus.OPEN
        # Early: evaluated at the stall of the 5th affected viewer at the latest
        # (plus one evaluation period), long before the views involved end
        # (each plays 300 s past its stall) and before the watermark (300 s
        # behind) could have passed even the stalls.
        assert first.as_of_ms <= stall_ms[4] + 10_000, (first.as_of_ms - stall_ms[4])
        assert first.as_of_ms < min(stall_ms[:first.affected_viewers]) + 300_000
        # Refined as more viewers stall, with the same id and growing versions.
        assert [a.version for a in content] == list(range(1, len(content) + 1))
        assert max(a.affected_viewers for a in content) == 12 > first.affected_viewers
        # Closed once no new affected stall came for close_after_s.
        assert last.status is AlertStatus.CLOSED and last.affected_viewers == 12
        assert last.as_of_ms >= stall_ms[-1] + 300_000
        assert 300_000 <= last.start_ms <= last.end_ms <= 301_000
    _run(_stream(views), check)


def test_streaming_detect__final_alerts_equal_batch_detection_of_the_same_views():
    views = _audience(30, stallers=range(0, 30, 3))
    # Batch: every view complete, detected once (the closed state is final).
    done = sorted((summarize_views(v[0].view_id, v)[0] for v in views), key=lambda v: v.view_key)
    expected = _findings(dataclasses.replace(a, status=AlertStatus.CLOSED)
                         for a in detect(done, Thresholds()))
    assert expected, "the workload must produce alerts"

    def check(alerts):
        assert _findings(final_alerts(alerts)) == expected
    _run(_stream(views), check)


def _findings(alerts):
    """What an operator acts on: cause, subject, extent, counts, test, status."""
    return sorted((a.cause.value, a.video_id, a.rendition, a.start_ms, a.end_ms, a.dimension,
                   a.value, a.viewer_id, a.start_ts, a.end_ts, a.affected_viewers,
                   a.exposed_viewers, a.stalls, a.p_value, a.status.value)
                  for a in alerts)


def test_streaming_detect__an_early_alert_is_retracted_when_the_audience_outgrows_it():
    """The first 6 viewers all stall at 5:00: with 6 of 6 exposed the
    window is significant and an alert opens early. The next 54 play through
    5:00 without stalling, each stalling once elsewhere (a baseline of about
    1.5 % per viewer-window): 6 of 60 at 5:00 is no longer significant at
    10^-3 over the video's windows, so the alert is retracted; batch
    detection of the same complete views finds nothing."""
    views = [watched(f"v{i}", f"u{i}", start_s=20 * i, to_s=600, cdn=f"cdn-{i % 3}",
                     stall_at_s=STALL_AT_S if i < 6 else 20 + (i * 47) % 250 + (i % 2) * 320)
             for i in range(60)]
    done = [summarize_views(v[0].view_id, v)[0] for v in views]
    assert not [a for a in detect(done, Thresholds()) if a.cause is Cause.CONTENT]

    def check(alerts):
        content = sorted((a for a in alerts if a.cause is Cause.CONTENT), key=lambda a: a.version)
        assert content, "no early alert"
        assert len({a.alert_id for a in content}) == 1
        assert content[0].status is AlertStatus.OPEN and content[0].affected_viewers >= 5
        assert content[-1].status is AlertStatus.RETRACTED
        assert content[-1].version == len(content)
        assert final_alerts(content) == []
    _run(_stream(views), check)


def test_streaming_detect__stalls_in_an_ad_make_an_alert_on_the_ad_as_in_batch():
    """30 viewers see ad-7 as a mid-roll at 2:00; every third stalls 10 s into
    it. The cluster is the ad's (its id, its position), found the same way in
    batch and streaming; the content has no alert."""
    views = [watched(f"v{i}", f"u{i}", start_s=20 * i, to_s=300, ad_at_s=120,
                     ad_stall_at_s=10 if i % 3 == 0 else None, cdn=f"cdn-{i % 3}")
             for i in range(30)]
    done = sorted((summarize_views(v[0].view_id, v)[0] for v in views), key=lambda v: v.view_key)
    batch = detect(done, Thresholds())
    assert [(a.cause, a.video_id) for a in batch] == [(Cause.CONTENT, "ad-7")]
    assert batch[0].start_ms <= 10_000 <= batch[0].end_ms and batch[0].affected_viewers == 10
    expected = _findings(dataclasses.replace(a, status=AlertStatus.CLOSED) for a in batch)

    def check(alerts):
        assert _findings(final_alerts(alerts)) == expected
    _run(_stream(views), check)
