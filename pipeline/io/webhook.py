"""A webhook receiver on loopback: what `stallwatch receive` runs and the
notification tests send to. It checks each request's signature, keeps what
it received, and answers as scripted (default 200)."""

from __future__ import annotations

import dataclasses
import http.server
import json
import threading
import time
from typing import Callable, Optional

from pipeline.io.notify import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify


@dataclasses.dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at_s: float                   # wall clock when it arrived
    status: int                   # what was answered
    signed: Optional[bool]        # None: no secret to check against

    @property
    def json(self) -> dict:
        return json.loads(self.body)


# A script: (index of the request, path) -> (status, extra headers, seconds to wait first).
Script = Callable[[int, str], tuple[int, dict, float]]


def describe(got: Received) -> str:
    """One line for a received notification: time, status, signature, what it says."""
    mark = {None: "unsigned", True: "signed", False: "BAD SIGNATURE"}[got.signed]
    try:
        body = got.json
    except ValueError:
        body = {}
    what = (body.get("headline") or body.get("text")
            or (f"{body.get('event_action')} {body.get('dedup_key')}: "
                + str((body.get("payload") or {}).get("summary", "")))
            if isinstance(body, dict) else "")
    clock = time.strftime("%H:%M:%S", time.localtime(got.at_s))
    return f"{clock} {got.status} {mark:<8} {got.path} {what}".rstrip()


def always(status: int = 200) -> Script:
    return lambda index, path: (status, {}, 0.0)


class WebhookServer:
    """An HTTP server on 127.0.0.1 (``port`` 0: any free one), in a thread.

    ``received`` lists every request in arrival order. With ``secret``, a
    request whose signature does not verify is answered 401 (and kept, with
    ``signed`` False). ``log`` is called with each Received (e.g. to print).
    """

    def __init__(self, port: int = 0, secret: Optional[str] = None,
                 script: Script = always(), log: Optional[Callable[[Received], None]] = None,
                 host: str = "127.0.0.1") -> None:
        self.secret, self.script, self._log = secret, script, log
        self.received: list[Received] = []
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:       # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner._answer(self, body)

            def log_message(self, *args) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def _answer(self, handler: http.server.BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            index = len(self.received)
            status, headers, delay_s = self.script(index, handler.path)
        signed = None
        if self.secret is not None:
            signed = verify(self.secret, handler.headers.get(TIMESTAMP_HEADER),
                            handler.headers.get(SIGNATURE_HEADER), body, time.time())
            if not signed:
                status = 401
        received = Received(handler.path, dict(handler.headers.items()), body, time.time(),
                            status, signed)
        with self._lock:
            self.received.append(received)
        if self._log is not None:
            self._log(received)
        if delay_s:
            time.sleep(delay_s)
        reply = b'{"status":"success"}' if 200 <= status < 300 else b'{"status":"error"}'
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(reply)))
            handler.end_headers()
            handler.wfile.write(reply)
        except (BrokenPipeError, ConnectionResetError):
            pass                   # the client gave up (its timeout)

    def __enter__(self) -> "WebhookServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
