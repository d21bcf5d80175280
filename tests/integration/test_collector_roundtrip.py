"""What the collector writes, `stallwatch run --source=` reads unchanged in meaning.

A generated audience is POSTed line by line to a real `stallwatch collect`
process; the run over its sink must produce the views of a run over the
original files, field for field, with the collector's user-agent metadata
filling only the dimensions the beacons left empty.
"""

from __future__ import annotations

import concurrent.futures
import glob
import os
import signal
import uuid

import pytest

from pipeline import cli
from tests import runs
from tests.unit.pipeline.test_collector import post

pytestmark = pytest.mark.integration

UA = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
# The workload's timestamps are weeks old: let event time be the client's.
OLD_DATA = ("--max_lag_s=100000000",)


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    out = tmp_path_factory.mktemp("workload")
    assert cli.main(["generate", f"--out={out}", "--scenario=clean", "--viewers=40", "--seed=3"]) == 0
    direct = tmp_path_factory.mktemp("direct")
    runs.stallwatch(f"--source={out}", f"--output={direct}", *OLD_DATA)
    return out, direct


def collect(sink: str, lines: list[bytes]) -> str:
    """POST every line to a collector writing to ``sink``; SIGTERM; its summary line."""
    process, base = runs.start_collector(sink)
    url = f"{base}/v1/beacons"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda line: post(url, line, ua=UA)[0], lines))
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0, out
    assert codes.count(204) == len(lines), sorted(set(codes))
    return out


def workload_lines(directory) -> list[bytes]:
    lines = []
    for path in sorted(glob.glob(os.path.join(directory, "*.ndjson"))):
        with open(path, "rb") as f:
            lines += [line.rstrip(b"\n") for line in f if line.strip()]
    return lines


def assert_same_views(direct: str, collected: str) -> None:
    want, got = runs.views(direct), runs.views(collected)
    assert len(got) == len(want) > 50
    for w, g in zip(want, got):
        for field, value in w.items():
            if value is None and field in ("browser", "os", "device"):
                assert g[field] in (None, "Chrome", "Linux"), field   # filled from the User-Agent
            else:
                assert g[field] == value, (w["view_key"], field)
    s_want, s_got = runs.summary(direct), runs.summary(collected)
    for key in ("input_records", "parsed_events", "dead_letters", "dead_letters_by_reason", "views"):
        assert s_got[key] == s_want[key], key


def test_file_sink__run_reads_the_collected_beacons_unchanged(workload, tmp_path):
    source, direct = workload
    lines = workload_lines(source)
    out = collect(f"file://{tmp_path / 'sink'}", lines)
    assert f'"accepted_requests": {len(lines)}' in out
    runs.stallwatch(f"--source={tmp_path / 'sink'}", f"--output={tmp_path / 'run'}", *OLD_DATA)
    assert_same_views(str(direct), str(tmp_path / "run"))


def test_kinesis_sink__run_reads_the_collected_beacons_unchanged(workload, kinesis_emulator, tmp_path):
    from tests.streams import new_kinesis_stream
    source, direct = workload
    stream, _ = new_kinesis_stream("collect", 2)
    lines = workload_lines(source)
    collect(str(stream), lines)
    runs.stallwatch(f"--source={stream}", f"--output={tmp_path / 'run'}", "--stop_at_latest",
                    f"--checkpoint={tmp_path / 'cp.json'}", *OLD_DATA)
    assert_same_views(str(direct), str(tmp_path / "run"))


def test_pubsub_sink__run_reads_the_collected_beacons_unchanged(workload, pubsub_emulator, tmp_path):
    from pipeline.io.streams import pubsub, uri
    source, direct = workload
    topic = uri.parse(f"pubsub://projects/stallwatch-test/topics/collect-{uuid.uuid4().hex[:8]}")
    pubsub.create_topic(topic)
    pubsub.PubSubReader(topic)                  # its subscription exists before publishing
    collect(str(topic), workload_lines(source))
    runs.stallwatch(f"--source={topic}", f"--output={tmp_path / 'run'}", "--stop_at_latest",
                    *OLD_DATA)
    assert_same_views(str(direct), str(tmp_path / "run"))
