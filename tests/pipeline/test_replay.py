"""FileReplay: arrival order across files, a watermark that never overtakes, pacing."""

import json

from apache_beam.testing import test_stream

from pipeline.replay import FileReplay, received_ms


def _write(path, arrivals):
    with open(path, "w") as f:
        for a in arrivals:
            f.write(json.dumps({"view_id": "v", "received_ms": a}) + "\n")


def test_file_replay__merges_by_arrival_and_holds_the_watermark_behind(tmp_path):
    _write(tmp_path / "a.ndjson", [1_000, 1_500, 4_200])
    _write(tmp_path / "b.ndjson", [1_200, 3_000])
    (tmp_path / "b.ndjson").open("a").write("not json\n")          # inherits 3_000
    slept = []
    events = list(FileReplay(str(tmp_path / "*.ndjson"), speed=2.0, max_lag_ms=500,
                             drain_ms=10_000, tick_ms=1_000, sleep=slept.append, clock=lambda: 0.0).events())
    arrivals = [tv.value.arrival_ms for e in events if isinstance(e, test_stream.ElementEvent)
                for tv in e.timestamped_values]
    assert arrivals == [1_000, 1_200, 1_500, 3_000, 3_000, 4_200]
    watermarks = [e.new_watermark.micros // 1000 for e in events
                  if isinstance(e, test_stream.WatermarkEvent)]
    assert watermarks == sorted(watermarks) and watermarks[-1] == 14_200
    # the watermark after each tick trails every element still to come by max_lag
    assert watermarks[:-1] == [500, 2_500, 3_500]
    # 2x speed: 3.2 s of recorded time -> about 1.6 s of sleeping in total
    assert abs(slept[-1] - (4_200 - 1_000) / 1000 / 2.0) < 1e-9


def test_received_ms__from_objects_envelopes_and_arrays():
    assert received_ms(b'{"received_ms": 5}') == 5
    assert received_ms(b'[{"received_ms": 7}, {}]') == 7
    assert received_ms(b"nope") is None and received_ms(b'{"received_ms": true}') is None
