"""ReadStream, the splittable-DoFn reader: a bounded read (--stop_at_latest)
of Kinesis and Pub/Sub on the FnApiRunner (what the DirectRunner runs in
batch) and on Prism; positions become durable by bundle finalization, so a
second run reads only what came after."""

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from pipeline import launch
from pipeline.results import outputs
from pipeline.generator import scenario, workload
from pipeline.io.streams import kinesis, pubsub, uri
from tests.streams import new_kinesis_stream, split_first_shard
from tools import emulators

pytestmark = pytest.mark.integration

PRISM = os.path.join(emulators.TOOLS, "bin", "prism")
ROOT = emulators.ROOT


def _messages(seed):
    """A live audience that started five minutes ago, published at once."""
    live = scenario.live(int(time.time() * 1000) - 300_000, 40, 20_000)
    messages, truth = workload.simulate_messages(live, seed)
    return sorted(messages, key=lambda m: m.arrival_ms), truth


def _kinesis_stream(shards):
    return new_kinesis_stream("b", shards)


def _run(source, output, *flags):
    launch.quiet_beam_logs()
    return launch.run([f"--source={source}", f"--output={output}", "--stop_at_latest", *flags])


def test_bounded_kinesis_read__all_records_then_only_new_ones(kinesis_emulator, tmp_path):
    stream, client = _kinesis_stream(shards=2)
    messages, truth = _messages(seed=5)
    half = len(messages) // 2
    writer = kinesis.KinesisWriter(stream)
    writer.put((m.key, m.payload(), {}) for m in messages[:half])
    split_first_shard(stream, client)
    writer.put((m.key, m.payload(), {}) for m in messages[half:])
    checkpoint = str(tmp_path / "checkpoint.json")
    whole = _run(str(stream), tmp_path / "whole", f"--checkpoint={checkpoint}")
    assert whole["input_records"] == truth["input_records"]
    assert whole["dead_letters_by_reason"] == truth["dead_letters_by_reason"]
    assert whole["alerts"]["content"] == 1
    positions = json.load(open(checkpoint))["positions"]
    assert len(positions) == 4 and sum(p["done"] for p in positions.values()) == 1

    extra, extra_truth = _messages(seed=6)
    writer.put((m.key, m.payload(), {}) for m in extra)
    again = _run(str(stream), tmp_path / "again", f"--checkpoint={checkpoint}")
    assert again["input_records"] == extra_truth["input_records"]


def test_bounded_pubsub_read__acks_after_the_run(pubsub_emulator, tmp_path):
    topic = uri.parse(f"pubsub://projects/stallwatch-test/topics/b-{uuid.uuid4().hex[:8]}")
    pubsub.create_topic(topic)
    pubsub.PubSubReader(topic)                  # its subscription exists before publishing
    messages, truth = _messages(seed=5)
    pubsub.PubSubWriter(topic).put(("", m.payload(), {}) for m in messages)
    first = _run(str(topic), tmp_path / "first")
    assert first["input_records"] == truth["input_records"]
    assert first["dead_letters"] == truth["dead_letters"]
    assert _run(str(topic), tmp_path / "second")["input_records"] == 0


@pytest.mark.skipif(not os.access(PRISM, os.X_OK), reason="run 'make prism' first")
def test_bounded_kinesis_read_on_prism_matches_the_direct_runner(kinesis_emulator, tmp_path):
    stream, _ = _kinesis_stream(shards=2)
    messages, truth = _messages(seed=8)
    kinesis.KinesisWriter(stream).put((m.key, m.payload(), {}) for m in messages)
    direct = _run(str(stream), tmp_path / "direct", f"--checkpoint={tmp_path}/direct.json")
    # As a user runs it, in its own process (in this one, Beam's cached Prism
    # job server from the DirectRunner's failed Prism attempt would be reused).
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "run", f"--source={stream}",
         f"--output={tmp_path / 'prism'}", "--stop_at_latest", f"--checkpoint={tmp_path}/prism.json",
         "--runner=PrismRunner", f"--prism_location={PRISM}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with open(tmp_path / "prism" / "run_summary.json") as f:
        prism = json.load(f)
    assert prism["runner"] == "PrismRunner"
    for key in ("input_records", "dead_letters_by_reason", "duplicates_dropped", "views", "alerts"):
        assert prism[key] == direct[key], key
    columns = ["view_key", "events", "rebuffer_count", "rebuffer_ms", "startup_ms", "watch_ms"]
    rows = [sorted(outputs.views(str(tmp_path / name), columns).to_pylist(),
                   key=lambda r: r["view_key"]) for name in ("direct", "prism")]
    assert rows[0] == rows[1] and len(rows[0]) == direct["views"] > 0
