"""``stallwatch collect``: the HTTP collector players send beacons and CMCD reports to.

    POST /v1/beacons   beacon v1 JSON (an event, an array, or an envelope)
    POST /v1/cmcd      CMCD v2 event reports (application/cmcd, one per line),
                       or one report in the ``CMCD=`` query (query mode)
    GET  /healthz      200 while accepting, 503 while draining

Each accepted request becomes one sink record (one JSON line / message) that
``stallwatch run --source=`` reads unchanged in meaning: beacons as a beacon v1
envelope, CMCD as ``{"cmcd": BODY, ...}``; both carry the collector's
``received_ms`` and user-agent-derived ``browser``/``os``/``device`` as
defaults (docs/collector.md).

Durability: a request is answered 204 only after its record is in the sink
(group commit: records are batched every ``flush_ms``); a full buffer answers
503 with Retry-After (backpressure). SIGTERM/SIGINT stop accepting, finish
the requests in flight, write everything accepted and exit. At least once: a
request that timed out may be written and also retried by the player; the
pipeline de-duplicates (event_id / seq / sn).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import functools
import glob
import hashlib
import json
import os
import re
import signal
import sys
import time
import urllib.parse
from typing import Callable, Optional, Protocol, Union

import orjson
from aiohttp import web

from pipeline.io.streams.uri import StreamUri

BEACONS_PATH = "/v1/beacons"
CMCD_PATH = "/v1/cmcd"
HEALTH_PATH = "/healthz"
VIEWER_QUERY = "vid"          # ?vid=... on the CMCD target URL: the viewer id
_CMCD_KEYS = frozenset({"sid", "e", "ts", "v", "cid", "sta"})
_SID = re.compile(r'(?:^|,)\s*sid="([^"]{1,64})"')


class Sink(Protocol):
    """Where records go: ``put`` returns once they are durable."""

    def put(self, entries: list[tuple[str, bytes, dict]]) -> object: ...
    def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class CollectorConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    sink: Union[str, StreamUri] = ""       # a directory, or a topic / stream
    max_body_bytes: int = 256 * 1024       # a player's batch is a few KB
    max_pending: int = 20_000              # records accepted but not yet in the sink
    flush_ms: int = 100                    # group-commit interval
    batch_records: int = 500
    batch_bytes: int = 4 * 1024 * 1024     # Kinesis PutRecords takes 5 MB
    ack_timeout_s: float = 30.0
    cors_origins: tuple[str, ...] = ("*",)
    trust_forwarded: bool = False          # take the client address from X-Forwarded-For
    viewer_salt: str = "stallwatch"
    shutdown_timeout_s: float = 30.0


class Rejected(Exception):
    """A request answered 4xx/5xx with a stable reason."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.status, self.reason, self.detail = status, reason, detail


# -- client metadata --------------------------------------------------------------

