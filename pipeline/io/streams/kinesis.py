"""Kinesis: a shard reader that follows resharding and checkpoints, and a
batching writer. Plain boto3, no Beam: the DirectRunner feed and the
portable source both drive it (docs/io.md)."""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import time
from typing import Callable, Iterable, Optional

from pipeline.io.streams.checkpoint import Checkpoint
from pipeline.io.streams.uri import KinesisUri
from transforms.model import RawRecord

LOG = logging.getLogger(__name__)
MAX_PUT = 500                 # PutRecords: at most 500 records per call
_IDLE_POLL_S = 0.2            # GetRecords: 5 calls/s per shard
_BACKOFF_S = (0.2, 5.0)       # throttling backoff, doubled per retry, with jitter
_LIST_EVERY_S = 10.0          # look for new shards this often


def client(uri: KinesisUri, retries: int = 3):
    """A boto3 Kinesis client for ``uri``. With an endpoint override (an
    emulator) and no AWS credentials in the environment, dummy ones are used."""
    import boto3
    from botocore.config import Config
    kwargs = {"region_name": uri.region,
              "config": Config(retries={"max_attempts": retries, "mode": "standard"},
                               connect_timeout=5, read_timeout=20)}
    if uri.endpoint:
        kwargs["endpoint_url"] = uri.endpoint
        if not (os.environ.get("AWS_ACCESS_KEY_ID") or os.environ.get("AWS_PROFILE")):
            kwargs.update(aws_access_key_id="local", aws_secret_access_key="local")
    return boto3.client("kinesis", **kwargs)


def _error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


@dataclasses.dataclass
class _Shard:
    shard_id: str
    parents: tuple[str, ...]
    seq: Optional[str] = None            # last sequence number handed out
    done: bool = False                   # closed and read to its end
    iterator: Optional[str] = None
    behind_ms: Optional[int] = None      # MillisBehindLatest of the last call
    last_arrival_ms: Optional[int] = None
    next_call: float = 0.0
    backoff_s: float = 0.0


