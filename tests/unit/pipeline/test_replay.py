"""FileReplay: arrival order across files, a watermark that never overtakes, pacing."""

import json

from apache_beam.testing import test_stream

from pipeline.io.replay import FileReplay, received_ms


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


def _replay(tmp_path, **kw):
    args = dict(speed=0, max_lag_ms=500, drain_ms=0, tick_ms=1_000)
    args.update(kw)
    return list(FileReplay(str(tmp_path / "*.ndjson"), **args).events())


def test_file_replay__leading_lines_without_a_time_take_the_next_ones(tmp_path):
    path = tmp_path / "a.ndjson"
    path.write_text("garbage\n\n" + json.dumps({"received_ms": 1_793_556_000_000}) + "\n")
    replay = FileReplay(str(tmp_path / "*.ndjson"), speed=0, max_lag_ms=500, drain_ms=0)
    events = list(replay.events())
    arrivals = [tv.value.arrival_ms for e in events if isinstance(e, test_stream.ElementEvent)
                for tv in e.timestamped_values]
    assert arrivals == [1_793_556_000_000] * 2      # not 1970: no 56-year watermark walk
    assert replay.blank_lines == 1
    marks = [e.new_watermark.micros // 1000 for e in events
             if isinstance(e, test_stream.WatermarkEvent)]
    assert marks == [1_793_556_000_000 - 500, 1_793_556_000_000]


def test_file_replay__watermark_crosses_a_quiet_hour_in_small_steps(tmp_path):
    _write(tmp_path / "a.ndjson", [0 + 1_000, 3_600_000 + 1_000])
    marks = [e.new_watermark.micros // 1000 for e in _replay(tmp_path, drain_ms=1_200_000)
             if isinstance(e, test_stream.WatermarkEvent)]
    steps = [b - a for a, b in zip(marks, marks[1:])]
    # timers fired by a step emit that far behind the watermark: never more than 10 min
    assert marks[-1] == 3_601_000 + 1_200_000 and max(steps) <= 600_000
