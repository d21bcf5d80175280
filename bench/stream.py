"""Streaming benchmark: sustained load, alert latency and memory over time.

A soak audience (``scenario.soak``: the live audience plus titles whose
segment at 1:00 breaks one after another during the run) is published in
real time into a real emulator (pstest or kinesis-mock, started here) at
about ``--rate`` events/s, while ``stallwatch run --streaming`` reads it on
the chosen runner and publishes alerts to a second topic/stream, which this
harness reads.

Figures:
- sustained load: events and messages published per second, and how far
  the publisher fell behind its schedule;
- alert latency per broken title: from the moment the 5th distinct viewer's
  stall beacon at the broken segment (after the break) was accepted by the
  emulator to the moment the title's first content alert arrived on the
  alerts stream; p50 / p95 / max over the titles;
- peak RSS of the pipeline's process tree, sampled every 5 s, per minute,
  with the finished views written by then (memory must not grow with them);
- the drain: seconds from SIGINT (publisher done) to the run's exit, i.e.
  the backlog it still had, and whether it read every record.

Usage: python -m bench.stream --source=pubsub --runner=direct --minutes=10
Results: out/bench/stream-SOURCE-RUNNER.json; ``--write-doc`` adds a row
to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Optional

import orjson

from bench.run import DOC, OUT, ROOT, _tree_rss_kb
from pipeline.io.streams import kinesis, pubsub, uri
from pipeline.generator import live
from tools import emulators
from tools import flink as flink_tools
from transforms.fields import Rejected
from transforms.parse import parse_ts

STALL_EVENTS = {"waiting", "stalled", "rebufferstart"}
NTH_VIEWER = 5              # the "5th affected viewer"
FAULT_FROM_MS, FAULT_TO_MS = 60_000, 64_000


def _events(body) -> list[dict]:
    if isinstance(body, bytes):
        return []
    if isinstance(body, list):
        return [e for e in body if isinstance(e, dict)]
    if "events" in body:
        common = {k: v for k, v in body.items() if k != "events"}
        return [{**common, **e} for e in body["events"] if isinstance(e, dict)]
    return [body]


def _ms(ts) -> int:
    try:
        return parse_ts(ts)
    except Rejected:
        return -1


class Triggers:
    """Watches what the publisher sends: per broken title, when the stall
    beacon of its NTH_VIEWER-th distinct affected viewer was accepted."""

    def __init__(self, breaks: dict[str, int]) -> None:
        self._breaks = breaks
        self._viewers: dict[str, set] = {title: set() for title in breaks}
        self.fired: dict[str, float] = {}
        self.events = 0
        self.messages = 0
        self.by_second: dict[int, int] = {}      # events accepted per wall-clock second

    def __call__(self, messages: list, wall_s: float) -> None:
        self.messages += len(messages)
        for message in messages:
            events = _events(message.body)
            self.events += len(events) or 1
            self.by_second[int(wall_s)] = self.by_second.get(int(wall_s), 0) + (len(events) or 1)
            for e in events:
                title = e.get("video_id")
                if (title in self._breaks and title not in self.fired
                        and e.get("event") in STALL_EVENTS
                        and FAULT_FROM_MS <= (e.get("playhead_ms") or -1) < FAULT_TO_MS
                        and _ms(e.get("ts")) >= self._breaks[title]):
                    seen = self._viewers[title]
                    seen.add(e.get("viewer_id"))
                    if len(seen) == NTH_VIEWER:
                        self.fired[title] = wall_s


def _streams(source: str, tag: str) -> tuple[str, str, object]:
    """(beacons URI, alerts URI, alert reader) on the running emulator."""
    if source == "pubsub":
        topics = [f"pubsub://projects/stallwatch-bench/topics/{k}-{tag}" for k in ("beacons", "alerts")]
        for t in topics:
            pubsub.create_topic(uri.parse(t))
        return topics[0], topics[1], pubsub.PubSubReader(uri.parse(topics[1]))
    endpoint = os.environ["KINESIS_ENDPOINT"]
    names = []
    for kind, shards in (("beacons", 2), ("alerts", 1)):
        stream = uri.parse(f"kinesis://{kind}-{tag}?endpoint={endpoint}")
        client = kinesis.client(stream)
        client.create_stream(StreamName=stream.stream, ShardCount=shards)
        client.get_waiter("stream_exists").wait(StreamName=stream.stream,
                                                WaiterConfig={"Delay": 0.2, "MaxAttempts": 50})
        names.append(stream)
    return str(names[0]), str(names[1]), kinesis.KinesisReader(names[1])


def _left_unread(source: str, beacons: str) -> Optional[int]:
    """Pub/Sub: messages still in the run's subscription after it ended, for
    a next run to read. Counted once the leases of anything the run pulled
    and did not ack have run out (a message it read but failed to ack would
    come back and be counted twice: read + left > published). None for
    Kinesis, whose positions are in the checkpoint."""
    if source != "pubsub":
        return None
    reader = pubsub.PubSubReader(uri.parse(f"pubsub://{uri.parse(beacons).subscription_for()}"),
                                 pull_timeout_s=10.0)
    leases_end = time.monotonic() + pubsub.ACK_DEADLINE_S + 5
    left, quiet = 0, 0
    while quiet < 5 or time.monotonic() < leases_end:
        records = reader.poll()
        left += len(records)
        quiet = 0 if records else quiet + 1
        reader.commit(reader.positions())
    reader.close()
    return left


def _wait_until_reading(source: str, beacons: str, run: subprocess.Popen) -> None:
    """Pub/Sub: publish only once the run's subscription exists (else the
    first messages are lost to nobody). Kinesis reads from the trim horizon."""
    if source != "pubsub":
        return
    deadline = time.time() + 300
    while True:
        try:
            pubsub.PubSubReader(uri.parse(f"pubsub://{uri.parse(beacons).subscription_for()}"))
            return
        except LookupError:
            if time.time() > deadline or run.poll() is not None:
                raise RuntimeError("the run never subscribed: " + (run.stdout.read() or "")[-2000:])
            time.sleep(0.5)


def _finished_views(output: str) -> int:
    count = 0
    for path in glob.glob(os.path.join(output, "**", "views*"), recursive=True):
        if path.endswith(".jsonl"):
            with open(path, "rb") as f:
                count += sum(1 for _ in f)
        elif path.endswith(".parquet"):
            import pyarrow.parquet as pq
            count += pq.ParquetFile(path).metadata.num_rows
    return count


# Short state horizons, so state reaches its steady size within a run of
# minutes (views final after 2 min, detection evidence kept 10 min, alerts
# closed after 2 quiet minutes); production keeps 60 min / 6 h / 10 min.
HORIZONS = ("--inactivity_s=120", "--detect_window_s=600", "--close_after_s=120")


def _cluster_pids(cluster) -> list[int]:
    """PIDs of a standalone Flink cluster's JobManager and TaskManagers."""
    pids = []
    for path in glob.glob(os.path.join(cluster.instance, "pid", "*.pid")):
        with open(path) as f:
            pids += [int(line) for line in f if line.strip().isdigit()]
    return pids


