"""Record real CMCD v2 event reports and beacons from the three stock players.

    python -m tests.e2e.capture [--seconds 50] [--out tests/data/cmcd]

Plays the synthetic VOD in hls.js (HLS), dash.js (DASH) and Shaka (DASH) at the same time,
once clean and once with segment DELAYED_SEGMENT held DELAY_S by the origin, and writes
``<out>/<player>-<clean|delayed>.txt`` (CMCD bodies verbatim, each after a ``# POST ...``
line) and ``.beacons.jsonl`` (beacon v1 bodies). Prints what each browser saw.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from urllib.parse import urlencode

from tests.e2e.browsers import watch
from tests.e2e.media import make_vod
from tests.e2e.origin import Origin
from tests.e2e.recorder import Recorder

REPO = Path(__file__).resolve().parents[2]
DELAYED_SEGMENT = 3  # media time 4 s to 6 s: past the players' start-up buffer
DELAY_S = 9.0  # under Shaka's ~10 s no-progress abandon and dash.js's 20 s timeout
PLAYERS = {"hls": "hls/master.m3u8", "dash": "dash/manifest.mpd", "shaka": "dash/manifest.mpd"}


def page_url(origin: Origin, recorder: Recorder, player: str, vid: str, **extra) -> str:
    query = {"src": f"{origin.url}/{PLAYERS[player]}", "collector": recorder.url, "vid": vid,
             "cid": "vod-1", "beacons": "1", **extra}
    return f"{origin.url}/clients/examples/{player}.html?{urlencode(query)}"


def run(vod: dict, seconds: float, delayed: bool, viewers: int = 1) -> tuple[list, Recorder, Origin]:
    """All players at once (``viewers`` pages each); returns (results, recorder, origin)."""
    origin = Origin(vod["dir"], delay_segment=DELAYED_SEGMENT if delayed else None,
                    delay_s=DELAY_S).start()
    recorder = Recorder().start()
    try:
        urls = [page_url(origin, recorder, player, f"{player}-{i}")
                for player in PLAYERS for i in range(viewers)]
        results = watch(urls, seconds)
    finally:
        recorder.stop()
        origin.stop()
    return results, recorder, origin


def split(recorder: Recorder, vid: str) -> Recorder:
    """A recorder holding only one viewer's requests (CMCD by ?vid=, beacons by viewer_id)."""
    part = Recorder()
    for post in recorder.requests:
        if post.path == "/v1/cmcd" and post.query == urlencode({"vid": vid}):
            part.requests.append(post)
        elif post.path == "/v1/beacons" and post.method == "POST" and \
                json.loads(post.body).get("viewer_id") == vid:
            part.requests.append(post)
    return part


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=50)
    parser.add_argument("--out", default=str(REPO / "tests" / "data" / "cmcd"))
    parser.add_argument("--media", default="/tmp/stallwatch-e2e/vod")
    args = parser.parse_args()
    vod = make_vod(args.media)
    for mode in ("clean", "delayed"):
        started = time.time()
        results, recorder, origin = run(vod, args.seconds, mode == "delayed")
        print(f"== {mode}: {time.time() - started:.1f} s wall, "
              f"{len(recorder.requests)} collector requests, delayed: "
              f"{[(r.path, r.delay_s) for r in origin.delayed()]}")
        for player, result in zip(PLAYERS, results):
            split(recorder, f"{player}-0").save(Path(args.out) / f"{player}-{mode}")
            sw = result["sw"] or {}
            print(f"  {player}: currentTime={result['current_time']} stalls="
                  f"{[(s['t'], round(s['currentTime'], 3)) for s in sw.get('stalls', [])]} "
                  f"errors={sw.get('errors')} console={result['console_errors']} "
                  f"page={result['page_errors']}")


if __name__ == "__main__":
    main()
