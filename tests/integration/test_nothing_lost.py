"""Nothing is lost silently, in any mode: every run checks read = accounted and
fails with the figures otherwise, a failed run leaves the previous results in
place, and a streaming replay takes every file a batch run takes."""

import glob
import json
import os
import random

import apache_beam as beam
import pytest

from pipeline import cli
from pipeline.io import files
from pipeline.results import outputs
from tests import runs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    """A messy generated audience (duplicates, malformed lines, skewed device
    clocks) as one file without receive times, its lines shuffled."""
    src = tmp_path_factory.mktemp("generated")
    assert cli.main(["generate", f"--out={src}", "--scenario=small", "--viewers=40",
                     "--seed=21"]) == 0
    lines = []
    for path in sorted(glob.glob(str(src / "*.ndjson"))):
        with open(path, "rb") as f:
            for line in f:
                lines.append(_without_receive_time(line.rstrip(b"\n")))
    random.Random(5).shuffle(lines)
    bare = tmp_path_factory.mktemp("bare")
    with open(bare / "beacons.ndjson", "wb") as f:
        f.write(b"\n".join(lines) + b"\n")
    with open(src / "truth.json") as f:
        return bare, json.load(f)


def _without_receive_time(line: bytes) -> bytes:
    try:
        message = json.loads(line)
    except ValueError:
        return line                               # malformed lines stay as they are
    for item in message if isinstance(message, list) else [message]:
        if isinstance(item, dict):
            item.pop("received_ms", None)
    return json.dumps(message).encode()


@pytest.fixture(scope="module")
def batch(workload, tmp_path_factory):
    src, _ = workload
    out = tmp_path_factory.mktemp("batch")
    assert cli.main(["run", f"--source={src}", f"--output={out}"]) == 0
    return str(out)


def test_batch__read_equals_accounted(batch, workload):
    _, truth = workload
    accounting = runs.summary(batch)["accounting"]
    assert accounting["ok"] and accounting["problems"] == []
    assert accounting["messages_read"] == accounting["messages_parsed"] == truth["lines"]
    assert accounting["records"] == truth["input_records"]
    written = accounting["written"]
    assert written["events_in_views"] + written["duplicates_dropped"] + written["late_beacons"] \
        == accounting["events"] == truth["parsed_events"]


def test_streaming_replay__a_file_without_receive_times_shuffled_and_skewed(batch, workload,
                                                                           tmp_path):
    src, truth = workload
    out = tmp_path / "stream"
    assert cli.main(["run", "--streaming", f"--source={src}", f"--output={out}",
                     "--replay_tick_s=60"]) == 0
    stream = runs.summary(str(out))
    assert stream["mode"] == "streaming" and stream["accounting"]["ok"]
    assert stream["accounting"]["messages_read"] == truth["lines"]
    for key in ("input_records", "parsed_events", "dead_letters", "dead_letters_by_reason",
                "duplicates_dropped", "views", "alerts"):
        assert stream[key] == runs.summary(batch)[key], key
    # paced by event time, in order: nothing arrives after its view was final,
    # and every final view is the batch run's
    assert stream["late_beacons"] == 0
    assert _final_views(str(out)) == _final_views(batch)


def _final_views(output: str) -> list[dict]:
    rows = outputs.views(output).to_pylist()
    return sorted(({k: v for k, v in r.items() if k != "version"} for r in rows),
                  key=lambda r: r["view_key"])


class _LoseEveryTenthView(beam.PTransform):
    """A views sink that silently drops some views: what the check must catch."""

    def __init__(self, sink):
        super().__init__()
        self._sink = sink

    def expand(self, views):
        return (views | "Lose" >> beam.Filter(lambda v: not v.view_key.endswith("0"))
                | "Write" >> self._sink)


def test_a_lossy_sink__fails_with_the_figures_and_keeps_the_previous_results(
        batch, workload, monkeypatch, tmp_path, capsys):
    src, _ = workload
    out = tmp_path / "out"
    assert cli.main(["run", f"--source={src}", f"--output={out}"]) == 0
    before = {p: open(p, "rb").read() for p in glob.glob(str(out / "*")) if os.path.isfile(p)}
    file_sinks = files.file_sinks
    monkeypatch.setattr(files, "file_sinks", lambda *a, **kw: file_sinks(*a, **kw)._replace(
        views=_LoseEveryTenthView(file_sinks(*a, **kw).views)))
    assert cli.main(["run", f"--source={src}", f"--output={out}"]) == 1
    error = capsys.readouterr().err
    assert "records read and records accounted differ" in error and "in the outputs" in error
    after = {p: open(p, "rb").read() for p in glob.glob(str(out / "*")) if os.path.isfile(p)}
    assert after == before                                   # the good run's results stand
    failed = runs.summary(str(out / files.PARTIAL))["accounting"]
    assert not failed["ok"] and failed["written"]["events_in_views"] < failed["events"]


@pytest.mark.parametrize("source,flags", [
    (None, ["--runner=NoSuchRunner"]),
    ("kinesis://no-such-stream?endpoint=http://127.0.0.1:9", ["--streaming"]),
])
def test_a_run_that_cannot_start__leaves_the_previous_results(batch, workload, tmp_path,
                                                              capsys, source, flags):
    src, _ = workload
    out = tmp_path / "out"
    assert cli.main(["run", f"--source={src}", f"--output={out}"]) == 0
    before = sorted(os.listdir(out))
    capsys.readouterr()
    assert cli.main(["run", f"--source={source or src}", f"--output={out}", *flags]) == 2
    assert capsys.readouterr().err.count("\n") == 1          # one line, no traceback
    assert sorted(os.listdir(out)) == before
