"""Charts are reproducible SVG: the same data gives the same bytes."""

import time
import warnings

from pipeline.results import charts


def test_charts__same_data_same_svg():
    first = charts.bars(["a", "b"], [3, 1], "stalls", "Stalls")
    time.sleep(1.1)                      # a timestamp in the output would now differ
    assert charts.bars(["a", "b"], [3, 1], "stalls", "Stalls") == first
    assert first.startswith("<svg") and "dc:date" not in first


def test_playhead_profile__a_live_alert_is_drawn_on_a_wall_clock_axis():
    from tests.builders import ms
    starts = [ms(2 * i) for i in range(125)]          # the zoom of a 6 s alert: 4 min 10 s
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)     # matplotlib: no tick interval found
        svg = charts.playhead_profile(starts, [0] * 125, [10] * 125, (ms(60), ms(66)), "live",
                                      program=True)
    assert "program time (UTC" in svg and "18:01" in svg and "playhead (minutes)" not in svg