@functools.lru_cache(maxsize=8192)
def client_dimensions(user_agent: str) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(browser, os, device) families from a User-Agent (ua-parser), cached."""
    if not user_agent:
        return None, None, None
    from ua_parser import parse
    result = parse(user_agent[:1024])
    browser = result.user_agent.family if result.user_agent else None
    os_name = result.os.family if result.os else None
    device = result.device.family if result.device else None
    return browser, os_name, device


def viewer_hash(address: str, user_agent: str, salt: str) -> str:
    """A stable pseudonymous viewer id for clients that send none (CMCD has no
    viewer key): the salted hash of client address and user agent."""
    digest = hashlib.sha256(f"{salt}\x1f{address}\x1f{user_agent}".encode()).hexdigest()
    return f"h:{digest[:20]}"


# -- request bodies to sink records ----------------------------------------------

def beacon_record(body: bytes, meta: dict) -> tuple[str, bytes, int]:
    """A beacon v1 body as one envelope record: (partition key, data, events).

    The collector's metadata are the lowest-priority defaults (the client's
    envelope fields and each event's own fields win), except ``received_ms``.
    Only the message's shape is checked here; each event is validated by the
    pipeline, where a bad one becomes a dead letter with the rest kept.
    """
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(400, "invalid_json", str(exc)) from None
    if isinstance(message, dict) and "events" in message:
        events = message["events"]
        if not isinstance(events, list):
            raise Rejected(400, "wrong_type:events", "events must be an array")
        defaults = {k: v for k, v in message.items() if k != "events"}
    elif isinstance(message, list):
        events, defaults = message, {}
    elif isinstance(message, dict):
        events, defaults = [message], {}
    else:
        raise Rejected(400, "not_an_object", f"a beacon message is an object or an array, "
                                             f"not a JSON {type(message).__name__}")
    if not events:
        raise Rejected(400, "empty_batch", "no events")
    # received_ms is the collector's stamp: a client cannot set it, on the
    # envelope or on an event.
    events = [{k: v for k, v in e.items() if k != "received_ms"} if isinstance(e, dict) else e
              for e in events]
    envelope = {**meta, **defaults, "received_ms": meta["received_ms"], "events": events}
    first = events[0] if isinstance(events[0], dict) else {}
    key = str(first.get("view_id") or defaults.get("view_id") or meta.get("viewer_id") or "-")
    return key[:256], orjson.dumps(envelope), len(events)


def cmcd_record(body: str, meta: dict) -> tuple[str, bytes, int]:
    """CMCD reports as one ``{"cmcd": BODY, ...meta}`` record.

    Refused only when no line is a structured-field dictionary (not CMCD at
    all); a bad line among good ones is kept and dead-lettered by the pipeline.
    """
    from transforms import cmcd
    lines = cmcd.split_reports(body)
    if not lines:
        raise Rejected(400, "empty_batch", "no CMCD reports in the body")
    for line in lines:
        try:
            if _CMCD_KEYS & cmcd.decode(line).keys():
                break
        except cmcd.Rejected:
            continue
    else:
        raise Rejected(400, "invalid_cmcd", "no line is a CMCD report (a structured-field "
                                            "dictionary with sid, e, ts or v)")
    match = _SID.search(lines[0])
    key = match.group(1) if match else str(meta.get("viewer_id") or "-")
    return key, orjson.dumps({"cmcd": "\n".join(lines), **meta}), len(lines)


# -- sinks ------------------------------------------------------------------------

class FileSink:
    """NDJSON files in a directory, readable by ``stallwatch run --source=DIR``.

    Records go to a hidden ``.collector-*.ndjson.part`` file (fsync'd on every
    batch), renamed to ``collector-*.ndjson`` when it reaches ``roll_bytes`` or
    ``roll_s``, and on close. Parts left by a crash are renamed on start.
    """

    def __init__(self, directory: str, roll_bytes: int = 64 << 20, roll_s: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self._dir, self._roll_bytes, self._roll_s, self._clock = directory, roll_bytes, roll_s, clock
        os.makedirs(directory, exist_ok=True)
        for part in glob.glob(os.path.join(directory, ".collector-*.ndjson.part")):
            os.replace(part, os.path.join(directory, os.path.basename(part)[1:-len(".part")]))
        self._file = None
        self._opened = 0.0
        self._count = 0
        self.files: list[str] = []

    def put(self, entries: list[tuple[str, bytes, dict]]) -> int:
        if self._file is None:
            self._count += 1
            name = f"collector-{int(self._clock() * 1000)}-{os.getpid()}-{self._count:04d}.ndjson"
            self._path = os.path.join(self._dir, name)
            self._file = open(os.path.join(self._dir, f".{name}.part"), "ab")
            self._opened = self._clock()
        self._file.write(b"".join(data + b"\n" for _, data, _ in entries))
        self._file.flush()
        os.fsync(self._file.fileno())
        self.tick()
        return len(entries)

    def tick(self) -> None:
        """Roll the open file when it is big or old enough."""
        if self._file is not None and (self._file.tell() >= self._roll_bytes
                                       or self._clock() - self._opened >= self._roll_s):
            self._roll()

    def _roll(self) -> None:
        part = self._file.name
        self._file.close()
        self._file = None
        os.replace(part, self._path)
        self.files.append(self._path)

    def close(self) -> None:
        if self._file is not None:
            self._roll()


class StreamSink:
    """A Pub/Sub topic or Kinesis stream (the pipeline's own writers)."""

    def __init__(self, uri: StreamUri) -> None:
        from pipeline.io.streams.sinks import open_writer
        self._writer = open_writer(uri)
        self._writer.check()

    def put(self, entries: list[tuple[str, bytes, dict]]) -> int:
        return self._writer.put(entries)

    def tick(self) -> None:
        pass

    def close(self) -> None:
        pass


def open_sink(sink: Union[str, StreamUri]):
    """A directory's NDJSON files, or a Pub/Sub topic or Kinesis stream."""
    if isinstance(sink, str):
        return FileSink(sink)
    return StreamSink(sink)


# -- the batcher: group commit with a bounded buffer -------------------------------

class Batcher:
    """Accepted records wait here until a batch containing them is in the sink."""

    def __init__(self, sink, config: CollectorConfig) -> None:
        self._sink, self._config = sink, config
        self._pending: collections.deque = collections.deque()
        self._records = 0
        self._wake = asyncio.Event()
        self._closing = False
        self.written = 0
        self.batches = 0
        self.sink_errors = 0

    @property
    def pending(self) -> int:
        return self._records

    def submit(self, key: str, data: bytes, records: int) -> asyncio.Future:
        if self._records + records > self._config.max_pending:
            raise Rejected(503, "overloaded", f"{self._records} records waiting for the sink")
        future = asyncio.get_running_loop().create_future()
        self._pending.append((key, data, records, future))
        self._records += records
        if len(self._pending) >= self._config.batch_records:
            self._wake.set()
        return future

    async def run(self) -> None:
        """Flush until closed and empty."""
        loop = asyncio.get_running_loop()
        while not (self._closing and not self._pending):
            try:
                await asyncio.wait_for(self._wake.wait(), self._config.flush_ms / 1000)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            while self._pending:
                batch = self._take()
                await self._write(loop, batch)
            await loop.run_in_executor(None, getattr(self._sink, "tick", lambda: None))

    def _take(self) -> list:
        batch, size = [], 0
        while self._pending and len(batch) < self._config.batch_records:
            item = self._pending[0]
            if batch and size + len(item[1]) > self._config.batch_bytes:
                break
            batch.append(self._pending.popleft())
            size += len(item[1])
        return batch

    async def _write(self, loop, batch: list) -> None:
        entries = [(key, data, {}) for key, data, _, _ in batch]
        delay = 0.2
        while True:
            try:
                await loop.run_in_executor(None, self._sink.put, entries)
                break
            except Exception as exc:        # the sink is down: keep the batch, retry
                self.sink_errors += 1
                print(f"stallwatch collect: sink error ({type(exc).__name__}: {str(exc)[:200]}); "
                      f"retrying in {delay:.1f} s", file=sys.stderr, flush=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        for _, _, records, future in batch:
            self._records -= records
            self.written += records
            if not future.done():
                future.set_result(None)
        self.batches += 1

    def close(self) -> None:
        self._closing = True
        self._wake.set()


# -- HTTP -------------------------------------------------------------------------

class Collector:
    """The aiohttp application and its counters."""

    def __init__(self, config: CollectorConfig, sink) -> None:
        self.config, self.sink = config, sink
        self.batcher = Batcher(sink, config)
        self.draining = False
        self.accepted_requests = 0
        self.accepted_records = 0
        self.rejected: collections.Counter = collections.Counter()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes,
                              middlewares=[self._cors])
        app.router.add_post(BEACONS_PATH, self._beacons)
        app.router.add_post(CMCD_PATH, self._cmcd)
        app.router.add_get(CMCD_PATH, self._cmcd)          # query mode: ?CMCD=...
        app.router.add_get(HEALTH_PATH, self._health)
        for path in (BEACONS_PATH, CMCD_PATH):
            app.router.add_route("OPTIONS", path, self._preflight)
        return app

    @web.middleware
    async def _cors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except Rejected as exc:
            self.rejected[exc.reason] += 1
            response = web.json_response({"error": exc.reason, "detail": exc.detail[:300]},
                                         status=exc.status)
            if exc.status == 503:
                response.headers["Retry-After"] = "1"
        except web.HTTPException as exc:
            reason = {413: "too_large", 404: "not_found", 405: "method_not_allowed"}.get(
                exc.status, f"http_{exc.status}")
            self.rejected[reason] += 1
            response = web.json_response({"error": reason, "detail": exc.reason}, status=exc.status)
        origin = request.headers.get("Origin")
        allowed = self.config.cors_origins
        if origin and ("*" in allowed or origin in allowed):
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
            response.headers["Vary"] = "Origin"
        return response

    async def _preflight(self, request: web.Request) -> web.Response:
        return web.Response(status=204, headers={
            "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
            "Access-Control-Allow-Headers": request.headers.get(
                "Access-Control-Request-Headers", "Content-Type"),
            "Access-Control-Max-Age": "86400"})

    async def _health(self, request: web.Request) -> web.Response:
        body = {"status": "draining" if self.draining else "ok",
                "pending_records": self.batcher.pending, "written_records": self.batcher.written}
        return web.json_response(body, status=503 if self.draining else 200)

    async def _body(self, request: web.Request) -> bytes:
        if self.draining:
            raise Rejected(503, "shutting_down", "the collector is stopping")
        length = request.content_length
        if length is not None and length > self.config.max_body_bytes:
            raise Rejected(413, "too_large", f"{length} bytes > {self.config.max_body_bytes}")
        body = await request.read()
        if not body:
            raise Rejected(400, "empty_body", "the request has no body")
        return body

    def _meta(self, request: web.Request, viewer_default: bool) -> dict:
        ua = request.headers.get("User-Agent", "")
        browser, os_name, device = client_dimensions(ua)
        meta: dict = {"received_ms": int(time.time() * 1000)}
        viewer = request.query.get(VIEWER_QUERY)
        if viewer:
            meta["viewer_id"] = viewer[:256]
        elif viewer_default:
            meta["viewer_id"] = viewer_hash(self._address(request), ua, self.config.viewer_salt)
        for name, value in (("browser", browser), ("os", os_name), ("device", device)):
            if value and value != "Other":
                meta[name] = value
        return meta

    def _address(self, request: web.Request) -> str:
        if self.config.trust_forwarded:
            forwarded = request.headers.get("X-Forwarded-For", "")
            if forwarded:
                return forwarded.split(",")[0].strip()
        return request.remote or ""

    async def _beacons(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        key, data, records = beacon_record(body, self._meta(request, viewer_default=False))
        return await self._accept(key, data, records)

    async def _cmcd(self, request: web.Request) -> web.Response:
        query = request.query.get("CMCD")
        if request.method == "GET" or (query is not None and not request.can_read_body):
            if query is None:
                raise Rejected(400, "missing_cmcd", "no CMCD= query and no body")
            if self.draining:
                raise Rejected(503, "shutting_down", "the collector is stopping")
            text = urllib.parse.unquote(query)
        else:
            try:
                text = (await self._body(request)).decode("utf-8")
            except UnicodeDecodeError:
                raise Rejected(400, "not_utf8", "the body is not UTF-8") from None
        key, data, records = cmcd_record(text, self._meta(request, viewer_default=True))
        return await self._accept(key, data, records)

    async def _accept(self, key: str, data: bytes, records: int) -> web.Response:
        future = self.batcher.submit(key, data, records)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.config.ack_timeout_s)
        except asyncio.TimeoutError:
            raise Rejected(503, "sink_timeout", "the sink did not confirm in time") from None
        self.accepted_requests += 1
        self.accepted_records += records
        return web.Response(status=204)

    def summary(self) -> dict:
        return {"accepted_requests": self.accepted_requests,
                "accepted_records": self.accepted_records,
                "written_records": self.batcher.written, "batches": self.batcher.batches,
                "rejected": dict(self.rejected), "sink_errors": self.batcher.sink_errors}


async def serve(config: CollectorConfig, ready: Optional[Callable[[int], None]] = None,
                stop: Optional[asyncio.Event] = None) -> dict:
    """Run until SIGTERM/SIGINT (or ``stop``), then drain; returns the counters."""
    loop = asyncio.get_running_loop()
    sink = await loop.run_in_executor(None, open_sink, config.sink)
    collector = Collector(config, sink)
    flusher = asyncio.create_task(collector.batcher.run())
    runner = web.AppRunner(collector.app(), handle_signals=False, access_log=None,
                           shutdown_timeout=config.shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_port=True)
    await site.start()
    port = runner.addresses[0][1]
    stop = stop or asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):   # not the main thread
            pass
    if ready:
        ready(port)
    await stop.wait()
    collector.draining = True           # new requests: 503; in-flight ones finish
    await runner.cleanup()              # stops listening, waits for handlers
    collector.batcher.close()
    await flusher                       # everything accepted is written
    await loop.run_in_executor(None, sink.close)
    return collector.summary()


def main(config: CollectorConfig) -> int:
    def ready(port: int) -> None:
        print(f"stallwatch collect: listening on http://{config.host}:{port} "
              f"(POST {BEACONS_PATH}, POST {CMCD_PATH}, GET {HEALTH_PATH}) -> {config.sink}",
              flush=True)
    summary = asyncio.run(serve(config, ready))
    print(f"stallwatch collect: stopped; {json.dumps(summary)}", flush=True)
    return 0
