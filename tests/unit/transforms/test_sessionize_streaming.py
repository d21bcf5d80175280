"""SessionizeViews in streaming (TestStream on the DirectRunner): Mux's view rules in event time."""

import dataclasses
import json

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline, test_stream, util
from apache_beam.transforms.window import TimestampedValue

from tests.builders import T0_MS, ev, watched
from transforms.model import RawRecord
from transforms.parse import ParseBeacons
from transforms.sessionize import SessionizeViews
from transforms.viewstate import summarize_views

S = 1.0   # TestStream times are seconds since the epoch; T0 is our origin


def at(seconds: float) -> float:
    return T0_MS / 1000 + seconds


def stamped(beacons):
    return [TimestampedValue(b, b.event_ms / 1000) for b in beacons]


def streaming():
    return test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"]))


def _with_time(view, t=beam.DoFn.TimestampParam):
    return view.view_key, view.version, view.events, view.watch_ms, round(t.micros / 1e6 - T0_MS / 1000)


def test_streaming__view_emitted_when_complete_then_updated_after_a_10_min_pause():
    before = [ev("play", 0, 0), ev("playing", 1, 0), ev("heartbeat", 11, 10), ev("pause", 21, 20)]
    after = [ev("play", 621, 20), ev("playing", 621.5, 20), ev("heartbeat", 631.5, 30)]
    events = (test_stream.TestStream()
              .advance_watermark_to(at(0))
              .add_elements(stamped(before))
              .advance_watermark_to(at(200))          # 60 s of silence after t=21: complete
              .add_elements(stamped(after))           # resumes within 60 min: same view
              .advance_watermark_to(at(1000))
              .advance_watermark_to_infinity())
    key = f"v1@{T0_MS}"
    with streaming() as p:
        views = (p | events | SessionizeViews()).views
        util.assert_that(views | beam.Map(_with_time), util.equal_to([
            (key, 1, 4, 21_000, 81),                    # emitted at 21 + 60 s, before the view ended
            (key, 2, 7, 21_000 + 10_500, 692),          # same key, higher version: an update
        ]))


def test_streaming__a_beacon_earlier_than_an_emitted_view_keeps_its_key():
    """Reordered in the stream: the view went out keyed by its first beacon
    (t=10 s), then a beacon from t=5 s arrives. The update keeps the key it
    was emitted under; a new key would leave version 1 in the outputs as a
    second view, its events counted twice."""
    base = [ev("play", 10, 0), ev("playing", 11, 0), ev("heartbeat", 21, 10), ev("heartbeat", 31, 20)]
    earlier = ev("heartbeat", 5, 0, seq=99)
    events = (test_stream.TestStream()
              .advance_watermark_to(at(0))
              .add_elements(stamped(base))
              .advance_watermark_to(at(200))                    # complete: version 1
              .add_elements(stamped([earlier]))                 # behind the watermark, kept
              .advance_watermark_to(at(400))
              .advance_watermark_to_infinity())
    key = f"v1@{T0_MS + 10_000}"
    with streaming() as p:
        views = (p | events | SessionizeViews()).views
        util.assert_that(views | beam.Map(lambda v: (v.view_key, v.version, v.events)),
                         util.equal_to([(key, 1, 4), (key, 2, 5)]))


def test_streaming__late_beacon_within_lateness_updates_beyond_goes_to_late_output():
    base = watched("v1", "u1", to_s=30)
    lost = ev("heartbeat", 16, 15, seq=99)                      # delayed in transit
    very_late = ev("heartbeat", 26, 25, seq=100)                # after the view was final
    events = (test_stream.TestStream()
              .advance_watermark_to(at(0))
              .add_elements(stamped(base))
              .advance_watermark_to(at(300))                    # complete: version 1
              .add_elements(stamped([lost]))                    # within 60 min: version 2
              .advance_watermark_to(at(31 + 3600 + 60))         # expired: state released
              .add_elements(stamped([very_late]))
              .advance_watermark_to_infinity())
    with streaming() as p:
        out = p | events | SessionizeViews()
        util.assert_that(out.views | beam.Map(lambda v: (v.version, v.events)),
                         util.equal_to([(1, len(base)), (2, len(base) + 1)]), label="Views")
        util.assert_that(out.late | beam.Map(lambda b: b.seq), util.equal_to([100]), label="Late")


