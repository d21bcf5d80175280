"""The CLI's alert lines: what each cause's numbers say."""

from pipeline.results import summary
from tests.builders import ms

_CONTENT = {"cause": "content", "video_id": "live-news", "rendition": None,
            "start_ms": ms(0), "end_ms": ms(6.5), "timeline": "program",
            "affected_viewers": 194, "exposed_viewers": 204, "baseline_rate": 0.007, "p_value": 0.0}


def test_describe_alert__a_live_content_alert_is_on_program_time_utc():
    line = summary.describe_alert(_CONTENT)
    assert "program 18:00:00-18:00:06 UTC  194/204 viewers stalled" in line


def test_describe_alert__an_on_demand_content_alert_is_on_the_playhead():
    line = summary.describe_alert({**_CONTENT, "start_ms": 720_800, "end_ms": 723_600,
                                   "timeline": "playhead"})
    assert "playhead 12:00.8-12:03.6  194/204 viewers stalled" in line


def test_describe_alert__delivery_counts_the_viewers_of_its_peak_bucket():
    line = summary.describe_alert({"cause": "delivery", "dimension": "cdn", "value": "cdn-b",
                                   "start_ts": ms(0), "end_ts": ms(240), "affected_viewers": 125,
                                   "exposed_viewers": 175, "baseline_rate": 0.017, "p_value": 1e-9})
    assert "18:00:00-18:04:00 UTC  125/175 viewers stalled in the peak bucket" in line
