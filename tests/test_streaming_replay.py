"""A generated workload replayed as a stream gives the batch views (final versions)."""

import dataclasses
import json
import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import cli, io, replay
from transforms.parse import ParseBeacons
from transforms.sessionize import SessionizeViews

pytestmark = pytest.mark.integration
INACTIVITY_MS = 3_600_000


class _AppendJson(beam.DoFn):
    """Test sink: one JSON line per view, appended to a local file (in-process runners)."""

    def __init__(self, path):
        self._path = path

    def process(self, view):
        row = dataclasses.asdict(view)
        with open(self._path, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, sort_keys=True, default=str) + "\n")
        return ()


def _views(root, source, path):
    parsed = root | source | ParseBeacons()
    sessions = parsed.beacons | SessionizeViews()
    _ = sessions.views | "Sink" >> beam.ParDo(_AppendJson(path))
    _ = sessions.late | "Late" >> beam.Map(lambda b: (_ for _ in ()).throw(AssertionError(f"late: {b}")))


def _append_paused_view(path):
    """A view that pauses for 15 min: complete (and emitted) during the pause,
    updated when it resumes. Lines go where their arrival time puts them."""
    t0 = 1_793_556_000_000 + 30 * 60_000
    events = [("play", 0, 0), ("playing", 1, 0), ("heartbeat", 11, 10), ("pause", 15, 14),
              ("play", 915, 14), ("playing", 916, 14), ("heartbeat", 926, 24), ("viewend", 930, None)]
    lines = []
    for seq, (kind, at_s, ph_s) in enumerate(events):
        record = {"view_id": "paused-view", "video_id": "v005", "viewer_id": "paused-viewer",
                  "event": kind, "ts": t0 + at_s * 1000, "seq": seq,
                  "received_ms": t0 + at_s * 1000 + 500}
        if ph_s is not None:
            record["playhead_ms"] = ph_s * 1000
        lines.append((record["received_ms"], json.dumps(record)))
    with open(path) as f:
        existing = [(replay.received_ms(l.encode()) or 0, l.rstrip("\n")) for l in f]
    merged = sorted(existing + lines, key=lambda x: x[0])
    with open(path, "w") as f:
        f.write("\n".join(l for _, l in merged) + "\n")
    return "paused-view"


def _read(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    src = tmp_path_factory.mktemp("workload")
    assert cli.main(["generate", f"--out={src}", "--scenario=small", "--viewers=100",
                     "--seed=13"]) == 0
    _append_paused_view(src / "beacons-00000-of-00004.ndjson")
    pattern = str(src / "*.ndjson")
    out = tmp_path_factory.mktemp("views")
    batch, stream = str(out / "batch.jsonl"), str(out / "stream.jsonl")
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as p:
        _views(p, io.ReadBeaconFiles(pattern), batch)
    service = replay.ReplayService(replay.FileReplay(pattern, speed=0, max_lag_ms=300_000,
                                                     drain_ms=2 * INACTIVITY_MS + 1000, tick_ms=10_000))
    with service as endpoint:
        with beam.Pipeline(options=PipelineOptions(["--streaming"])) as p:
            _views(p, io.ReplayBeaconFiles(endpoint), stream)
    with open(src / "truth.json") as f:
        return _read(batch), _read(stream), json.load(f)


def test_replay__final_streaming_views_equal_batch_views(runs):
    batch, stream, truth = runs
    assert len(batch) == truth["views"] + 1 and {v["version"] for v in batch} == {1}
    final = {}
    for v in stream:
        if v["view_key"] not in final or v["version"] > final[v["view_key"]]["version"]:
            final[v["view_key"]] = v
    strip = (lambda v: {k: x for k, x in v.items() if k != "version"})
    assert {k: strip(v) for k, v in final.items()} == {v["view_key"]: strip(v) for v in batch}


def test_replay__streaming_emits_views_early_and_updates_them(runs):
    _, stream, _ = runs
    paused = [(v["version"], v["events"]) for v in stream if v["view_id"] == "paused-view"]
    # emitted when complete during the pause, then updated (same key) after the resume
    assert paused == [(1, 4), (2, 8)]
    # every update carries the next version number of its view_key
    seen = {}
    for v in stream:
        assert v["version"] == seen.get(v["view_key"], 0) + 1
        seen[v["view_key"]] = v["version"]
