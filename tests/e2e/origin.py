"""A loopback HTTP origin for the browser end-to-end test (aiohttp, in a background thread).

Serves, with ``Access-Control-Allow-Origin: *`` on every answer:

    /...           the VOD directory made by tests.e2e.media.make_vod (hls/, dash/)
    /vendor/...    .tools/players/node_modules (hls.js, dashjs, shaka-player: `make e2e-tools`)
    /clients/...   the repository's clients/web/ (stallwatch.js, examples/*.html)

``delay_segment=N`` holds every request for media segment N (every video rendition and the
audio, HLS and DASH; see tests.e2e.media.segment_index) for ``delay_s`` seconds before
anything is sent: the time to first byte, as when an origin or CDN stalls. Every request is
logged in :attr:`Origin.log` with its time and the delay applied.

    origin = Origin(vod["dir"], delay_segment=3, delay_s=9.0).start()
    try: ...  # origin.url + "/clients/examples/hls.html?src=" + origin.url + "/hls/master.m3u8"
    finally: origin.stop()
"""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from tests.e2e.media import SEGMENT_S, segment_index

REPO = Path(__file__).resolve().parents[2]
VENDOR_DIR = REPO / ".tools" / "players" / "node_modules"
CLIENTS_DIR = REPO / "clients" / "web"

MIME_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mpd": "application/dash+xml",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".map": "application/json",
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".css": "text/css",
}
LIVE_AVAILABLE_AT_START = 4          # segments published when a live event begins
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, OPTIONS",
    "Access-Control-Allow-Headers": "*",
    "Access-Control-Max-Age": "600",
}


class BackgroundApp:
    """Runs an aiohttp Application on 127.0.0.1 (a free port) in its own thread and loop."""

    def __init__(self, app: web.Application, port: int = 0):
        self.app, self.port = app, port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def start(self):
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def setup() -> None:
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{self.port}"

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(setup())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=type(self).__name__, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError(f"{type(self).__name__} did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@web.middleware
async def cors(request: web.Request, handler):
    """CORS on every answer; OPTIONS preflights are answered here (204)."""
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS_HEADERS)
    response = await handler(request)
    response.headers.update(CORS_HEADERS)
    return response


@dataclass
class Request:
    t: float  # epoch seconds when the request arrived
    method: str
    path: str  # without the query string
    segment: int | None
    delay_s: float  # how long the origin held it before answering
    status: int = 0
    query: str = ""  # e.g. the player's request-mode CMCD=... (carries sid)


def live_playlist(vod: str, elapsed_s: float, program_start_ms: int, window: int = 6,
                  available_at_start: int = LIVE_AVAILABLE_AT_START) -> str:
    """An HLS VOD media playlist as a live one ``elapsed_s`` after the event began.

    Segment n (from 1) of duration d is published at (n - available_at_start) * d s,
    when it is complete; the playlist lists the last ``window`` published segments (its
    media sequence slides), has no ENDLIST, and dates each segment with
    EXT-X-PROGRAM-DATE-TIME = ``program_start_ms`` + its start in the VOD.
    """
    header, segments, duration = [], [], 0.0
    pending_duration = None
    for line in vod.splitlines():
        if line.startswith("#EXTINF:"):
            pending_duration = float(line[len("#EXTINF:"):].split(",")[0])
        elif line and not line.startswith("#") and pending_duration is not None:
            segments.append((duration, pending_duration, line))
            duration += pending_duration
            pending_duration = None
        elif line.startswith(("#EXTM3U", "#EXT-X-VERSION", "#EXT-X-TARGETDURATION", "#EXT-X-MAP")):
            header.append(line)
    step = segments[0][1]
    published = min(len(segments), available_at_start + int(elapsed_s // step))
    first = max(0, published - window)
    out = header + [f"#EXT-X-MEDIA-SEQUENCE:{first + 1}"]
    for start, length, uri in segments[first:published]:
        stamp = datetime.datetime.fromtimestamp((program_start_ms + start * 1000) / 1000,
                                                datetime.timezone.utc)
        out += [f"#EXT-X-PROGRAM-DATE-TIME:{stamp.isoformat(timespec='milliseconds')}",
                f"#EXTINF:{length:.6f},", uri]
    return "\n".join(out) + "\n"


class Origin(BackgroundApp):
    def __init__(self, media_dir: str | Path, *, delay_segment: int | None = None,
                 delay_s: float = 9.0, port: int = 0, live_since: float | None = None):
        self.roots = {"/vendor/": VENDOR_DIR, "/clients/": CLIENTS_DIR, "/": Path(media_dir)}
        self.delay_segment, self.delay_s = delay_segment, delay_s
        # Live: HLS media playlists become a sliding window of an event that began at
        # this epoch time (s), its program time the wall clock (segments published
        # when complete; see live_playlist).
        self.live_since = live_since
        self.log: list[Request] = []
        app = web.Application(middlewares=[cors])
        app.router.add_route("*", "/{tail:.*}", self._serve)
        super().__init__(app, port)

    def _resolve(self, path: str) -> Path | None:
        for prefix, root in self.roots.items():
            if path.startswith(prefix):
                file = (root / path[len(prefix):]).resolve()
                # No escaping the root with "..".
                return file if file.is_file() and file.is_relative_to(root.resolve()) else None
        return None

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        entry = Request(time.time(), request.method, request.path, segment_index(request.path),
                        0.0, query=request.query_string)
        self.log.append(entry)
        if request.method not in ("GET", "HEAD"):
            entry.status = 405
            return web.Response(status=405)
        if self.delay_segment is not None and entry.segment == self.delay_segment:
            entry.delay_s = self.delay_s
            await asyncio.sleep(self.delay_s)  # nothing is sent before this: a TTFB delay
        file = self._resolve(request.path)
        if file is None:
            entry.status = 404
            return web.Response(status=404, text="not found")
        entry.status = 200
        content_type = MIME_TYPES.get(file.suffix, "application/octet-stream")
        if self.live_since is not None and file.name == "index.m3u8":
            text = live_playlist(file.read_text(), time.time() - self.live_since,
                                 self.program_start_ms)
            return web.Response(text=text, headers={"Content-Type": content_type,
                                                    "Cache-Control": "no-store"})
        return web.FileResponse(file, headers={"Content-Type": content_type,
                                               "Cache-Control": "no-store"})

    @property
    def program_start_ms(self) -> int:
        """Program time of the VOD's media time 0: segments are published when
        complete, so the live edge is the wall clock."""
        return int(round((self.live_since - LIVE_AVAILABLE_AT_START * SEGMENT_S) * 1000))

    def delayed(self) -> list[Request]:
        """The requests that the origin held (segment ``delay_segment``)."""
        return [r for r in self.log if r.delay_s > 0]