def test_streaming__a_redelivered_beacon_counts_once():
    base = [dataclasses.replace(b, event_id=f"e{i}") for i, b in enumerate(watched("v1", "u1", to_s=30))]
    events = (test_stream.TestStream()
              .advance_watermark_to(at(0))
              .add_elements(stamped(base + [base[3]]))          # redelivered at once
              .advance_watermark_to(at(300))
              .add_elements(stamped([base[4]]))                 # and again after completion
              .advance_watermark_to_infinity())
    with streaming() as p:
        views = (p | events | SessionizeViews()).views
        util.assert_that(views | beam.Map(lambda v: (v.version, v.events, v.duplicate_events)),
                         util.equal_to([(1, len(base), 1), (2, len(base), 2)]))


def test_streaming__out_of_order_beacons_give_the_same_view():
    beacons = watched("v1", "u1", to_s=120, stall_at_s=50)
    expected = summarize_views("v1", beacons)[0]
    events = (test_stream.TestStream()
              .advance_watermark_to(at(0))
              .add_elements(stamped(list(reversed(beacons))[:10]))
              .add_elements(stamped(list(reversed(beacons))[10:]))
              .advance_watermark_to(at(10_000))
              .advance_watermark_to_infinity())
    with streaming() as p:
        views = (p | events | SessionizeViews()).views
        util.assert_that(views, util.equal_to([expected]))


def test_streaming__five_minute_stall_force_ends_the_view():
    beacons = [ev("play", 0, 0), ev("playing", 1, 0), ev("waiting", 10, 9)]
    beacons += [ev("heartbeat", 10 + 10 * i, 9) for i in range(1, 36)]   # stuck 350 s
    beacons += [ev("playing", 400, 9), ev("heartbeat", 410, 19)]
    events = (test_stream.TestStream()
              .advance_watermark_to(at(0))
              .add_elements(stamped(beacons))
              .advance_watermark_to(at(10_000))
              .advance_watermark_to_infinity())
    with streaming() as p:
        views = (p | events | SessionizeViews()).views
        util.assert_that(views | beam.Map(lambda v: (v.force_ended, v.rebuffer_ms)),
                         util.equal_to([(True, 300_000), (False, 0)]))


def test_streaming__skewed_client_clock_is_placed_by_arrival_time():
    day = 86_400_000
    lines = []
    for i, b in enumerate(watched("v1", "u1", to_s=40, stall_at_s=20)):
        record = {"view_id": "v1", "video_id": "vid", "viewer_id": "u1", "event": b.kind.value,
                  "ts": b.event_ms + 2 * day, "seq": i}              # device two days ahead
        if b.playhead_ms is not None:
            record["playhead_ms"] = b.playhead_ms
        lines.append(TimestampedValue(RawRecord(json.dumps(record).encode(), f"s:{i}",
                                                arrival_ms=b.event_ms + 800), b.event_ms / 1000))
    events = (test_stream.TestStream()
              .advance_watermark_to(at(0))
              .add_elements(lines)
              .advance_watermark_to(at(10_000))
              .advance_watermark_to_infinity())
    with streaming() as p:
        views = ((p | events | ParseBeacons()).beacons | SessionizeViews()).views
        util.assert_that(views | beam.Map(lambda v: (v.start_ms - T0_MS, v.rebuffer_ms, v.stalls[0].start_ms - T0_MS)),
                         util.equal_to([(800, 4000, 20_800 + 1000)]))
