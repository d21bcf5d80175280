"""KinesisReader and KinesisWriter against kinesis-mock: every shard read,
a split followed (parents before children), a restart resumes from the
checkpoint, throttling backs off."""

import os
import time
import uuid

import pytest
from botocore.exceptions import ClientError

from pipeline.io.streams import kinesis, uri
from pipeline.io.streams.checkpoint import Checkpoint
from tests.streams import new_kinesis_stream, split_first_shard

pytestmark = pytest.mark.integration


def _stream(shards=2):
    return new_kinesis_stream("s", shards)


def _put(stream, start, count, keys=20):
    kinesis.KinesisWriter(stream).put(
        (f"view-{i % keys}", f"view-{i % keys}:{i}".encode(), {}) for i in range(start, start + count))


def _read_until_caught_up(reader, limit=None):
    out = []
    for _ in range(2_000):
        out.extend(reader.poll())
        if limit is not None and len(out) >= limit:
            break
        if reader.caught_up:
            break
    return out


def test_reader__split_mid_read_and_restart_lose_nothing(kinesis_emulator, tmp_path):
    stream, client = _stream(shards=2)
    path = str(tmp_path / "checkpoint.json")
    _put(stream, 0, 300)
    first = kinesis.KinesisReader(stream, Checkpoint(path, str(stream)))
    head = _read_until_caught_up(first, limit=100)
    token = first.positions()
    first.commit(token)                        # what a run had delivered when it stopped
    split_first_shard(stream, client)
    _put(stream, 300, 300)
    rest_first = _read_until_caught_up(first)          # the first reader follows the split...
    assert first.stats["shards_finished"] == 1 and first.stats["shards_found"] == 4
    assert len(head) + len(rest_first) == 600

    # ...and a reader restarted from the commit gets exactly what came after it.
    second = kinesis.KinesisReader(stream, Checkpoint(path, str(stream)))
    again = _read_until_caught_up(second)
    assert sorted(r.source for r in again) == sorted(r.source for r in rest_first)
    assert not {r.source for r in head} & {r.source for r in again}

    # Per key, records come in the order they were put: the parent shard was
    # read to its end before its children.
    by_key = {}
    for record in head + rest_first:
        key, number = record.payload.decode().split(":")
        by_key.setdefault(key, []).append(int(number))
    assert all(numbers == sorted(numbers) for numbers in by_key.values())
    assert all(r.arrival_ms and r.source.startswith(f"kinesis:{stream.stream}/shardId-")
               for r in head + rest_first)


def test_reader__checkpoint_of_another_stream_is_refused(kinesis_emulator, tmp_path):
    stream, _ = _stream(shards=1)
    path = str(tmp_path / "checkpoint.json")
    Checkpoint(path, "kinesis://other").save({})
    with pytest.raises(ValueError, match="belongs to kinesis://other"):
        kinesis.KinesisReader(stream, Checkpoint(path, str(stream)))


def test_reader__missing_stream_is_a_lookup_error(kinesis_emulator):
    missing = uri.parse(f"kinesis://nope-{uuid.uuid4().hex[:6]}?endpoint={os.environ['KINESIS_ENDPOINT']}")
    with pytest.raises(LookupError, match="not found"):
        kinesis.KinesisReader(missing)
    with pytest.raises(LookupError, match="not found"):
        kinesis.KinesisWriter(missing).check()


class Throttled:
    """The real client, except that GetRecords is refused ``times`` times first
    (kinesis-mock enforces no read throughput limit to trigger it)."""

    def __init__(self, real, times):
        self._real, self.left = real, times

    def __getattr__(self, name):
        return getattr(self._real, name)

    def get_records(self, **kwargs):
        if self.left:
            self.left -= 1
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException",
                                         "Message": "Rate exceeded"}}, "GetRecords")
        return self._real.get_records(**kwargs)


def test_reader__throttling_backs_off_and_loses_nothing(kinesis_emulator):
    stream, client = _stream(shards=1)
    _put(stream, 0, 50)
    reader = kinesis.KinesisReader(stream, kinesis=Throttled(client, 3))
    got, deadline = [], time.monotonic() + 30
    while time.monotonic() < deadline and not (len(got) == 50 and reader.caught_up):
        got.extend(reader.poll())
        time.sleep(0.05)
    assert len(got) == 50 and reader.stats["throttled"] == 3
