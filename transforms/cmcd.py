"""CMCD v2 event reports (CTA-5004-B) to the typed Beacon model.

Stock players (hls.js 1.7, dash.js 5.x, Shaka 5.x) POST event-mode reports to
a collector: one report per line, each an HTTP Structured Fields dictionary
(RFC 9651) such as ``cid="vod-1",e=ps,sid="4506",sn=2,sta=r,ts=1795830383559,v=2``.
The structured-field syntax is parsed by ``http_sf``; this module gives the
keys their meaning. docs/cmcd.md is the user-facing form of this mapping.

No Beam here: ParseBeacons calls ``reports``, ``decode`` and ``to_beacon`` for
the ``cmcd`` body of a collector record (pipeline/collector/server.py writes them).
"""

from __future__ import annotations

import decimal
import urllib.parse
from typing import Any, Callable, Iterable, Optional

import http_sf

from transforms.fields import Rejected, flag, identifier, number, text, token
from transforms.model import Beacon, EventKind

K = EventKind

PROTOCOL = "cmcd"
VIEWER_KEY = "com.stallwatch-vid"      # custom key a site may add: the viewer id
MAX_STRING_CHARS = 256                 # CMCD caps strings at 64 (cid 128); be lenient
MAX_PLAYHEAD_MS = 7 * 86_400_000       # as beacon v1: a week-long stream

# Player state (sta) to the event it implies.
STATE_EVENTS = {
    "s": K.PLAY,          # starting: play requested, no frame yet
    "p": K.PLAYING,
    "r": K.WAITING,       # rebuffering; during startup or a seek it is not a stall
    "k": K.SEEKING,
    "a": K.PAUSE,
    "w": K.PLAYERREADY,   # waiting for the viewer (e.g. autoplay blocked): no playback yet
    "d": K.PLAYERREADY,   # preloading
    "e": K.ENDED,
    "f": K.ERROR,         # fatal error
    "q": K.VIEWEND,       # quit (before completion)
}
# Event types that are their own event whatever the state.
_ERROR, _BITRATE_CHANGE, _PLAY_STATE, _RESPONSE = "e", "bc", "ps", "rr"
# Ad events (CTA-5004-B: ad break start/end, ad start/end, skip): their cid
# is the content's on a break, the ad's on an ad.
AD_EVENTS = {"abs": K.ADBREAKSTART, "abe": K.ADBREAKEND, "as": K.ADPLAYING,
             "ae": K.ADENDED, "sk": K.ADENDED}
_AD_OF_ITSELF = frozenset({"as", "ae", "sk"})
MAX_URL_CHARS = 2_048
MAX_HTTP_STATUS = 999
_STREAM_TYPES = {"v": "on-demand", "l": "live", "ll": "live"}


def split_reports(body: str) -> list[str]:
    """The reports of one event-mode body: one per non-blank line."""
    return [line.strip() for line in body.splitlines() if line.strip()]


def decode(report: str) -> dict[str, Any]:
    """One report as a plain dict: bare values, inner lists as lists of
    ``(value, params)``, tokens as str.

    Raises:
      Rejected: ``invalid_cmcd`` when it is not a structured-field dictionary.
    """
    try:
        parsed = http_sf.parse(report.encode("utf-8"), tltype="dictionary")
    except (http_sf.StructuredFieldError, ValueError, UnicodeEncodeError) as exc:
        raise Rejected("invalid_cmcd", f"not a CMCD dictionary: {exc}") from None
    return {key: _plain(value) for key, (value, _params) in parsed.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, list):          # inner list: keep each member's params (v, a, ...)
        return [(_plain(v), dict(p)) for v, p in value]
    if isinstance(value, http_sf.Token):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    return value


