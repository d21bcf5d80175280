"""File source and sink rows: positions, compression, schemas."""

import gzip
import json

import apache_beam as beam
import pyarrow as pa
from apache_beam.testing import util

from pipeline.io import files
from tests.builders import ev, fn_api_pipeline, make_view, one_view
from transforms.alerting import breakdown
from transforms.model import Alert, Cause, DeadLetter, ResponseRow


def test_read_beacon_files__positions_blank_lines_and_gzip(tmp_path):
    (tmp_path / "a.ndjson").write_bytes(b'{"x":1}\n\n  \n{"x":2}\r\n')
    with gzip.open(tmp_path / "b.ndjson.gz", "wb") as f:
        f.write(b'{"y":1}\n')
    with fn_api_pipeline() as p:
        records = p | files.ReadBeaconFiles(str(tmp_path / "*.ndjson*"))
        util.assert_that(records | beam.Map(lambda r: (r.payload, r.source.rsplit("/", 1)[1])),
                         util.equal_to([(b'{"x":1}', "a.ndjson:1"), (b'{"x":2}', "a.ndjson:4"),
                                        (b'{"y":1}', "b.ndjson.gz:1")]))


def test_view_row__fits_the_parquet_schema():
    views = [one_view(ev("play", 0, 0), ev("playing", 1, 0, rendition="720p", bitrate_bps=2_800_000),
                      ev("waiting", 5, 4), ev("playing", 7, 4), ev("ended", 10, 7)),
             make_view("v2", "u2", cdn="cdn-a", stalls=((10, 5),))]
    table = pa.Table.from_pylist([files.view_row(v) for v in views], schema=files.VIEW_SCHEMA)
    assert table.num_rows == 2
    assert table.column("stalls").to_pylist()[0][0]["playhead_ms"] == 4000
    assert set(files.VIEW_SCHEMA.names) == set(files.view_row(views[0]))


def test_alert_json__is_flat_json_with_a_breakdown_object():
    alert = Alert(alert_id="abc", cause=Cause.CONTENT, video_id="v", rendition=None, start_ms=1,
                  end_ms=2, dimension=None, value=None, viewer_id=None, start_ts=3, end_ts=4,
                  affected_viewers=5, exposed_viewers=6, stalls=5, baseline_rate=0.1,
                  observed_rate=0.8, p_value=1e-9, breakdown=breakdown(cdn=["a", "a", "b"]))
    record = json.loads(files.alert_json(alert))
    assert record["cause"] == "content" and record["breakdown"] == {"cdn": {"a": 2, "b": 1}}


def test_dead_letter_json__keeps_the_payload_verbatim():
    dead = DeadLetter("ParseBeacons", "invalid_json", '<script>alert(1)</script>', "x", "f:1")
    assert json.loads(files.dead_letter_json(dead))["payload"] == "<script>alert(1)</script>"


def test_bigquery_schema__follows_the_parquet_schema_field_for_field():
    schema = files.bigquery_schema(files.VIEW_SCHEMA)
    assert [f["name"] for f in schema["fields"]] == files.VIEW_SCHEMA.names
    by_name = {f["name"]: f for f in schema["fields"]}
    assert by_name["events"] == {"name": "events", "type": "INTEGER", "mode": "NULLABLE"}
    assert by_name["rebuffer_pct"]["type"] == "FLOAT" and by_name["force_ended"]["type"] == "BOOLEAN"
    stalls = by_name["stalls"]
    assert (stalls["type"], stalls["mode"]) == ("RECORD", "REPEATED")
    assert [f["name"] for f in stalls["fields"]] == [
        "start_ms", "duration_ms", "playhead_ms", "rendition", "bitrate_bps", "playhead_estimated",
        "playhead_uncertainty_ms", "video_id"]
    metrics = files.bigquery_schema(files.METRIC_SCHEMA)
    assert [f["name"] for f in metrics["fields"]] == files.METRIC_SCHEMA.names


def test_bigquery_rows__match_the_schema_of_real_outputs():
    row = files.view_row(make_view("v1", "u1"))
    names = {f["name"] for f in files.bigquery_schema(files.VIEW_SCHEMA)["fields"]}
    assert set(row) == names


