"""The live load generator: a generated audience published as it happens.

``stallwatch generate --publish=URI --rate=N`` simulates viewers joining at
``N`` per second for ``--join_s`` (``scenario.live``: short clips, one broken
segment, duplicates, skewed clocks and malformed beacons, no reordering) with the
clock starting now, and publishes every message when its arrival time comes:
event ``ts`` is real time. Kinesis records are keyed by view_id (a view stays
in order on one shard); Pub/Sub messages carry no ordering key.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable, Optional

from pipeline.generator import scenario, workload
from pipeline.io.streams.uri import KinesisUri, PubSubUri, StreamUri
from pipeline.io.streams.sinks import open_writer

_BATCH_MAX = 500


def publish_live(uri: StreamUri, rate: float, join_s: int, seed: int = 7,
                 out_dir: Optional[str] = None,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 progress: Callable[[str], None] = print, faults: int = 0,
                 published: Optional[Callable[[list, float], None]] = None,
                 outage: bool = False) -> dict:
    """Publish a live audience to ``uri``; returns counts and the truth.

    ``outage``: a cdn-b outage after the clip-a fault (``scenario.live``).
    ``faults`` > 0: the soak audience (``scenario.soak``), whose titles break
    one after another during the run. ``published(messages, wall_s)`` is
    told of every batch once the stream has accepted it.
    """
    writer = open_writer(uri)
    if isinstance(uri, PubSubUri):
        from pipeline.io.streams.pubsub import check_service, create_topic
        check_service()              # else the client retries for a minute first
        create_topic(uri)
    writer.check()
    viewers = max(20, round(rate * join_s))
    origin = int(clock() * 1000) + 1_000
    live = (scenario.soak(origin, viewers, join_s * 1000, faults) if faults > 0
            else scenario.live(origin, viewers, join_s * 1000, outage))
    messages, truth = workload.simulate_messages(live, seed)
    messages.sort(key=lambda m: (m.arrival_ms, m.shard))
    truth["started_ms"] = origin
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "truth.json"), "w", encoding="utf-8") as f:
            json.dump(truth, f, indent=2, sort_keys=True)
    keyed = isinstance(uri, KinesisUri)
    progress(f"publishing {len(messages):,} messages ({truth['input_records']:,} records, "
             f"{truth['views']:,} views by {viewers:,} viewers) to {uri} over "
             f"{(messages[-1].arrival_ms - origin) / 1000:.0f} s")
    sent, lag_max, next_report = 0, 0.0, clock() + 10
    i = 0
    while i < len(messages):
        now_ms = clock() * 1000
        due = messages[i].arrival_ms
        if due > now_ms:
            sleep(min(1.0, (due - now_ms) / 1000))
            continue
        batch, start = [], i
        while i < len(messages) and messages[i].arrival_ms <= now_ms and len(batch) < _BATCH_MAX:
            message = messages[i]
            batch.append((message.key if keyed else "", message.payload(), {}))
            i += 1
        writer.put(batch)
        if published is not None:
            published(messages[start:i], clock())
        sent += len(batch)
        lag_max = max(lag_max, clock() * 1000 - due)
        if clock() >= next_report:
            progress(f"  {sent:,}/{len(messages):,} messages published")
            next_report = clock() + 10
    elapsed = clock() - origin / 1000
    progress(f"published {sent:,} messages in {elapsed:.0f} s "
             f"({sent / max(elapsed, 1e-9):.1f}/s; publishing fell behind by at most "
             f"{lag_max / 1000:.1f} s)")
    return {"published": sent, "started_ms": origin, "max_behind_ms": int(lag_max),
            "truth": truth}
