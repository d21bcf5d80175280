"""SessionizeViews in a pipeline: inactivity splits views, pauses do not."""

import apache_beam as beam
import pytest
from apache_beam.testing import util
from apache_beam.transforms.window import TimestampedValue

from tests.builders import ev, fn_api_pipeline, watched
from transforms.sessionize import SessionizeViews


def _stamped(beacons):
    return [TimestampedValue(b, b.event_ms / 1000) for b in beacons]


def test_sessionize_views__inactivity_splits_a_view_id_in_two():
    # Same view_id; 2 h of silence between the two halves (> 60 min inactivity).
    beacons = watched("v1", "u1", to_s=60) + watched("v1", "u1", start_s=7300, to_s=60, stall_at_s=30)
    with fn_api_pipeline() as p:
        views = (p | beam.Create(_stamped(beacons)) | SessionizeViews(inactivity_s=3600)).views
        util.assert_that(views | beam.Map(lambda v: (v.view_id, v.rebuffer_count)),
                         util.equal_to([("v1", 0), ("v1", 1)]))


def test_sessionize_views__a_40_minute_pause_stays_one_view():
    beacons = [ev("play", 0, 0), ev("playing", 1, 0), ev("pause", 11, 10),
               ev("play", 2411, 10), ev("playing", 2412, 10), ev("heartbeat", 2422, 20),
               ev("heartbeat", 2422, 20)]     # the last one is a redelivered duplicate
    with fn_api_pipeline() as p:
        views = (p | beam.Create(_stamped(beacons)) | SessionizeViews(inactivity_s=3600)).views
        util.assert_that(views | beam.Map(lambda v: (v.view_id, v.watch_ms, v.duplicate_events)),
                         util.equal_to([("v1", 1000 + 10_000 + 1000 + 10_000, 1)]))


def test_sessionize_views__separate_view_ids_are_separate_views():
    beacons = watched("a", "u1", to_s=30) + watched("b", "u1", to_s=30, stall_at_s=10)
    with fn_api_pipeline() as p:
        views = (p | beam.Create(_stamped(beacons)) | SessionizeViews()).views
        util.assert_that(views | beam.Map(lambda v: (v.view_id, v.rebuffer_count)),
                         util.equal_to([("a", 0), ("b", 1)]))


@pytest.mark.parametrize("kw", [{"inactivity_s": 0}, {"max_stall_s": -1}])
def test_sessionize_views__rejects_bad_settings(kw):
    with pytest.raises(ValueError):
        SessionizeViews(**kw)