def test_bigquery_tables__are_in_the_graph(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions as Options
    from pipeline.graph import build
    from pipeline.config import to_config
    (tmp_path / "a.ndjson").write_text("{}\n")
    options = Options([f"--source={tmp_path}/a.ndjson", f"--output={tmp_path}/out",
                       "--views_table=my-proj:qoe.views", "--metrics_table=my-proj:qoe.metrics"])
    cfg = to_config(options)
    sinks = files.with_tables(files.file_sinks(cfg.output), cfg.views_table, cfg.metrics_table, False)
    root = beam.Pipeline(options=options)
    build(root, cfg, files.ReadBeaconFiles(cfg.source_pattern), sinks)
    labels = {t.full_label for t in root.transforms_stack[0].parts}
    assert {"WriteViewsTable", "WriteMetricsTable"} <= labels


def test_windowed_file_sink__a_window_is_spread_over_shards_and_late_rows_get_a_new_pane(tmp_path):
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing import test_pipeline, test_stream
    from apache_beam.transforms.window import TimestampedValue

    def letter(n):
        return DeadLetter("parse", "invalid_json", f"line {n}", "", f"f:{n}")

    events = (test_stream.TestStream()
              .add_elements([TimestampedValue(letter(n), 10 + n) for n in range(200)])
              .advance_watermark_to(700)          # the first 600 s window is written
              .add_elements([TimestampedValue(letter(1000), 20)])    # late for it
              .advance_watermark_to_infinity())
    with test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"])) as p:
        letters = p | events
        _ = {"dead_letters": letters} | files.WindowedFileSink(str(tmp_path), window_s=600)
    paths = sorted(path.name for path in tmp_path.glob("dead_letter-*.jsonl"))
    lines = [json.loads(line)["payload"] for path in tmp_path.glob("dead_letter-*.jsonl")
             for line in path.read_text().splitlines()]
    assert sorted(lines) == sorted(f"line {n}" for n in [*range(200), 1000])   # each row once
    first = [name for name in paths if name.endswith("-pane000.jsonl")]
    assert len(first) == files.SINK_SHARDS          # 200 rows reach every shard
    assert {name.split("-")[3] for name in first} == {f"s{n:02d}" for n in range(files.SINK_SHARDS)}
    late = [name for name in paths if not name.endswith("-pane000.jsonl")]
    assert len(late) == 1 and late[0].endswith("-pane001.jsonl")


def test_response_row__fits_the_parquet_schema():
    rows = [ResponseRow(60_000, "all", "all", 3, 1, 100 / 3, 40.0, 114.0, 500.0),
            ResponseRow(60_000, "cdn", "cdn-a", 1, 0, 0.0, None, None, None, version=2)]
    table = pa.Table.from_pylist([files.response_row(r) for r in rows], schema=files.RESPONSE_SCHEMA)
    assert table.num_rows == 2 and table.column("version").to_pylist() == [1, 2]
    assert set(files.RESPONSE_SCHEMA.names) == set(files.response_row(rows[0]))


def test_file_sinks__cmcd_response_reports_become_responses_parquet(tmp_path):
    import pyarrow.parquet as pq
    from apache_beam.options.pipeline_options import PipelineOptions as Options
    from pipeline.graph import build
    from pipeline.config import to_config
    from tests.builders import FN_API_RUNNER, T0_MS
    reports = [f'e=rr,sid="s1",cid="vid",ts={T0_MS + 5_000},v=2,rc=404,ttfb=120,ttlb=900,'
               'cdn="cdn-a",h="edge1.example"',
               f'e=rr,sid="s1",cid="vid",ts={T0_MS + 7_000},v=2,rc=200,ttfb=40,ttlb=300,'
               'cdn="cdn-a",url="https://edge2.example/seg1.m4s"',     # host from the url
               f'e=ps,sta=p,sid="s1",cid="vid",ts={T0_MS + 1_000},v=2']  # not a response
    (tmp_path / "a.ndjson").write_text("".join(json.dumps({"cmcd": r}) + "\n" for r in reports))
    options = Options([f"--source={tmp_path}/a.ndjson", f"--output={tmp_path}/out",
                       f"--runner={FN_API_RUNNER}"])
    cfg = to_config(options)
    with beam.Pipeline(options=options) as root:
        build(root, cfg, files.ReadBeaconFiles(cfg.source_pattern), files.file_sinks(cfg.output))
    paths = sorted(str(p) for p in (tmp_path / "out").glob("responses-*.parquet"))
    rows = {(r["dimension"], r["value"]): r for r in pq.read_table(paths).to_pylist()}
    assert set(rows) == {("all", "all"), ("cdn", "cdn-a"), ("host", "edge1.example"),
                         ("host", "edge2.example")}
    every = rows[("all", "all")]
    assert (every["minute_ms"], every["requests"], every["http_errors"], every["version"]) == \
        (T0_MS, 2, 1, 1)
    assert (every["ttfb_p50_ms"], every["ttlb_p50_ms"]) == (80.0, 600.0)   # 40|120, 300|900


def test_windowed_file_sink__responses_have_their_own_parquet_a_late_version_its_own_file(tmp_path):
    import pyarrow.parquet as pq
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing import test_pipeline, test_stream
    from apache_beam.transforms.window import TimestampedValue

    def cell(requests, version):
        return ResponseRow(0, "all", "all", requests, 0, 0.0, 40.0, 40.0, None, version)

    events = (test_stream.TestStream()
              .add_elements([TimestampedValue(cell(2, 1), 59.999)])
              .advance_watermark_to(700)            # the first 600 s window is written
              .add_elements([TimestampedValue(cell(3, 2), 59.999)])   # its late pane
              .advance_watermark_to_infinity())
    with test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"])) as p:
        _ = {"responses": p | events} | files.WindowedFileSink(str(tmp_path), window_s=600)
    paths = sorted(tmp_path.glob("responses-*.parquet"))
    assert len(paths) == 2        # written at the window's end, then the late version on its own
    rows = [row for path in paths for row in pq.read_table(str(path)).to_pylist()]
    assert sorted((r["requests"], r["version"]) for r in rows) == [(2, 1), (3, 2)]