class KinesisReader:
    """Reads every shard of a stream, parents before children.

    Each ``poll()`` makes at most one GetRecords call per readable shard and
    returns the records as RawRecords (``source`` = ``kinesis:STREAM/SHARD/SEQ``,
    ``arrival_ms`` = ApproximateArrivalTimestamp). A shard is readable once
    every parent it has is read to its end, so per-key order survives splits
    and merges; new shards are found from ChildShards and a periodic
    ListShards. ``positions()`` / ``commit()`` checkpoint what was handed out:
    a restarted reader continues AFTER_SEQUENCE_NUMBER, never re-reads, never
    skips. Throttling (ProvisionedThroughputExceeded) backs off per shard;
    an expired iterator is renewed from the last position.
    """

    def __init__(self, uri: KinesisUri, checkpoint: Optional[Checkpoint] = None,
                 kinesis=None, limit: int = 1000,
                 clock: Callable[[], float] = time.time,
                 positions: Optional[dict] = None) -> None:
        self._uri, self._limit, self._clock = uri, limit, clock
        self._kinesis = kinesis or client(uri, retries=1)
        self._checkpoint = checkpoint or Checkpoint(None, str(uri))
        self._shards: dict[str, _Shard] = {}
        self._listed_at = -1e18
        self._empty_round = False
        self.stats = {"get_records_calls": 0, "throttled": 0, "expired_iterators": 0,
                      "shards_finished": 0, "shards_found": 0}
        stored = positions if positions is not None else self._checkpoint.load()
        for shard_id, position in stored.items():
            self._shards[shard_id] = _Shard(shard_id, tuple(position.get("parents", ())),
                                            position.get("seq"), bool(position.get("done")))
        self._restored = set(stored)
        self._refresh()

    # -- shards -------------------------------------------------------------
    def _refresh(self) -> None:
        token, listed = None, []
        while True:
            kwargs = {"NextToken": token} if token else {"StreamName": self._uri.stream}
            try:
                page = self._kinesis.list_shards(**kwargs)
            except Exception as exc:
                if _error_code(exc) == "ResourceNotFoundException":
                    raise LookupError(f"{self._uri}: stream {self._uri.stream!r} not found") from None
                raise
            listed.extend(page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                break
        for shard in listed:
            shard_id = shard["ShardId"]
            if shard_id not in self._shards:
                parents = tuple(p for p in (shard.get("ParentShardId"),
                                            shard.get("AdjacentParentShardId")) if p)
                self._shards[shard_id] = _Shard(shard_id, parents)
                self.stats["shards_found"] += 1
        self._listed_at = self._clock()

    def _readable(self, shard: _Shard) -> bool:
        if shard.done:
            return False
        return all(self._shards[p].done for p in shard.parents if p in self._shards)

    def _iterator(self, shard: _Shard) -> str:
        kwargs = {"StreamName": self._uri.stream, "ShardId": shard.shard_id}
        if shard.seq:
            kwargs.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER",
                          StartingSequenceNumber=shard.seq)
        elif (self._uri.start == "latest" and not shard.parents
              and shard.shard_id not in self._restored):
            kwargs["ShardIteratorType"] = "LATEST"
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        return self._kinesis.get_shard_iterator(**kwargs)["ShardIterator"]

    # -- reading ------------------------------------------------------------
    def poll(self) -> list[RawRecord]:
        """One round: at most one GetRecords per readable shard."""
        now = self._clock()
        if now - self._listed_at >= _LIST_EVERY_S:
            self._refresh()
        out: list[RawRecord] = []
        for shard in list(self._shards.values()):
            if self._readable(shard) and shard.next_call <= now:
                out.extend(self._read(shard))
        self._empty_round = not out
        return out

    def _read(self, shard: _Shard) -> list[RawRecord]:
        try:
            if shard.iterator is None:
                shard.iterator = self._iterator(shard)
            self.stats["get_records_calls"] += 1
            response = self._kinesis.get_records(ShardIterator=shard.iterator, Limit=self._limit)
        except Exception as exc:
            code = _error_code(exc)
            if code in ("ProvisionedThroughputExceededException", "ThrottlingException",
                        "LimitExceededException"):
                self.stats["throttled"] += 1
                shard.backoff_s = min(_BACKOFF_S[1], max(_BACKOFF_S[0], shard.backoff_s * 2))
                shard.next_call = self._clock() + shard.backoff_s * random.uniform(0.5, 1.0)
                return []
            if code == "ExpiredIteratorException":
                self.stats["expired_iterators"] += 1
                shard.iterator = None
                return []
            raise
        shard.backoff_s = 0.0
        records = response.get("Records", [])
        shard.behind_ms = response.get("MillisBehindLatest")
        shard.iterator = response.get("NextShardIterator")
        out = []
        for record in records:
            arrival = int(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
            shard.seq = record["SequenceNumber"]
            shard.last_arrival_ms = arrival
            out.append(RawRecord(record["Data"],
                                 f"kinesis:{self._uri.stream}/{shard.shard_id}/{shard.seq}", arrival))
        if shard.iterator is None:          # closed and read to its end: children may start
            shard.done = True
            self.stats["shards_finished"] += 1
            self._refresh()
        elif not records:
            shard.next_call = self._clock() + _IDLE_POLL_S
        return out

    @property
    def caught_up(self) -> bool:
        """The last round read nothing and every shard is done or at its tip."""
        return self._empty_round and all(
            s.done or (self._readable(s) and s.behind_ms == 0) for s in self._shards.values())

    def watermark_ms(self) -> Optional[int]:
        """Records still to come arrived at or after this (epoch ms): per
        readable shard, now when it is at its tip, else the arrival of the
        last record read from it; the minimum over shards. Shards waiting for
        their parents hold nothing (their records arrived after the parents').
        None until every readable shard has been read once."""
        now = int(self._clock() * 1000)
        marks = []
        for shard in self._shards.values():
            if shard.done or not self._readable(shard):
                continue
            if shard.behind_ms is None:
                return None
            if shard.behind_ms == 0 or shard.last_arrival_ms is None:
                marks.append(now - shard.behind_ms)
            else:
                marks.append(shard.last_arrival_ms)
        return min(marks) if marks else now

    def positions(self) -> dict:
        return {s.shard_id: {"seq": s.seq, "done": s.done, "parents": list(s.parents)}
                for s in self._shards.values()}

    def commit(self, positions: dict) -> None:
        self._checkpoint.save(positions, merge=later_positions)

    def close(self) -> None:
        pass


def later_positions(stored: dict, new: dict) -> dict:
    """Per shard, the further of two committed positions (a finished shard is
    furthest; sequence numbers grow within a shard). Shards only one side
    knows are kept."""
    merged = dict(stored)
    for shard, position in new.items():
        old = merged.get(shard)
        if old is None or _progress(position) >= _progress(old):
            merged[shard] = position
    return merged


def _progress(position: dict) -> tuple:
    seq = position.get("seq")
    return (bool(position.get("done")), int(seq) if seq else -1)


class KinesisWriter:
    """Puts records in batches of up to 500, resending only the entries a
    call reports as failed (throttled), with backoff; gives up after
    ``attempts`` with an error naming the first failure."""

    def __init__(self, uri: KinesisUri, kinesis=None, attempts: int = 8,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._uri, self._attempts, self._sleep = uri, attempts, sleep
        self._kinesis = kinesis or client(uri)

    def check(self) -> None:
        """Raise LookupError when the stream does not exist."""
        try:
            self._kinesis.describe_stream_summary(StreamName=self._uri.stream)
        except Exception as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                raise LookupError(f"{self._uri}: stream {self._uri.stream!r} not found") from None
            raise

    def put(self, entries: Iterable[tuple[str, bytes, dict]]) -> int:
        """Write (partition key, data, attributes) triples (Kinesis records
        have no attributes: they are dropped); returns the number of retries."""
        entries = list(entries)
        retries = 0
        for start in range(0, len(entries), MAX_PUT):
            pending = [{"PartitionKey": key or "-", "Data": data}
                       for key, data, _ in entries[start:start + MAX_PUT]]
            delay = _BACKOFF_S[0]
            for attempt in range(self._attempts):
                result = self._kinesis.put_records(StreamName=self._uri.stream, Records=pending)
                if not result.get("FailedRecordCount"):
                    break
                failed = [(entry, status) for entry, status in zip(pending, result["Records"])
                          if status.get("ErrorCode")]
                if attempt == self._attempts - 1:
                    raise RuntimeError(f"{self._uri}: {len(failed)} records not written: "
                                       f"{failed[0][1].get('ErrorCode')}")
                pending = [entry for entry, _ in failed]
                retries += 1
                self._sleep(delay * random.uniform(0.5, 1.0))
                delay = min(_BACKOFF_S[1], delay * 2)
        return retries
