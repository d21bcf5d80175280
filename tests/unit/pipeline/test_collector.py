"""stallwatch collect: a real aiohttp server on loopback, real HTTP requests, real files.

What is checked: each endpoint's answers (204 / 4xx with a reason / 503 with
Retry-After), CORS, size limits, user-agent metadata, the viewer id rules,
and that a SIGTERM in the middle of a load loses no accepted request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import glob
import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.request

import orjson
import pytest

from pipeline.collector import server
from tests import runs

CHROME = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/156.0.0.0 Safari/537.36")
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
          "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1")
REPORT = 'cid="vod-1",e=ps,sid="s-1",sn=1,sta=p,ts=1795830383559,v=2'


@contextlib.contextmanager
def running(sink, **overrides):
    """serve() in a thread on a free port; yields (base URL, result dict)."""
    config = server.CollectorConfig(port=0, sink=str(sink), **overrides)
    started, result = threading.Event(), {}
    holder = {}

    def thread():
        async def main():
            holder["stop"] = asyncio.Event()
            holder["loop"] = asyncio.get_running_loop()
            result.update(await server.serve(
                config, ready=lambda port: (holder.update(port=port), started.set()),
                stop=holder["stop"]))
        asyncio.run(main())

    worker = threading.Thread(target=thread, daemon=True)
    worker.start()
    assert started.wait(20)
    try:
        yield f"http://127.0.0.1:{holder['port']}", result
    finally:
        holder["loop"].call_soon_threadsafe(holder["stop"].set)
        worker.join(30)


def post(url, body: bytes, content_type="application/json", ua=CHROME, headers=None, method="POST"):
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": content_type, "User-Agent": ua,
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def written(directory) -> list[dict]:
    lines = []
    for path in sorted(glob.glob(os.path.join(directory, "*.ndjson"))):
        with open(path, "rb") as f:
            lines += [orjson.loads(line) for line in f if line.strip()]
    return lines


def test_beacons_and_cmcd__accepted_written_with_receive_time_and_client_metadata(tmp_path):
    before = int(time.time() * 1000)
    with running(tmp_path) as (url, result):
        envelope = {"view_id": "a1", "video_id": "v", "browser": "MyApp",
                    "events": [{"event": "play", "ts": before, "playhead_ms": 0}]}
        assert post(url + "/v1/beacons", orjson.dumps(envelope))[0] == 204
        assert post(url + "/v1/beacons", b'[{"view_id":"a2","video_id":"v","event":"play"}]',
                    content_type="text/plain;charset=UTF-8", ua=IPHONE)[0] == 204
        assert post(url + "/v1/cmcd?vid=viewer-7", (REPORT + "\n" + REPORT.replace("sn=1", "sn=2")).encode(),
                    content_type="application/cmcd")[0] == 204
        assert post(url + "/v1/cmcd", REPORT.encode(), content_type="application/cmcd")[0] == 204
        assert post(url + "/v1/cmcd?CMCD=" + urllib.request.quote(REPORT), b"", method="GET")[0] == 204
    beacon, beacon2, cmcd, cmcd_hashed, query = written(tmp_path)
    assert before <= beacon["received_ms"] <= int(time.time() * 1000)
    assert beacon["browser"] == "MyApp" and beacon["os"] == "Linux"      # the client's field wins
    assert beacon["events"] == envelope["events"] and "viewer_id" not in beacon
    assert (beacon2["browser"], beacon2["os"], beacon2["device"]) == ("Mobile Safari", "iOS", "iPhone")
    assert cmcd["cmcd"].count("\n") == 1 and cmcd["viewer_id"] == "viewer-7"
    assert re.fullmatch(r"h:[0-9a-f]{20}", cmcd_hashed["viewer_id"])
    assert query["cmcd"] == REPORT and query["viewer_id"] == cmcd_hashed["viewer_id"]
    assert result["accepted_requests"] == 5 and result["accepted_records"] == 6
    assert result["written_records"] == 6 and result["rejected"] == {}


@pytest.mark.parametrize("path, body, status, reason", [
    ("/v1/beacons", b"{not json", 400, "invalid_json"),
    ("/v1/beacons", b"[]", 400, "empty_batch"),
    ("/v1/beacons", b'"text"', 400, "not_an_object"),
    ("/v1/beacons", b'{"events": 3}', 400, "wrong_type:events"),
    ("/v1/beacons", b"", 400, "empty_body"),
    ("/v1/cmcd", b"garbage", 400, "invalid_cmcd"),
    ("/v1/cmcd", b"\xff\xfe", 400, "not_utf8"),
    ("/v1/cmcd", b"x" * 300_000, 413, "too_large"),
    ("/v2/beacons", b"{}", 404, "not_found"),
])
def test_bad_requests__4xx_with_a_stable_reason_and_nothing_written(tmp_path, path, body, status, reason):
    with running(tmp_path) as (url, result):
        code, _, answer = post(url + path, body)
    assert (code, json.loads(answer)["error"]) == (status, reason)
    assert written(tmp_path) == [] and result["rejected"] == {reason: 1}


def test_cors__preflight_and_allowed_origin_on_answers(tmp_path):
    with running(tmp_path, cors_origins=("https://site.example",)) as (url, _):
        code, headers, _ = post(url + "/v1/cmcd", b"", method="OPTIONS", headers={
            "Origin": "https://site.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type"})
        assert code == 204 and headers["Access-Control-Allow-Origin"] == "https://site.example"
        assert "POST" in headers["Access-Control-Allow-Methods"]
        assert headers["Access-Control-Allow-Headers"] == "content-type"
        _, ok, _ = post(url + "/v1/cmcd", REPORT.encode(), headers={"Origin": "https://site.example"})
        _, other, _ = post(url + "/v1/cmcd", REPORT.encode(), headers={"Origin": "https://evil.example"})
        _, bad, _ = post(url + "/v1/beacons", b"[]", headers={"Origin": "https://site.example"})
    assert ok["Access-Control-Allow-Origin"] == "https://site.example"
    assert "Access-Control-Allow-Origin" not in other
    assert bad["Access-Control-Allow-Origin"] == "https://site.example"   # errors readable too


class SlowSink:
    """A real sink that takes its time: lets the buffer fill."""

    def __init__(self, directory, delay_s):
        self.inner, self.delay_s = server.FileSink(str(directory)), delay_s

    def put(self, entries):
        time.sleep(self.delay_s)
        return self.inner.put(entries)

    def tick(self):
        self.inner.tick()

    def close(self):
        self.inner.close()


def test_backpressure__a_full_buffer_answers_503_with_retry_after(tmp_path, monkeypatch):
    monkeypatch.setattr(server, "open_sink", lambda uri: SlowSink(tmp_path, 1.5))
    with running(tmp_path, max_pending=3) as (url, result):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda i: post(url + "/v1/cmcd", REPORT.encode()), range(8)))
        health = json.loads(post(url + "/healthz", b"", method="GET")[2])
    codes = sorted(code for code, _, _ in answers)
    assert 204 in codes and 503 in codes
    assert all(h.get("Retry-After") == "1" for code, h, _ in answers if code == 503)
    assert health["status"] == "ok"
    assert len(written(tmp_path)) == codes.count(204) == result["accepted_requests"]


def test_file_sink__parts_left_by_a_crash_are_recovered_and_files_roll(tmp_path):
    with open(tmp_path / ".collector-1-2-0001.ndjson.part", "wb") as f:
        f.write(b'{"cmcd": "x"}\n')
    now = [1000.0]
    sink = server.FileSink(str(tmp_path), roll_s=10, clock=lambda: now[0])
    assert os.listdir(tmp_path) == ["collector-1-2-0001.ndjson"]
    sink.put([("k", b'{"a": 1}', {})])
    now[0] += 11
    sink.tick()
    sink.put([("k", b'{"a": 2}', {})])
    sink.close()
    assert len(glob.glob(str(tmp_path / "collector-*.ndjson"))) == 3
    assert not glob.glob(str(tmp_path / ".*"))


def test_sigterm_under_load__every_accepted_request_is_in_the_sink(tmp_path):
    """Clients keep posting; SIGTERM arrives mid-load. Every request answered
    204 is in the files, the process exits 0 and its summary agrees."""
    process, base = runs.start_collector(f"file://{tmp_path}", "--flush_ms=50")
    url = f"{base}/v1/beacons"
    accepted, refused, stop = [], [], threading.Event()

    def client(n):
        i = 0
        while not stop.is_set():
            event_id = f"c{n}-{i}"
            body = orjson.dumps({"view_id": f"v{n}", "video_id": "v", "event": "heartbeat",
                                 "ts": 1795830383559 + i, "playhead_ms": i, "event_id": event_id})
            try:
                code = post(url, body)[0]
            except (urllib.error.URLError, ConnectionError, OSError):
                code = None
            (accepted if code == 204 else refused).append(event_id)
            i += 1
            if code not in (204,):
                time.sleep(0.05)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    time.sleep(2.0)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    stop.set()
    for t in threads:
        t.join()
    assert process.returncode == 0, out
    summary = json.loads(out.split("stopped; ", 1)[1])
    ids = [e["event_id"] for record in written(tmp_path) for e in record["events"]]
    assert len(accepted) > 100
    assert set(accepted) <= set(ids)                           # nothing accepted was lost
    assert len(ids) == len(set(ids)) == summary["written_records"] == summary["accepted_records"]
    assert not glob.glob(str(tmp_path / ".*"))                 # no part file left open
