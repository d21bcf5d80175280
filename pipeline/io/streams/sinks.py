"""Publishing PCollections to Pub/Sub topics or Kinesis streams."""

from __future__ import annotations

from typing import Callable, Iterable

import apache_beam as beam
from apache_beam.metrics import Metrics

from pipeline.io.streams.uri import PubSubUri, StreamUri
from transforms.parse import METRICS_NAMESPACE

_FLUSH_AT = 500


def open_writer(uri: StreamUri):
    """A writer (``put((key, data, attributes), ...)``, ``check()``) for a
    Pub/Sub topic or a Kinesis stream."""
    if isinstance(uri, PubSubUri):
        from pipeline.io.streams.pubsub import PubSubWriter
        return PubSubWriter(uri)
    from pipeline.io.streams.kinesis import KinesisWriter
    return KinesisWriter(uri)


class _PublishFn(beam.DoFn):
    def __init__(self, uri: StreamUri, encode: Callable, counter: str) -> None:
        self._uri, self._encode, self._counter_name = uri, encode, counter

    def setup(self) -> None:
        self._writer = open_writer(self._uri)
        self._counter = Metrics.counter(METRICS_NAMESPACE, self._counter_name)

    def start_bundle(self) -> None:
        self._buffer: list = []

    def process(self, element) -> Iterable[int]:
        self._buffer.append(self._encode(element))
        if len(self._buffer) >= _FLUSH_AT:
            yield self._flush()

    def finish_bundle(self):
        if self._buffer:
            self._flush()

    def _flush(self) -> int:
        sent, self._buffer = self._buffer, []
        self._writer.put(sent)
        self._counter.inc(len(sent))
        return len(sent)


class PublishToStream(beam.PTransform):
    """Publish every element as one message.

    Input:  PCollection[T].
    Output: PCollection[int], sizes of full batches sent (flushes at bundle
            end are not emitted); messages sent are counted in ``counter``.

    Args:
      uri: a Pub/Sub topic or a Kinesis stream.
      encode: T -> (key, data bytes, attributes). The key is the Pub/Sub
        ordering key or the Kinesis partition key; attributes go to Pub/Sub
        only. A bundle is acknowledged only after the service accepted its
        messages (at least once: consumers de-duplicate on the key).
    """

    def __init__(self, uri: StreamUri, encode: Callable, counter: str) -> None:
        super().__init__()
        self._uri, self._encode, self._counter = uri, encode, counter

    def expand(self, items: beam.PCollection) -> beam.PCollection:
        return items | "Publish" >> beam.ParDo(_PublishFn(self._uri, self._encode, self._counter))