def to_beacon(fields: dict[str, Any], defaults: dict[str, Any], source: str,
              arrival_ms: Optional[int], bound: Callable[[int, Optional[int]], int],
              check_ts: Callable[[Any], int]) -> Beacon:
    """Map one decoded report (plus the collector's defaults) to a Beacon.

    Args:
      fields: ``decode(report)``.
      defaults: what the collector added: ``viewer_id``, ``browser``, ``os``,
        ``device``, ``received_ms`` (ignored when ``arrival_ms`` is known).
      source: where the report came from (for dead letters and lineage).
      arrival_ms: the source's arrival time, if any.
      bound: ``TimeBounds.bound``: event time from client and arrival time.
      check_ts: beacon v1's timestamp check (epoch ms in 2000..2100); its
        ``Rejected`` propagates with beacon v1's reason codes.

    Raises:
      Rejected: with a stable reason code.
    """
    version = fields.get("v", 1)
    if version != 2:
        raise Rejected("unsupported_version", f"CMCD v={version!r}: event reports are v2")
    view_id = identifier(fields, "sid", required=True)
    video_id = identifier(fields, "cid", required=True)
    ts = check_ts(fields.get("ts"))
    event_type = token(fields, "e", required=True)
    state = token(fields, "sta", required=False)
    if state is not None and state not in STATE_EVENTS:
        raise Rejected("invalid_value:sta", f"unknown player state {state[:16]!r}")
    if event_type == _PLAY_STATE and state is None:
        raise Rejected("missing_field:sta", "a play-state report (e=ps) needs sta")
    kind, fatal, error_code = _kind(event_type, state, fields)
    playhead = number(fields, "pt", 0, MAX_PLAYHEAD_MS)
    url = text(fields, "url", MAX_URL_CHARS)
    bitrate_kbps = _video_value(fields.get("pb")) or _video_value(fields.get("br"))
    if arrival_ms is None:
        arrival_ms = defaults.get("received_ms") if isinstance(defaults.get("received_ms"), int) else None
    viewer = identifier(fields, VIEWER_KEY, required=False) or _default(defaults, "viewer_id")
    return Beacon(
        view_id=view_id,
        video_id=video_id,
        kind=kind,
        event_ms=bound(ts, arrival_ms),
        client_ms=ts,
        playhead_ms=playhead,
        viewer_id=viewer,
        seq=number(fields, "sn", 0, 2**62),
        rendition=f"{bitrate_kbps}k" if bitrate_kbps else None,
        bitrate_bps=bitrate_kbps * 1000 if bitrate_kbps else None,
        cdn=identifier(fields, "cdn", required=False),
        browser=_default(defaults, "browser"),
        os=_default(defaults, "os"),
        device=_default(defaults, "device"),
        player_name=_default(defaults, "player_name"),
        player_version=_default(defaults, "player_version"),
        stream_type=_STREAM_TYPES.get(token(fields, "st", required=False) or ""),
        error_code=error_code,
        fatal=fatal,
        source=source,
        protocol=PROTOCOL,
        reported_startup_ms=number(fields, "msd", 0, MAX_PLAYHEAD_MS),
        reported_stall_ms=_starvation(fields, "bsd"),
        live_latency_ms=number(fields, "ltc", 0, MAX_PLAYHEAD_MS),
        ad_id=video_id if event_type in _AD_OF_ITSELF else None,
        cmcd_event=event_type,
        starved=bool(flag(fields, "bs")),
        reported_stall_count=_starvation(fields, "bsa"),
        reported_stall_total_ms=_starvation(fields, "bsda"),
        not_rendered=bool(flag(fields, "nr")),
        response_code=number(fields, "rc", 0, MAX_HTTP_STATUS),
        ttfb_ms=number(fields, "ttfb", 0, MAX_PLAYHEAD_MS),
        ttlb_ms=number(fields, "ttlb", 0, MAX_PLAYHEAD_MS),
        url=url,
        host=text(fields, "h", MAX_STRING_CHARS) or _host(url),
    )


