"""A stand-in collector that records what browsers POST (aiohttp, background thread).

Stores every ``POST /v1/cmcd`` (CMCD v2 event reports, ``application/cmcd``) and
``POST /v1/beacons`` (beacon v1 JSON from clients/web/stallwatch.js) verbatim, with its
query string and Content-Type, and every CORS preflight with the headers it asked for.
Answers 204 with CORS headers, like the real collector.

    with Recorder() as rec:
        ...  # pages use collector=rec.url
    rec.posts("/v1/cmcd")  # -> [Post(...), ...]
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from tests.e2e.origin import CORS_HEADERS, BackgroundApp

PATHS = ("/v1/cmcd", "/v1/beacons")


@dataclass
class Post:
    t: float  # epoch seconds when it arrived
    method: str  # POST, or OPTIONS for a preflight
    path: str
    query: str
    content_type: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    def header_line(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"# {self.method} {self.path}{query} content-type: {self.content_type}"


class Recorder(BackgroundApp):
    def __init__(self, port: int = 0):
        self.requests: list[Post] = []
        app = web.Application(client_max_size=4 * 1024 * 1024)
        for path in PATHS:
            app.router.add_route("POST", path, self._record)
            app.router.add_route("OPTIONS", path, self._record)
        super().__init__(app, port)

    async def _record(self, request: web.Request) -> web.Response:
        body = await request.read() if request.method == "POST" else b""
        self.requests.append(Post(
            time.time(), request.method, request.path, request.query_string,
            request.headers.get("Content-Type", ""), body, dict(request.headers)))
        return web.Response(status=204, headers=CORS_HEADERS)

    def posts(self, path: str) -> list[Post]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    def preflights(self) -> list[Post]:
        return [r for r in self.requests if r.method == "OPTIONS"]

    def save(self, stem: str | Path) -> None:
        """``<stem>.txt``: the CMCD bodies, verbatim, each after a ``# POST ...`` header line;
        ``<stem>.beacons.jsonl``: the beacon bodies, one POST a line."""
        stem = Path(stem)
        stem.parent.mkdir(parents=True, exist_ok=True)
        with open(stem.with_name(stem.name + ".txt"), "w", encoding="utf-8") as out:
            for post in self.posts("/v1/cmcd"):
                text = post.body.decode("utf-8", "replace")
                out.write(f"{post.header_line()}\n{text}{'' if text.endswith(chr(10)) else chr(10)}")
        with open(stem.with_name(stem.name + ".beacons.jsonl"), "w", encoding="utf-8") as out:
            for post in self.posts("/v1/beacons"):
                out.write(post.body.decode("utf-8", "replace").strip().replace("\n", " ") + "\n")
