"""stallwatch's pipeline flags (QoeOptions), grouped for ``--help``, and the
Flink job-server flags we accept (FlinkJobOptions); Beam's own flags are
accepted alongside."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.stalls import DEFAULT_SHARDS
from transforms.thresholds import Thresholds

_T = Thresholds()


class QoeOptions(PipelineOptions):
    """Flags of ``stallwatch run``. None is required at parse time (a required
    flag would break every TestPipeline); config.to_config validates them."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add = parser.add_argument_group("sources and sinks").add_argument
        add("--source", default=None,
            help="Beacons: a file, directory or glob of NDJSON (or file://..., gs://...), "
                 "or a stream: pubsub://projects/P/subscriptions/S (a .../topics/T form "
                 "creates a subscription) or kinesis://STREAM[?endpoint=URL&region=R].")
        add("--output", default=None, help="Directory for views, metrics, alerts, dead letters.")
        add("--alerts", default=None,
            help="Extra alert sink besides OUTPUT/alerts*.jsonl: a JSONL file path, "
                 "pubsub://projects/P/topics/T or kinesis://STREAM (keyed by alert_id).")
        add("--dead_letter", default=None,
            help="Extra dead-letter sink besides OUTPUT/dead_letter-*.jsonl: a JSONL file "
                 "path, pubsub://projects/P/topics/T or kinesis://STREAM.")
        add("--views_table", default=None,
            help="Also write views to this BigQuery table (PROJECT:DATASET.TABLE).")
        add("--metrics_table", default=None,
            help="Also write metric rows to this BigQuery table (PROJECT:DATASET.TABLE).")
        add("--stop_at_latest", action="store_true", default=False,
            help="With a stream source: stop once it is read to its end (bounded replay).")
        add("--checkpoint", default=None,
            help="With a stream source: file of reader positions, resumed on restart "
                 "(default OUTPUT/_checkpoints/source.json).")
        add("--stream_tick_s", type=float, default=1.0,
            help="With a stream source on the DirectRunner: wall seconds per bundle. "
                 "From 500 events/s use 5: at 1 the DirectRunner fell behind at 500 events/s, "
                 "at 5 it kept up at 1,000 (docs/benchmarks.md).")
        add = parser.add_argument_group("views and metrics").add_argument
        add("--inactivity_s", type=int, default=3600,
            help="Seconds without beacons after which a view is final (Mux: 3600).")
        add("--complete_s", type=int, default=60,
            help="Seconds without beacons after which a view is emitted (Mux: 60).")
        add("--max_stall_s", type=int, default=300,
            help="Continuous rebuffering (s) that force-ends a view (Mux: 300).")
        add("--max_message_bytes", type=int, default=1_048_576,
            help="Messages larger than this are dead-lettered as 'oversize'.")
        add("--max_lag_s", type=int, default=300,
            help="Event time is never earlier than arrival minus this (s).")
        add("--max_lead_s", type=int, default=60,
            help="Event time is never later than arrival plus this (s).")
        add("--metrics_bucket_s", type=int, default=60, help="Width of metric time buckets (s).")
        add = parser.add_argument_group("detection").add_argument
        add("--min_viewers", type=int, default=_T.min_viewers,
            help="Distinct affected viewers an alert needs.")
        add("--bucket_ms", type=int, default=_T.bucket_ms,
            help="Position bucket (ms) of the content detector (playhead; program time for "
                 "live views); windows are 2 buckets.")
        add("--content_alpha", type=float, default=_T.content_alpha,
            help="False-alarm rate per video of the content test.")
        add("--min_rate_ratio", type=float, default=_T.min_rate_ratio,
            help="Observed/baseline stall rate an alert also needs.")
        add("--delivery_bucket_s", type=int, default=_T.delivery_bucket_ms // 1000,
            help="Wall-clock bucket (s) of the delivery detector.")
        add("--delivery_alpha", type=float, default=_T.delivery_alpha,
            help="False-alarm rate per dimension of the delivery test.")
        add("--viewer_alpha", type=float, default=_T.viewer_alpha,
            help="False-alarm rate over all viewers of the viewer test.")
        add("--detect_shards", type=int, default=DEFAULT_SHARDS,
            help="Keys of each sharded detection stage (viewer and content state, tests); "
                 "more shards spread wider, each global value is copied to every one.")
        add = parser.add_argument_group("streaming").add_argument
        add("--replay_speed", type=float, default=0.0,
            help="With --streaming: recorded seconds replayed per wall second (0: as fast as possible).")
        add("--replay_tick_s", type=int, default=5,
            help="With --streaming: arrival time (s) replayed per step; the watermark moves per step.")
        add("--progress_s", type=int, default=30,
            help="With --streaming: snapshot a playing view for the detectors this often (s).")
        add("--detect_every_s", type=int, default=10,
            help="With --streaming: evaluate detection at most this often as views arrive (s).")
        add("--detect_window_s", type=int, default=21_600,
            help="With --streaming: views older than this (s) leave detection (batch uses all).")
        add("--close_after_s", type=int, default=600,
            help="An alert with no new affected stall for this long (s) is closed.")

        add = parser.add_argument_group("notifications (docs/alerts.md)").add_argument
        add("--notify", action="append", default=None, metavar="FORMAT:URL",
            help="Send alert transitions (opened, worse, closed, retracted) to a webhook; "
                 "repeatable. FORMAT: slack, pagerduty (routing key as ?routing_key=KEY or "
                 "STALLWATCH_PAGERDUTY_ROUTING_KEY) or json.")
        add("--notify_causes", default="content,delivery",
            help="Alert causes to notify (comma-separated; add viewer to page on single viewers).")
        add("--notify_pending_s", type=int, default=30,
            help="An alert is notified open once it has stayed open this long (event time); "
                 "one retracted sooner is never sent.")
        add("--notify_resolve_s", type=int, default=900,
            help="An alert notified open is notified closed once it has stayed closed this long "
                 "(event time); one reopened sooner stays one incident.")
        add("--notify_secret", default=None,
            help="HMAC-SHA256 key for the X-Stallwatch-Signature header (default: the "
                 "STALLWATCH_NOTIFY_SECRET environment variable; neither: unsigned).")
        add("--notify_ledger", default=None,
            help="Directory of what each receiver was told (default OUTPUT/_notify); pass the "
                 "same one to a restarted run so it repeats nothing.")
        add("--notify_timeout_s", type=float, default=10.0, help="Timeout of one request (s).")
        add("--notify_retries", type=int, default=5,
            help="Retries of a notice on 5xx, 429, timeouts and refused connections.")
        add("--notify_rate_per_min", type=float, default=60.0,
            help="Notices per minute per receiver and worker (bursts of 10).")