def _kind(event_type: str, state: Optional[str], fields: dict) -> tuple[EventKind, Optional[bool], Optional[str]]:
    """The event a report stands for, with (fatal, error_code) for errors.

    Play-state reports map by ``sta``; so do time-interval, response-received
    and other informational reports that carry ``sta`` (Shaka's release build
    sends no ``ps`` reports: the state on its ``t``/``rr`` reports is all there
    is). An error report is an error; a bitrate change a rendition change.
    """
    if event_type == _ERROR or state == "f":
        codes = fields.get("ec")
        if event_type == _ERROR and codes is None:
            raise Rejected("missing_field:ec", "an error report (e=e) needs ec")
        code = ",".join(str(v) for v, _ in codes)[:MAX_STRING_CHARS] if isinstance(codes, list) \
            else (str(codes)[:MAX_STRING_CHARS] if codes is not None else None)
        return K.ERROR, state == "f", code
    if event_type == _BITRATE_CHANGE:
        return K.RENDITIONCHANGE, None, None
    if event_type in AD_EVENTS:
        return AD_EVENTS[event_type], None, None
    if state is not None:
        return STATE_EVENTS[state], None, None
    return K.HEARTBEAT, None, None


def _video_value(value: Any) -> Optional[int]:
    """The video member of an inner list like ``(800;v 64;a)`` (or a bare number), in kbps."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value) if value > 0 else None
    if isinstance(value, list):
        for member, params in value:
            if ("v" in params or "av" in params or not params) and isinstance(member, (int, float)) \
                    and not isinstance(member, bool) and member > 0:
                return int(member)
    return None


_STARVATION_MAX = {"bsd": MAX_PLAYHEAD_MS, "bsda": MAX_PLAYHEAD_MS, "bsa": 1_000_000}


def _starvation(fields: dict, name: str) -> Optional[int]:
    """A starvation figure (``bsd``, ``bsa``, ``bsda``): a number, or an inner
    list per object type. Playback stalls when the video buffer starves, so
    the video (or muxed) member is taken, else the largest: summing an audio
    and a video starvation that overlapped would count the stall twice.

    Raises:
      Rejected: ``wrong_type:NAME`` for anything but numbers,
        ``out_of_range:NAME`` above a week (durations) or a million (counts).
    """
    value = fields.get(name)
    if value is None:
        return None
    members = value if isinstance(value, list) else [(value, {})]
    numbers: list[tuple[int, dict]] = []
    for member, params in members:
        if isinstance(member, bool) or not isinstance(member, (int, float)) or member < 0:
            raise Rejected(f"wrong_type:{name}", f"{name} must hold numbers >= 0")
        if member > _STARVATION_MAX[name]:
            raise Rejected(f"out_of_range:{name}", f"{name}={member!r} > {_STARVATION_MAX[name]}")
        numbers.append((int(member), params))
    video = [n for n, params in numbers if "v" in params or "av" in params]
    return max(video or [n for n, _ in numbers]) if numbers else None


def _host(url: Optional[str]) -> Optional[str]:
    """The host of an absolute URL (a relative one, as in §8.2.3, has none)."""
    if not url:
        return None
    try:
        return urllib.parse.urlsplit(url).hostname or None
    except ValueError:         # e.g. an unbalanced "[" in the authority
        return None


def _default(defaults: dict, key: str) -> Optional[str]:
    value = defaults.get(key)
    return str(value)[:MAX_STRING_CHARS] if isinstance(value, (str, int)) and not isinstance(value, bool) \
        and str(value) else None


def reports(body: Any) -> Iterable[str]:
    """The reports of a collector record's ``cmcd`` field: a body string or a list of them."""
    if isinstance(body, str):
        return split_reports(body)
    if isinstance(body, list) and all(isinstance(b, str) for b in body):
        return [r for b in body for r in split_reports(b)]
    raise Rejected("wrong_type:cmcd", f"cmcd is {type(body).__name__}, not a string")
