"""Helpers for tests against the Kinesis emulator (KINESIS_ENDPOINT set by
the kinesis_emulator fixture)."""

import os
import uuid

from pipeline.io.streams import kinesis, uri


def _active(client, stream) -> None:
    client.get_waiter("stream_exists").wait(StreamName=stream.stream,
                                            WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})


def new_kinesis_stream(prefix: str, shards: int):
    """(KinesisUri, boto3 client) of a new, active stream with a unique name."""
    stream = uri.parse(f"kinesis://{prefix}-{uuid.uuid4().hex[:8]}"
                       f"?endpoint={os.environ['KINESIS_ENDPOINT']}")
    client = kinesis.client(stream)
    client.create_stream(StreamName=stream.stream, ShardCount=shards)
    _active(client, stream)
    return stream, client


def split_first_shard(stream, client) -> None:
    """Split the stream's first shard in two at hash key 2**126."""
    parent = sorted(s["ShardId"] for s in client.list_shards(StreamName=stream.stream)["Shards"])[0]
    client.split_shard(StreamName=stream.stream, ShardToSplit=parent,
                       NewStartingHashKey=str(2 ** 126))
    _active(client, stream)


def records_up_to(stream, client, positions: dict) -> int:
    """How many records of ``stream`` lie at or before the committed
    ``positions`` (a checkpoint's shard -> {"seq", "done"})."""
    count = 0
    for shard in client.list_shards(StreamName=stream.stream)["Shards"]:
        position = positions.get(shard["ShardId"], {})
        if not position.get("seq") and not position.get("done"):
            continue
        iterator = client.get_shard_iterator(StreamName=stream.stream, ShardId=shard["ShardId"],
                                             ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            page = client.get_records(ShardIterator=iterator, Limit=1000)
            records = page["Records"]
            count += sum(1 for r in records if position.get("done")
                         or int(r["SequenceNumber"]) <= int(position["seq"]))
            if not records and page.get("MillisBehindLatest", 0) == 0:
                break
            iterator = page.get("NextShardIterator")
    return count
