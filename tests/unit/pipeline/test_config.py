"""Flags -> QoeConfig: every bad value is one clear ConfigError."""

import os

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline.config import ConfigError, check_flags, to_config
from pipeline.io.streams.uri import KinesisUri, PubSubUri


@pytest.fixture
def beacons(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    (d / "a.ndjson").write_text("{}\n")
    return d


def cfg(*flags):
    return to_config(PipelineOptions(list(flags)))


def test_to_config__directory_becomes_a_glob_of_its_ndjson(beacons, tmp_path):
    c = cfg(f"--source={beacons}", f"--output={tmp_path / 'out'}")
    assert c.source_pattern == os.path.join(str(beacons), "*.ndjson*")
    assert c.output == str(tmp_path / "out") and c.alerts_path is None


def test_to_config__file_uri_and_glob(beacons, tmp_path):
    c = cfg(f"--source=file://{beacons}/*.ndjson", f"--output={tmp_path}")
    assert c.source_pattern == f"{beacons}/*.ndjson"


@pytest.mark.parametrize("source, message", [
    ("pubsub://projects/p/subscriptions/sub", "is a stream: add --streaming"),
    ("pubsub://projects/p/queues/s", "expected pubsub://projects/PROJECT/topics/TOPIC"),
    ("kinesis://bea cons", "expected kinesis://STREAM"),
    ("kinesis://beacons?endpoint=localhost:4568", "endpoint must be an http(s):// URL"),
    ("kinesis://beacons?shard=1", "unknown parameter 'shard'"),
    ("http://example.com/x", "unsupported source scheme http://"),
    ("/nonexistent/dir/*.ndjson", "no files match"),
])
def test_to_config__unusable_sources(source, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace(".", r"\.").replace("/", "/")):
        cfg(f"--source={source}", f"--output={tmp_path}")


def test_to_config__missing_flags_name_the_flag(beacons, tmp_path):
    with pytest.raises(ConfigError, match="--source is required"):
        cfg(f"--output={tmp_path}")
    with pytest.raises(ConfigError, match="--output is required"):
        cfg(f"--source={beacons}")


def test_to_config__output_that_is_a_file(beacons):
    with pytest.raises(ConfigError, match="not a directory"):
        cfg(f"--source={beacons}", f"--output={beacons / 'a.ndjson'}")


@pytest.mark.parametrize("flag, message", [
    ("--inactivity_s=0", "--inactivity_s must be > 0"),
    ("--max_stall_s=-3", "--max_stall_s must be > 0"),
    ("--min_viewers=0", "--min_viewers must be >= 1"),
    ("--content_alpha=2", "--content_alpha must be in"),
])
def test_to_config__bad_numbers(flag, message, beacons, tmp_path):
    with pytest.raises(ConfigError, match=message):
        cfg(f"--source={beacons}", f"--output={tmp_path}", flag)


def test_to_config__alert_and_dead_letter_sinks(beacons, tmp_path):
    c = cfg(f"--source={beacons}", f"--output={tmp_path}", f"--alerts={tmp_path}/a.jsonl",
            "--dead_letter=kinesis://dead?endpoint=http://127.0.0.1:4568")
    assert c.alerts_path == f"{tmp_path}/a.jsonl" and c.alerts_stream is None
    assert c.dead_letter_stream == KinesisUri("dead", endpoint="http://127.0.0.1:4568")
    c = cfg(f"--source={beacons}", f"--output={tmp_path}", "--alerts=pubsub://projects/p/topics/topic")
    assert c.alerts_stream == PubSubUri("p", "topics", "topic") and c.alerts_path is None
    with pytest.raises(ConfigError, match=r"--alerts .*publishing needs a topic"):
        cfg(f"--source={beacons}", f"--output={tmp_path}",
            "--alerts=pubsub://projects/p/subscriptions/sub")


def test_to_config__stream_source(beacons, tmp_path):
    c = cfg("--source=kinesis://beacons?endpoint=http://127.0.0.1:1&region=eu-west-1",
            f"--output={tmp_path}", "--streaming", "--stop_at_latest")
    assert str(c.source_stream).startswith("kinesis://beacons") and c.source_pattern == ""
    assert c.stop_at_latest and c.checkpoint == os.path.join(str(tmp_path), "_checkpoints",
                                                             "source.json")
    with pytest.raises(ConfigError, match="--stop_at_latest applies to pubsub:// and kinesis://"):
        cfg(f"--source={beacons}", f"--output={tmp_path}", "--stop_at_latest")


def test_check_flags__unknown_flag_is_rejected():
    with pytest.raises(ConfigError, match="unknown option --sourse"):
        check_flags(["--sourse=x"])


def test_check_flags__beam_flags_pass():
    options = check_flags(["--runner=DirectRunner", "--direct_num_workers=3", "--source=x"])
    given = options.get_all_options()
    assert (given["runner"], given["direct_num_workers"], given["source"]) == ("DirectRunner", 3, "x")


def test_to_config__bigquery_tables(beacons, tmp_path):
    c = cfg(f"--source={beacons}", f"--output={tmp_path}", "--views_table=my-proj:qoe.views")
    assert c.views_table == "my-proj:qoe.views" and c.metrics_table is None
    with pytest.raises(ConfigError, match="--metrics_table qoe.metrics: expected PROJECT:DATASET.TABLE"):
        cfg(f"--source={beacons}", f"--output={tmp_path}", "--metrics_table=qoe.metrics")


@pytest.mark.parametrize("tick", ["nan", "inf", "0.0001", "0"])
def test_to_config__stream_tick_must_be_a_finite_millisecond_or_more(beacons, tmp_path, tick):
    with pytest.raises(ConfigError, match="--stream_tick_s must be at least 0.001"):
        cfg(f"--source={beacons}", f"--output={tmp_path}", f"--stream_tick_s={tick}")


def test_to_config__a_stream_source_is_reported_as_given(tmp_path):
    given = "kinesis://beacons?start=latest&endpoint=http://127.0.0.1:1"
    c = cfg(f"--source={given}", f"--output={tmp_path}", "--streaming")
    assert c.source == given and c.source_stream.start == "latest"