def _checkpoint_stats(cluster) -> Optional[dict]:
    """The running job's checkpoint figures from Flink's REST API (bytes, ms)."""
    try:
        jobs = [j for j in cluster.jobs() if j["state"] == "RUNNING"]
        if not jobs:
            return None
        stats = cluster.get(f"/jobs/{jobs[0]['jid']}/checkpoints")
    except OSError:
        return None
    latest = (stats.get("latest") or {}).get("completed") or {}
    counts = stats.get("counts") or {}
    return {"completed": counts.get("completed", 0), "failed": counts.get("failed", 0),
            "state_size": latest.get("state_size"), "checkpointed_size": latest.get("checkpointed_size"),
            "duration_ms": latest.get("end_to_end_duration")}


def _run_flags(runner: str, cluster, parallelism: int) -> list[str]:
    if runner == "flink":
        return ["--preset=flink-cluster", f"--flink_master={cluster.master}",
                f"--parallelism={parallelism}", f"--sdk_worker_parallelism={parallelism}"]
    if runner == "flink-local":
        return ["--preset=flink-local", f"--parallelism={parallelism}",
                f"--sdk_worker_parallelism={parallelism}"]
    return ["--stream_tick_s=5"]


def bench(source: str, runner: str, minutes: float, rate: float, faults: int,
          run_flags: tuple[str, ...] = (), drain_timeout_s: float = 600,
          parallelism: int = 2, state_backend: str = "rocksdb") -> dict:
    join_s = int(minutes * 60)
    # ~15 records per view and ~1.8 views per viewer in the live audience
    viewers_per_s = rate / 26.0
    tag = uuid.uuid4().hex[:8]
    work = tempfile.mkdtemp(prefix=f"stream-{source}-{runner}-", dir=OUT)
    running = emulators.start(source, log_dir=work)
    os.environ.update(running.env)
    run: Optional[subprocess.Popen] = None
    cluster = None
    try:
        if runner == "flink":
            cluster = flink_tools.start(taskmanagers=2, slots=max(1, (parallelism + 1) // 2),
                                        instance=os.path.join(work, "flink"),
                                        state_backend=state_backend)
        beacons, alerts_uri, reader = _streams(source, tag)
        output = os.path.join(work, "out")
        flags = ["--streaming", f"--source={beacons}", f"--alerts={alerts_uri}", f"--output={output}",
                 *_run_flags(runner, cluster, parallelism), *HORIZONS, *run_flags]
        run = subprocess.Popen([sys.executable, "-m", "runners.cli", "run", *flags], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
        log: list[str] = []
        threading.Thread(target=lambda: log.extend(run.stdout), daemon=True).start()
        _wait_until_reading(source, beacons, run)

        origin_guess = int(time.time() * 1000) + 1_000
        breaks = {f"soak-{i}": origin_guess + join_s * 1000 * (i + 1) // (faults + 1)
                  for i in range(faults)}
        triggers = Triggers(breaks)
        published: dict = {}

        def publish():
            try:
                published.update(live.publish_live(uri.parse(beacons), viewers_per_s, join_s, seed=7,
                                                   progress=lambda _: None, faults=faults,
                                                   published=triggers))
            except Exception as exc:          # reported below
                published["error"] = repr(exc)

        publisher = threading.Thread(target=publish, daemon=True)
        started = time.time()
        publisher.start()

        arrived: dict[str, float] = {}
        samples: list[dict] = []
        next_sample = next_report = 0.0

        def watch() -> None:
            nonlocal next_sample, next_report
            for record in reader.poll():
                alert = orjson.loads(record.payload)
                title = alert.get("video_id")
                if alert.get("cause") == "content" and title in breaks and title not in arrived:
                    arrived[title] = time.time()
                    fired = triggers.fired.get(title)
                    print(f"  {time.time() - started:6.0f} s  alert {title}: "
                          f"{arrived[title] - fired:.1f} s after its 5th affected viewer"
                          if fired else f"  alert {title} before its 5th viewer was seen", flush=True)
            reader.commit(reader.positions())
            now = time.time()
            if now >= next_sample:
                sample = {"at_s": round(now - started, 1),
                          "pipeline_mb": _tree_rss_kb(run.pid) / 1024,
                          "emulator_mb": _tree_rss_kb(running.pid) / 1024}
                if cluster is not None:
                    sample["cluster_mb"] = sum(_tree_rss_kb(pid) for pid in _cluster_pids(cluster)) / 1024
                    sample["checkpoint"] = _checkpoint_stats(cluster)
                samples.append(sample)
                next_sample = now + 5
            if now >= next_report:
                last = samples[-1]
                print(f"  {now - started:6.0f} s  {triggers.events:,} events published, "
                      f"RSS pipeline {last['pipeline_mb']:,.0f} MB"
                      + (f", cluster {last['cluster_mb']:,.0f} MB, checkpoint {last['checkpoint']}"
                         if cluster is not None else ""), flush=True)
                next_report = now + 60
            if run.poll() is not None:
                raise RuntimeError("the run stopped: " + "".join(log)[-3000:])

        while publisher.is_alive() or time.time() < started + 5:
            watch()
            time.sleep(0.5)
        if "error" in published:
            raise RuntimeError(f"publisher failed: {published['error']}")
        # a last title may break near the end: give its alert the target's time
        grace = time.time() + 30
        while time.time() < grace and set(triggers.fired) - set(arrived):
            watch()
            time.sleep(0.5)
        published_s = time.time() - started
        stop = time.time()
        run.send_signal(signal.SIGINT)
        try:
            run.wait(timeout=drain_timeout_s)
            drain_s: Optional[float] = time.time() - stop
        except subprocess.TimeoutExpired:           # a backlog it would take too long to finish
            run.kill()
            run.wait()
            drain_s = None
        left_unread = _left_unread(source, beacons)
        summary = {}
        for path in (os.path.join(output, "run_summary.json"),
                     os.path.join(output, "_partial", "run_summary.json")):
            if os.path.exists(path):
                with open(path) as f:
                    summary = json.load(f)
                break
        truth = published["truth"]
        latencies = {t: round(arrived[t] - triggers.fired[t], 1)
                     for t in triggers.fired if t in arrived}
        values = sorted(latencies.values())
        load = {}
        for second, n in triggers.by_second.items():
            minute = int((second - started) // 60)
            load[minute] = load.get(minute, 0) + n
        by_minute: dict[int, dict] = {}
        for sample in samples:
            minute = by_minute.setdefault(int(sample["at_s"] // 60), {})
            total = sample["pipeline_mb"] + sample.get("cluster_mb", 0)
            minute["rss_mb"] = max(minute.get("rss_mb", 0), round(total))
            checkpoint = sample.get("checkpoint") or {}
            if checkpoint.get("state_size") is not None:
                minute["checkpoint_kb"] = round(checkpoint["state_size"] / 1024)
                # incremental (RocksDB): what this checkpoint wrote; heap: the same
                minute["checkpoint_written_kb"] = round((checkpoint.get("checkpointed_size")
                                                         or checkpoint["state_size"]) / 1024)
                minute["checkpoint_ms"] = checkpoint["duration_ms"]
                minute["checkpoints"] = checkpoint["completed"]
                minute["checkpoints_failed"] = checkpoint["failed"]
        accounting = summary.get("accounting") or {}
        return {
            "source": source, "runner": runner, "parallelism": parallelism, "minutes": minutes,
            "state_backend": state_backend if runner == "flink" else None,
            "rc": run.returncode,
            "events": truth["input_records"], "messages": triggers.messages,
            "events_per_s": round(truth["input_records"] / published_s),
            "events_per_s_by_minute": {m: round(n / 60) for m, n in sorted(load.items())},
            "events_per_s_peak_minute": round(max(load.values()) / 60) if load else 0,
            "messages_per_s": round(triggers.messages / published_s),
            "publisher_behind_max_s": published["max_behind_ms"] / 1000,
            "titles_broken": len(breaks), "titles_triggered": len(triggers.fired),
            "alerts_arrived": len(arrived), "latency_s": latencies,
            "latency_p50_s": statistics.median(values) if values else None,
            "latency_p95_s": values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
            if values else None,
            "latency_max_s": values[-1] if values else None,
            "by_minute": {m: v for m, v in sorted(by_minute.items())},
            "rss_mb_by_minute": {m: v["rss_mb"] for m, v in sorted(by_minute.items())},
            "views_written": _finished_views(output),
            "drain_s": round(drain_s, 1) if drain_s is not None else None,
            "drain_timeout_s": drain_timeout_s, "run_flags": list(HORIZONS) + list(run_flags),
            "messages_published": triggers.messages,
            "messages_read": accounting.get("messages_read"),
            "accounted": accounting.get("ok"),
            "accounting_problems": accounting.get("problems"),
            "read_all": (accounting.get("messages_read") or 0) + (left_unread or 0) == triggers.messages
            and bool(accounting.get("ok")),
            "left_unread": left_unread,
            "input_records_read": summary.get("input_records"),
            "log_tail": "".join(log)[-3000:] if run.returncode else "",
        }
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        if cluster is not None:
            cluster.stop()
        running.stop()


def _doc_line(r: dict) -> str:
    rss = r["rss_mb_by_minute"]
    minutes = sorted(int(m) for m in rss)
    shown = ", ".join(f"{m}′ {rss[m] if m in rss else rss[str(m)]:,}" for m in minutes)
    lat = (f"{r['latency_p50_s']:.1f} / {r['latency_p95_s']:.1f} / {r['latency_max_s']:.1f}"
           if r["latency_p50_s"] is not None else "no alert")
    by_minute = r.get("by_minute") or {}
    last = by_minute[max(by_minute, key=int)] if by_minute else {}
    checkpoints = "none"
    if "checkpoints" in last:
        written = last.get("checkpoint_written_kb", last["checkpoint_kb"])
        sizes = ", ".join(f"{m}′ {by_minute[m]['checkpoint_kb'] / 1024:.0f}"
                          for m in sorted(by_minute, key=int) if "checkpoint_kb" in by_minute[m])
        checkpoints = (f"{last['checkpoints']} ok, {last['checkpoints_failed']} failed; last "
                       f"{last['checkpoint_kb'] / 1024:.1f} MB"
                       + (f" ({written / 1024:.1f} MB written)" if written != last["checkpoint_kb"] else "")
                       + f" in {last['checkpoint_ms'] / 1000:.1f} s; MB by minute: {sizes}")
    read = r.get("messages_read")
    left = f" + {r['left_unread']:,} left unacked for the next run" if r.get("left_unread") else ""
    # pstest deletes a message still undelivered 10 minutes after its publish
    # time (pstest/fake.go, maintainMessages): a run that falls that far
    # behind loses messages inside the emulator, before anyone can read them.
    gone = (r["messages"] - read - (r.get("left_unread") or 0)
            if read is not None and r["source"] == "pubsub" else 0)
    expired = f"; {gone:,} expired in pstest (undelivered 10 min)" if gone > 0 else ""
    read_all = (("yes" if r["read_all"] else "NO") + f" ({read:,}{left} / {r['messages']:,}{expired})"
                if read is not None else "unknown (no summary)")
    runner = r["runner"] + (f" p{r['parallelism']}" if r["runner"] != "direct" else "")
    return (f"| {r['source']} | {runner} | {r['minutes']:g} | {r['events_per_s_peak_minute']:,} "
            f"({r['events']:,} in all) | "
            f"{r['alerts_arrived']}/{r['titles_triggered']} | {lat} | {shown} | {checkpoints} | "
            f"{r['views_written']:,} | "
            + (f"{r['drain_s']:.0f}" if r["drain_s"] is not None else f"> {r['drain_timeout_s']:.0f}, killed")
            + f" | {read_all} | {' '.join(r['run_flags']) or 'defaults'}"
            + (f" (cluster state: {r['state_backend']})" if r.get("state_backend") else "") + " |")


def write_doc(result: dict, started: str) -> None:
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    header = ("| source | runner | minutes | events/s, busiest minute | alerts / broken titles | alert latency "
              "p50 / p95 / max (s) | peak RSS MB by minute (pipeline + cluster) | checkpoints at the end "
              "| views written | drain (s) | read all (read / published messages) | run flags |\n"
              "|---|---|---:|---:|---:|---|---|---|---:|---:|---|---|")
    match = re.search(r"<!-- stream:start.*?-->\n(.*?)<!-- stream:end -->", doc, flags=re.S)
    rows = [line for line in (match.group(1).splitlines() if match else [])
            if line.startswith("| ") and not line.startswith("| source")
            and line.count(" | ") == header.count(" | ", 0, header.index("\n"))][-11:]
    rows.append(_doc_line(result))
    block = (f"<!-- stream:start (generated by `make bench-stream`; do not edit) -->\n"
             f"Last row written {started}.\n\n{header}\n" + "\n".join(rows) + "\n<!-- stream:end -->")
    if match:
        doc = re.sub(r"<!-- stream:start.*?<!-- stream:end -->", lambda _: block, doc, flags=re.S)
    else:
        doc += "\n" + block + "\n"
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc)


def _rewrite_from(paths: list[str]) -> None:
    """Rebuild the streaming table from saved result files (oldest first)."""
    for path in paths:
        with open(path) as f:
            result = json.load(f)
        write_doc(result, result["started"])


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("pubsub", "kinesis"), default="pubsub")
    parser.add_argument("--runner", choices=("direct", "flink", "flink-local"), default="direct",
                        help="flink: a standalone cluster started here (JobManager + 2 "
                             "TaskManagers); flink-local: Flink in the job server's JVM")
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=2_000, help="target events/s")
    parser.add_argument("--faults", type=int, default=8, help="titles that break during the run")
    parser.add_argument("--drain_timeout_s", type=float, default=600,
                        help="after publishing, how long the run may take to finish its backlog")
    parser.add_argument("--run_flag", action="append", default=[],
                        help="extra `stallwatch run` flag, e.g. --run_flag=--inactivity_s=300")
    parser.add_argument("--state_backend", choices=flink_tools.STATE_BACKENDS, default="rocksdb",
                        help="--runner=flink: the cluster's state backend (rocksdb: incremental "
                             "checkpoints)")
    parser.add_argument("--write-doc", action="store_true")
    args = parser.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.faults < 1:
        print("bench.stream: --minutes and --rate must be > 0, --faults >= 1", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    os.makedirs(OUT, exist_ok=True)
    result = bench(args.source, args.runner, args.minutes, args.rate, args.faults,
                   tuple(args.run_flag), args.drain_timeout_s, args.parallelism,
                   args.state_backend)
    result["started"] = started
    path = os.path.join(OUT, f"stream-{args.source}-{args.runner}-p{args.parallelism}-"
                             f"{int(args.rate)}-{started.replace(' ', '').replace(':', '')}.json")
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps({k: v for k, v in result.items() if k != "log_tail"}, indent=1))
    if result["rc"] not in (0, None):
        print(result["log_tail"], file=sys.stderr)
    if args.write_doc:
        write_doc(result, started)
    return 0 if result["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