class FlinkJobOptions(PipelineOptions):
    """Flags of Beam's Java FlinkPipelineOptions that a stallwatch run may set.

    Python's FlinkRunner only learns the job server's flags once it has
    started it; declaring the ones we support lets ``stallwatch run`` check
    every flag up front. Unset flags are not sent (the job server's defaults).
    """

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        add = parser.add_argument_group("Flink job server (FlinkRunner only)").add_argument
        add("--checkpointing_interval", type=int, default=None,
            help="Checkpoint every this many ms (streaming needs it: the source commits "
                 "positions and acks when a checkpoint completes).")
        add("--checkpoint_timeout_millis", type=int, default=None,
            help="A checkpoint that takes longer fails (ms).")
        add("--unaligned_checkpoint_enabled", action="store_true", default=None,
            help="Checkpoint barriers overtake data waiting in buffers, so a checkpoint (and "
                 "the source's commits) completes under backpressure.")
        add("--finish_bundle_before_checkpointing", action="store_true", default=None,
            help="Finish open bundles and send their output before a checkpoint barrier "
                 "(else their output waits in the checkpoint for a later watermark).")
        add("--min_pause_between_checkpoints", type=int, default=None,
            help="At least this long between two checkpoints (ms).")
        add("--state_backend", default=None, choices=("filesystem", "rocksdb"),
            help="Keyed state on the heap (filesystem) or in RocksDB (large state; needs "
                 "RocksDB on the cluster's classpath); unset: the cluster's config.")
        add("--state_backend_storage_path", default=None,
            help="Checkpoint directory for --state_backend (file:///..., s3://..., gs://...).")
        add("--savepoint_path", default=None,
            help="Start from this savepoint (of a job stopped with a savepoint).")
        add("--shutdown_sources_after_idle_ms", type=int, default=None,
            help="Stop sources idle this long (ms); -1 keeps them running.")
        add("--number_of_execution_retries", type=int, default=None,
            help="Restarts after a failure before the job fails.")
        add("--max_bundle_size", type=int, default=None,
            help="Elements per bundle handed to the Python workers.")
        add("--max_bundle_time_mills", type=int, default=None,
            help="Milliseconds before a bundle is closed.")
