"""How beacons are read, per (source, runner); ReadBeacons covers the streams.

| source            | runner                         | what reads                                  |
|-------------------|--------------------------------|---------------------------------------------|
| files             | any                            | pipeline.io.files.ReadBeaconFiles           |
| pubsub, kinesis   | DirectRunner (--streaming)     | StreamFeed in the launcher (feed.py)        |
| pubsub            | DataflowRunner                 | beam.io.ReadFromPubSub (the service's read) |
| pubsub, kinesis   | any other, and the DirectRunner | ReadStream, a splittable DoFn (source.py)  |
|                   | in batch with --stop_at_latest |                                             |

Every branch yields the same RawRecord, timestamped at arrival, with
``source`` naming its position (message id; stream/shard/sequence number).
The matrix, and why, is in docs/io.md.
"""

from __future__ import annotations

from typing import Optional

import apache_beam as beam

from pipeline.io.streams.uri import PubSubUri, StreamUri
from pipeline.io.streams.checkpoint import Checkpoint
from transforms.model import RawRecord

DIRECT = ("DirectRunner", "BundleBasedDirectRunner")
DATAFLOW = ("DataflowRunner",)


def runner_name(runner) -> str:
    """``FlinkRunner`` for a runner object, a name or a dotted class path."""
    name = runner if isinstance(runner, str) else type(runner).__name__
    return name.rsplit(".", 1)[-1]


# Where ReadStream (a Python splittable DoFn) may run: bounded on the
# FnApiRunner and Prism, unbounded on Flink (tested); Dataflow is Beam's
# reference SDF runner (dry run only here).
SDF_RUNNERS = DIRECT + ("FnApiRunner", "PrismRunner", "DataflowRunner", "FlinkRunner")


def unsupported(runner: str, bounded: bool = False) -> Optional[str]:
    """Why a stream cannot be read on ``runner``, or None when it can."""
    if runner == "FlinkRunner" and bounded:
        return ("--stop_at_latest does not work on Flink: its batch mode has no bundle "
                "finalization to commit positions (apache/beam#19526) and its streaming mode "
                "drops a splittable read's pending resumption when the job ends; replay a "
                "stream bounded on the DirectRunner or Prism")
    if runner in SDF_RUNNERS:
        return None
    return (f"reading streams on {runner} is not supported yet: use the DirectRunner, "
            "PrismRunner, FlinkRunner or DataflowRunner (see docs/io.md)")


def open_reader(uri: StreamUri, checkpoint_path: Optional[str]):
    """A live reader (poll/positions/commit) for a stream URI; LookupError
    when the topic, subscription or stream does not exist."""
    if isinstance(uri, PubSubUri):
        from pipeline.io.streams.pubsub import PubSubReader
        return PubSubReader(uri)
    from pipeline.io.streams.kinesis import KinesisReader
    return KinesisReader(uri, Checkpoint(checkpoint_path, str(uri)))


def _from_pubsub(message) -> RawRecord:
    published = message.publish_time
    arrival = int(published.timestamp() * 1000) if published is not None else None
    return RawRecord(bytes(message.data), f"pubsub:{message.message_id}", arrival)


class ReadBeacons(beam.PTransform):
    """Read beacons from a stream.

    Input:  PBegin.
    Output: PCollection[RawRecord], timestamped at arrival (bounded only for
            ReadStream with ``stop_at_latest``).

    Args:
      uri: the stream (pipeline/io/streams/uri.py).
      runner: the runner's name; picks the implementation (module table).
      feed_endpoint: on the DirectRunner, the TestStreamService a StreamFeed
        serves (the launcher starts it: pipeline/launch.py).
      stop_file, drain_ms: ReadStream drains once this path exists, the
        watermark going ``drain_ms`` past the last arrival (source.py).
    """

    def __init__(self, uri: StreamUri, runner: str, feed_endpoint: Optional[str] = None,
                 checkpoint: Optional[str] = None, max_lag_ms: int = 300_000,
                 stop_at_latest: bool = False, stop_file: Optional[str] = None,
                 drain_ms: int = 0, drain_step_ms: int = 600_000) -> None:
        super().__init__()
        why = unsupported(runner, stop_at_latest)
        if why:
            raise ValueError(why)
        self._uri, self._runner, self._endpoint = uri, runner, feed_endpoint
        self._checkpoint, self._lag, self._bounded = checkpoint, max_lag_ms, stop_at_latest
        self._stop_file, self._drain_ms, self._drain_step = stop_file, drain_ms, drain_step_ms

    def expand(self, root: beam.pvalue.PBegin) -> beam.PCollection:
        if self._endpoint:
            from pipeline.io.files import ReplayBeaconFiles
            return root | "Feed" >> ReplayBeaconFiles(self._endpoint)
        if not (self._runner in DATAFLOW and isinstance(self._uri, PubSubUri)):
            from pipeline.io.streams.source import ReadStream
            return root | "ReadStream" >> ReadStream(self._uri, self._checkpoint, self._lag,
                                                     self._bounded, self._stop_file,
                                                     self._drain_ms, self._drain_step)
        # DataflowRunner + Pub/Sub: the service's own read (ack on checkpoint,
        # watermark from publish time, de-duplication by message id).
        source = ({"topic": self._uri.path} if self._uri.is_topic
                  else {"subscription": self._uri.path})
        return (root
                | "ReadFromPubSub" >> beam.io.ReadFromPubSub(with_attributes=True, **source)
                | "ToRawRecord" >> beam.Map(_from_pubsub))
