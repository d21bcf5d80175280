"""Alert notifications over HTTP: Slack incoming webhooks, PagerDuty Events
API v2, or generic JSON webhooks (docs/alerts.md).

``Notify`` turns alert versions into notices (transforms/notices.py: opened,
worse, closed, retracted) and POSTs each to every receiver:

- each request times out; 5xx, 429, timeouts and refused connections are
  retried with exponential backoff and full jitter, ``Retry-After`` is
  honoured (up to ``Delivery.max_wait_s``); other 4xx are final;
- with a secret, every request is signed: ``X-Stallwatch-Timestamp`` (unix
  seconds) and ``X-Stallwatch-Signature: v1=HEX``, HEX being HMAC-SHA256 of
  ``"{timestamp}.{body}"`` (``verify`` checks one);
- per receiver and worker process, a token bucket limits the rate, and after
  ``trip_after`` notices in a row were given up the receiver is skipped for
  ``trip_s`` (each skipped notice a dead letter), so a receiver that is down
  costs seconds, not the pipeline;
- what each receiver was told about each alert is kept in a ledger (one small
  JSON file per receiver and alert, local or gs://), written after the
  receiver accepted a notice: a restarted run that sees an alert again sends
  nothing it already sent (at least once: a crash between the receiver's
  2xx and the ledger write sends that notice again, with the same
  ``dedup_key`` / ``Idempotency-Key``).
"""

from __future__ import annotations

import dataclasses
import datetime
import email.utils
import hashlib
import hmac
import http.client
import json
import logging
import math
import os
import random
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Callable, Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.coders import PickleCoder
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate
from apache_beam.utils.timestamp import Timestamp

from pipeline.io.files import alert_json
from pipeline.results.summary import describe_alert
from transforms.model import Alert, Cause, DeadLetter, Notice, Notification
from transforms.notices import DEFAULT_CAUSES, STAGE, Notified, as_of, due, notices, stale
from transforms.parse import METRICS_NAMESPACE
from transforms.rolling import own_stage

FORMATS = ("slack", "pagerduty", "json")
DEFAULT_PENDING_S = 30
DEFAULT_RESOLVE_S = 900
SECRET_ENV = "STALLWATCH_NOTIFY_SECRET"
ROUTING_KEY_ENV = "STALLWATCH_PAGERDUTY_ROUTING_KEY"
TIMESTAMP_HEADER = "X-Stallwatch-Timestamp"
SIGNATURE_HEADER = "X-Stallwatch-Signature"
_SEVERITY = {Cause.CONTENT: "error", Cause.DELIVERY: "critical", Cause.VIEWER: "warning"}


@dataclasses.dataclass(frozen=True)
class Receiver:
    """Where notices go: ``format`` is one of FORMATS; PagerDuty's routing key
    travels in the body, not the URL."""

    format: str
    url: str
    routing_key: Optional[str] = dataclasses.field(default=None, repr=False)

    @property
    def name(self) -> str:
        """Format and host: safe to log (the path or query may hold a token)."""
        return f"{self.format}:{urllib.parse.urlsplit(self.url).netloc}"

    @property
    def key(self) -> str:
        """A stable id for the ledger (a digest: no token in a path)."""
        text = f"{self.format}|{self.url}|{self.routing_key or ''}"
        return f"{self.format}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def receiver(text: str) -> Receiver:
    """``FORMAT:URL`` (the format before the first colon) as a Receiver.

    Raises:
      ValueError: an unknown format, a URL that is not http(s), or a
        PagerDuty receiver without a routing key (``?routing_key=KEY`` on
        the URL, or the STALLWATCH_PAGERDUTY_ROUTING_KEY environment variable).
    """
    kind, _, url = text.partition(":")
    if kind not in FORMATS or not url:
        raise ValueError(f"expected FORMAT:URL with FORMAT one of {', '.join(FORMATS)}, got {text!r}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{text!r}: the URL must be http:// or https://HOST/...")
    if not url.isascii() or any(c.isspace() for c in url):
        raise ValueError(f"{text!r}: spaces and non-ASCII characters must be %-encoded")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"{text!r}: the port must be a number from 1 to 65535") from None
    if kind != "pagerduty":
        return Receiver(kind, url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    keys = [v for k, v in query if k == "routing_key"]
    routing_key = (keys[0] if keys else None) or os.environ.get(ROUTING_KEY_ENV)
    if not routing_key:
        raise ValueError(f"{kind}:{parts.scheme}://{parts.netloc}{parts.path}: no routing key "
                         f"(add ?routing_key=KEY or set {ROUTING_KEY_ENV})")
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "routing_key"])
    return Receiver(kind, urllib.parse.urlunsplit(parts._replace(query=rest)), routing_key)


@dataclasses.dataclass(frozen=True)
class Delivery:
    """How hard to try. Times in seconds; rate per receiver and worker process."""

    timeout_s: float = 10.0
    retries: int = 5                 # after the first attempt
    backoff_s: float = 1.0           # the first retry waits up to this, doubling each time
    backoff_cap_s: float = 30.0
    max_wait_s: float = 120.0        # a longer Retry-After gives the notice up
    budget_s: float = 180.0          # all attempts and waits of one notice
    rate_per_min: float = 60.0
    burst: int = 10
    trip_after: int = 3              # notices given up in a row before skipping the receiver
    trip_s: float = 60.0


# -- signing --------------------------------------------------------------------------

def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``v1=`` + hex HMAC-SHA256 of ``"{timestamp}." + body`` under ``secret``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, signed: str, body: bytes, now_s: float,
           tolerance_s: float = 300.0) -> bool:
    """What a receiver checks: the signature matches and the timestamp is
    within ``tolerance_s`` of its clock (a replayed request is refused)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    return (abs(now_s - sent) <= tolerance_s
            and hmac.compare_digest(signature(secret, sent, body), signed or ""))


# -- payloads -------------------------------------------------------------------------

def alert_record(alert: Alert) -> dict:
    """The alert as a line of alerts.jsonl."""
    return json.loads(alert_json(alert))


def headline(notice: Notice, record: dict) -> str:
    """``stallwatch <notice>: <the alert as `stallwatch run` prints it>``."""
    return f"stallwatch {notice.value}: " + " ".join(describe_alert(record).split())


def payload(receiver: Receiver, notice: Notice, alert: Alert,
            redact: bool = False) -> Optional[bytes]:
    """The request body for one notice; None when the format has no such
    event (PagerDuty has no "worse": an incident is triggered once).
    ``redact``: the routing key replaced (for a dead letter's copy)."""
    record = alert_record(alert)
    text = headline(notice, record)
    if receiver.format == "pagerduty":
        if notice is Notice.WORSE:
            return None
        body: dict = {"routing_key": "<redacted>" if redact else receiver.routing_key,
                      "dedup_key": alert.alert_id}
        if notice is Notice.OPENED:
            body.update(event_action="trigger", client="stallwatch", payload={
                "summary": text[:1024], "source": "stallwatch", "severity": _SEVERITY[alert.cause],
                "timestamp": _iso(alert.start_ts), "component": _subject(alert),
                "group": alert.cause.value, "class": "stall_cluster", "custom_details": record})
        else:
            body["event_action"] = "resolve"
    elif receiver.format == "slack":
        body = {"text": text, "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in (
                    ("Viewers stalled", f"{alert.affected_viewers} of {alert.exposed_viewers}"),
                    ("Stalls", f"{alert.stalls}"),
                    ("Rate", f"{alert.observed_rate:.4g} vs baseline {alert.baseline_rate:.4g}"),
                    ("p-value", f"{alert.p_value:.1e}"),
                    ("Status", f"{alert.status.value} (version {alert.version})"),
                    ("Alert", f"`{alert.alert_id}`"))]}]}
    else:
        body = {"notice": notice.value, "headline": text, "alert": record}
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _subject(alert: Alert) -> str:
    if alert.cause is Cause.CONTENT:
        return str(alert.video_id)
    if alert.cause is Cause.DELIVERY:
        return f"{alert.dimension}={alert.value}"
    return str(alert.viewer_id)


def _iso(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat()


# -- delivery -------------------------------------------------------------------------

class Outcome(NamedTuple):
    status: Optional[int]        # the last HTTP status (None: no response)
    attempts: int
    reason: Optional[str]        # None: accepted; else a stable code for the dead letter
    detail: str = ""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer, not a delivery: urllib would follow a 301 or
    302 on a POST with a body-less GET and report the GET's 200."""

    def redirect_request(self, *args, **kwargs):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)
_READ_MAX = 65_536              # of a response body: receivers answer briefly


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float
         ) -> tuple[int, Optional[str]]:
    """POST once: (status, Retry-After header or None). Raises OSError
    (refused, reset, timed out) when there is no response, and
    http.client.HTTPException when the answer is not HTTP."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            response.read(_READ_MAX)
            return response.status, response.headers.get("Retry-After")
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers.get("Retry-After")


def retry_after_s(value: Optional[str], now_s: float) -> Optional[float]:
    """Retry-After as seconds from now: delta-seconds or an HTTP date; None
    if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if re.fullmatch(r"[0-9]{1,9}", value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
        return max(0.0, when.timestamp() - now_s)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _no_response(exc: OSError) -> str:
    if isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in str(exc):
        return "timeout"
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(reason, ConnectionRefusedError):
        return "connection_refused"
    return "connection_error"


def deliver(url: str, body: bytes, headers: Callable[[], dict[str, str]], policy: Delivery,
            attempts: Optional[int] = None, sleep: Callable[[float], None] = time.sleep,
            now: Callable[[], float] = time.time, jitter: Callable[[], float] = random.random,
            send: Callable = post) -> Outcome:
    """POST ``body`` until a 2xx, a final answer (another status below 500
    but 429, a redirect included), ``attempts`` (default 1 + policy.retries)
    or the policy's time budget are used up. ``headers()`` is called per
    attempt (a fresh signature timestamp each time)."""
    attempts = attempts or 1 + policy.retries
    started = now()
    status: Optional[int] = None
    reason, detail = "", ""
    for attempt in range(1, attempts + 1):
        hint = None
        try:
            status, hint = send(url, body, headers(), policy.timeout_s)
        except OSError as exc:
            status, reason, detail = None, _no_response(exc), str(exc)
        except http.client.HTTPException as exc:      # not an HTTP answer: retried
            status, reason, detail = None, "protocol_error", f"{type(exc).__name__}: {exc}"
        except ValueError as exc:                      # a URL urllib cannot send to
            return Outcome(None, attempt, "bad_url", str(exc))
        else:
            if 200 <= status < 300:
                return Outcome(status, attempt, None)
            reason, detail = f"http_{status}", f"HTTP {status}"
            if status != 429 and status < 500:
                return Outcome(status, attempt, reason, detail)
        if attempt == attempts:
            break
        wait = retry_after_s(hint, now())
        if wait is None:
            wait = jitter() * min(policy.backoff_cap_s, policy.backoff_s * 2 ** min(attempt - 1, 30))
        elif wait > policy.max_wait_s:
            return Outcome(status, attempt, "retry_after_too_long",
                           f"{detail}, Retry-After {hint!r} > {policy.max_wait_s:g} s")
        if now() + wait > started + policy.budget_s:
            return Outcome(status, attempt, "out_of_time",
                           f"{detail}; a retry would end past the {policy.budget_s:g} s budget")
        Metrics.counter(METRICS_NAMESPACE, "notify_retries").inc()
        sleep(wait)
    return Outcome(status, attempts, reason, f"{detail} after {attempts} attempts")


class _Gate:
    """One receiver's rate limit and circuit, shared by a worker process's DoFns."""

    def __init__(self, policy: Delivery, clock: Callable[[], float] = time.monotonic) -> None:
        self._policy, self._clock = policy, clock
        self._lock = threading.Lock()
        self._tokens, self._filled = float(policy.burst), clock()
        self._failures, self._down_until = 0, -math.inf

    def turn(self) -> float:
        """Take a token: the seconds to wait before sending (0: at once)."""
        with self._lock:
            now = self._clock()
            rate = self._policy.rate_per_min / 60.0
            self._tokens = min(self._policy.burst, self._tokens + (now - self._filled) * rate)
            self._filled = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / rate

    def attempts(self) -> int:
        """0: skip (tripped); 1: one trial once the trip has run out; else all."""
        with self._lock:
            now = self._clock()
            if now < self._down_until:
                return 0
            return 1 if self._failures >= self._policy.trip_after else 1 + self._policy.retries

    def record(self, accepted: bool) -> None:
        with self._lock:
            self._failures = 0 if accepted else self._failures + 1
            if self._failures >= self._policy.trip_after:
                self._down_until = self._clock() + self._policy.trip_s


_GATES: dict[str, _Gate] = {}
_GATES_LOCK = threading.Lock()


def _gate(receiver: Receiver, policy: Delivery) -> _Gate:
    with _GATES_LOCK:
        return _GATES.setdefault(f"{receiver.key}|{policy}", _Gate(policy))


# -- the ledger -----------------------------------------------------------------------

class Ledger:
    """What each receiver was told about each alert: ``ROOT/<receiver>/<alert_id>.json``.

    Local paths are written to a temporary file and renamed (a crash leaves
    the old record or the new one); other filesystems (gs://) through
    Beam's FileSystems, whose objects appear whole on close.
    """

    def __init__(self, root: str) -> None:
        self.root = root

    def _path(self, receiver: Receiver, alert_id: str) -> str:
        return FileSystems.join(self.root, receiver.key, f"{alert_id}.json")

    def read(self, receiver: Receiver, alert_id: str) -> Optional[Notified]:
        """The record, or None if there is none or it cannot be read (counted
        as ``notify_ledger_errors``: the receiver may then hear it again)."""
        path = self._path(receiver, alert_id)
        try:
            if "://" not in path:
                with open(path, "rb") as handle:
                    stored = json.loads(handle.read())
            else:
                if not FileSystems.exists(path):
                    return None
                with FileSystems.open(path) as handle:
                    stored = json.loads(handle.read())
            return Notified(**stored)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            _ledger_error("read", path, exc)
            return None

    def write(self, receiver: Receiver, alert_id: str, notified: Notified) -> None:
        """Keep the record; a failure is counted (``notify_ledger_errors``) and
        logged, not raised: the receiver already has the notice, and a retried
        bundle would send it again."""
        path = self._path(receiver, alert_id)
        data = json.dumps(dataclasses.asdict(notified), sort_keys=True).encode("utf-8")
        try:
            if "://" in path:
                with FileSystems.create(path) as handle:
                    handle.write(data)
                return
            os.makedirs(os.path.dirname(path), exist_ok=True)
            temporary = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except (OSError, ValueError) as exc:
            _ledger_error("write", path, exc)


def _ledger_error(what: str, path: str, exc: Exception) -> None:
    Metrics.counter(METRICS_NAMESPACE, "notify_ledger_errors").inc()
    logging.getLogger(__name__).warning("notify ledger: cannot %s %s: %s", what, path, exc)


# -- the transform --------------------------------------------------------------------

class NotifyOutputs(NamedTuple):
    notifications: beam.PCollection   # of Notification
    dead_letters: beam.PCollection    # of DeadLetter (stage "notify")


DEAD_LETTERS = "dead_letters"
NOTIFIED = userstate.ReadModifyWriteStateSpec("notified", PickleCoder())
LATEST = userstate.ReadModifyWriteStateSpec("latest", PickleCoder())
PENDING = userstate.TimerSpec("pending", userstate.TimeDomain.WATERMARK)
FORGET = userstate.TimerSpec("forget", userstate.TimeDomain.WATERMARK)
# State of an alert no version has come for in this long (event time) is
# dropped; the ledger still has it.
FORGET_MS = 24 * 3_600_000


class _NotifyFn(beam.DoFn):
    """Per (receiver, alert): decide the notices of each version, send them,
    remember what was told.

    Input: (f"{receiver.key}|{alert_id}", Alert). State, one small record
    each: ``notified``, what the receiver was last told of an alert still
    open or pending (cleared once told closed or retracted: the ledger keeps
    that); ``latest``, the newest version of a pending alert. Timers:
    ``pending``, at the end of an alert's pending period (event time), tells
    it open if no version did; ``forget`` clears both a day after the newest
    version (an alert whose closing notice failed and never came again).

    Timeline (pending 30 s): v1 open at 10:00:00 -> pending, timer 10:00:30;
    v2 open at 10:00:12 -> still pending; v3 open at 10:00:41 -> OPENED (or
    the timer at 10:00:30, if no v3 came before the watermark passed it);
    v4 closed at 10:12:00 -> closing, timer 10:27:00 (resolve 15 min); no
    version reopens it: CLOSED at 10:27:00, state cleared. Had v2 been
    retracted, nothing would have been sent; had a v5 reopened it at 10:20,
    the receiver would have heard nothing of the close. A version older than the newest seen
    changes nothing.
    """

    def __init__(self, receivers: tuple[Receiver, ...], policy: Delivery,
                 secret: Optional[str], ledger: str, pending_ms: int, resolve_ms: int) -> None:
        self._receivers = {r.key: r for r in receivers}
        self._policy, self._secret = policy, secret
        self._ledger_root, self._holds = ledger, (pending_ms, resolve_ms)

    def setup(self) -> None:
        self._ledger = Ledger(self._ledger_root)

    def process(self, element: tuple[str, Alert],
                notified=beam.DoFn.StateParam(NOTIFIED), latest=beam.DoFn.StateParam(LATEST),
                pending=beam.DoFn.TimerParam(PENDING),
                forget=beam.DoFn.TimerParam(FORGET)) -> Iterable:
        key, alert = element
        Metrics.counter(METRICS_NAMESPACE, "notify_versions").inc()
        at = as_of(alert)
        forget.set(Timestamp(micros=(at + FORGET_MS) * 1000))
        yield from self._apply(key, alert, alert, notified, latest, pending, at)

    @userstate.on_timer(PENDING)
    def on_pending(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                   notified=beam.DoFn.StateParam(NOTIFIED), latest=beam.DoFn.StateParam(LATEST),
                   pending=beam.DoFn.TimerParam(PENDING)) -> Iterable:
        alert = latest.read()
        if alert is not None:
            # The alert as it stands when its pending period is over.
            at = max(fired.micros // 1000, as_of(alert))
            yield from self._apply(key, dataclasses.replace(alert, as_of_ms=at), alert,
                                   notified, latest, pending, at)

    @userstate.on_timer(FORGET)
    def on_forget(self, notified=beam.DoFn.StateParam(NOTIFIED),
                  latest=beam.DoFn.StateParam(LATEST)) -> None:
        notified.clear()
        latest.clear()

    def _apply(self, key: str, alert: Alert, sent: Alert, notified, latest, pending,
               now_ms: int) -> Iterable:
        """Tell the receiver what ``alert`` calls for (``sent``: the version as
        emitted, for the payload and the record) and keep what it was told.
        An alert whose notice failed at its wake-up is not woken again (that
        would loop): its next version tries again."""
        target = self._receivers[key.rsplit("|", 1)[0]]
        last = notified.read()
        if last is None:
            last = self._ledger.read(target, alert.alert_id)
        if stale(last, alert):
            return
        todo, after = notices(last, alert, *self._holds)
        told = last
        for i, notice in enumerate(todo):
            body = payload(target, notice, sent)
            if body is None:
                continue
            outcome = self._send(target, sent, notice, body, after)
            if outcome.reason is not None:
                yield from self._give_up(target, sent, todo[i:], outcome)
                # What was told so far, at the version before: the next
                # delivery of this version (or a later one) tries the rest.
                after = told
                break
            told = dataclasses.replace(after, version=alert.version - 1,
                                       open=notice in (Notice.OPENED, Notice.WORSE))
            Metrics.counter(METRICS_NAMESPACE, f"notifications:{notice.value}").inc()
            yield Notification(target.name, sent.alert_id, sent.version, sent.cause, notice,
                               outcome.status or 0, outcome.attempts, int(time.time() * 1000),
                               sent.as_of_ms)
        if after is None:
            return
        if not after.same_news(last):
            self._ledger.write(target, alert.alert_id, after)
        wake = due(after, *self._holds)
        if wake is not None:
            latest.write(sent)
            if wake > now_ms:
                pending.set(Timestamp(micros=wake * 1000))
        else:
            latest.clear()
        if after.open or wake is not None:
            notified.write(after)
        else:
            notified.clear()

    def _send(self, target: Receiver, alert: Alert, notice: Notice, body: bytes,
              after: Notified) -> Outcome:
        gate = _gate(target, self._policy)
        attempts = gate.attempts()
        if attempts == 0:
            return Outcome(None, 0, "receiver_down",
                           f"{self._policy.trip_after} notices in a row given up: skipped "
                           f"for {self._policy.trip_s:g} s")
        # The same across restarts: incidents are counted in the ledger.
        idempotency = f"{alert.alert_id}-{after.incidents}-{notice.value}" + (
            f"-{alert.affected_viewers}" if notice is Notice.WORSE else "")

        def headers() -> dict[str, str]:
            out = {"Content-Type": "application/json", "User-Agent": "stallwatch",
                   "Idempotency-Key": idempotency}
            if self._secret:
                now = int(time.time())
                out[TIMESTAMP_HEADER] = str(now)
                out[SIGNATURE_HEADER] = signature(self._secret, now, body)
            return out

        wait = gate.turn()
        if wait > 0:
            time.sleep(wait)
        outcome = deliver(target.url, body, headers, self._policy, attempts=attempts)
        gate.record(outcome.reason is None)
        return outcome

    def _give_up(self, target: Receiver, alert: Alert, todo: list[Notice],
                 outcome: Outcome) -> Iterable:
        for n, notice in enumerate(todo):
            reason = outcome.reason if n == 0 else "not_sent_after_failure"
            detail = (f"{target.name}: {outcome.detail or outcome.reason} "
                      f"({outcome.attempts} attempts)" if n == 0 else
                      f"{target.name}: {todo[0].value} was not delivered")
            Metrics.counter(METRICS_NAMESPACE, "notify_dead_letters").inc()
            body = payload(target, notice, alert, redact=True) or b""
            yield pvalue.TaggedOutput(DEAD_LETTERS, DeadLetter(
                stage=STAGE, reason=f"notify:{reason}", payload=body.decode("utf-8"),
                detail=detail,
                source=f"notify:{target.name}:{alert.alert_id}:v{alert.version}:{notice.value}"))


def _fan_out(alert: Alert, receivers: tuple[str, ...], causes: frozenset
             ) -> Iterable[tuple[str, Alert]]:
    if alert.cause in causes:
        for key in receivers:
            yield f"{key}|{alert.alert_id}", alert


def _newest(versions: Iterable[Alert]) -> Alert:
    return max(versions, key=lambda a: a.version)


class Notify(beam.PTransform):
    """Send alert transitions to HTTP receivers.

    Input:  PCollection[Alert], every version of every alert.
    Output: NotifyOutputs: Notification per notice a receiver accepted;
            DeadLetter (stage "notify", reason ``notify:<code>``, the request
            body as payload) per notice given up.

    On a bounded input only each alert's newest version is considered (a
    run's final alerts); on a stream, every version in turn. Alerts whose
    cause is not in ``causes`` are not sent (viewer alerts are off by
    default: one viewer's wifi should page nobody).

    Args:
      receivers: where to send (each gets every notice its format has).
      ledger: directory of what each receiver was told (local or gs://); keep
        it across restarts so a restarted run does not repeat notices.
      secret: HMAC key for the signature headers (None: unsigned).
      policy: timeouts, retries, rate limit and trip.
      causes: the alert causes to send.
      pending_s: how long (event time) an alert must stay open before it is
        told open; one retracted sooner is never sent.
      resolve_s: how long an alert told open must stay closed before it is
        told closed; one reopened sooner stays one incident.
    """

    def __init__(self, receivers: Iterable[Receiver], ledger: str, secret: Optional[str] = None,
                 policy: Delivery = Delivery(), causes: frozenset = DEFAULT_CAUSES,
                 pending_s: int = DEFAULT_PENDING_S, resolve_s: int = DEFAULT_RESOLVE_S) -> None:
        super().__init__()
        if pending_s < 0 or resolve_s < 0:
            raise ValueError(f"pending_s and resolve_s must be >= 0, got {pending_s}, {resolve_s}")
        self._pending_ms, self._resolve_ms = pending_s * 1000, resolve_s * 1000
        self._receivers = tuple(receivers)
        if not self._receivers:
            raise ValueError("Notify needs at least one receiver")
        self._ledger, self._secret, self._policy = ledger, secret, policy
        self._causes = frozenset(causes)

    def expand(self, alerts: beam.PCollection) -> NotifyOutputs:
        keys = tuple(r.key for r in self._receivers)
        keyed = (alerts | "PerReceiver" >> beam.FlatMap(_fan_out, keys, self._causes)
                 .with_output_types(tuple[str, Alert]))
        if alerts.is_bounded:
            keyed = (keyed | "NewestVersion" >> beam.CombinePerKey(_newest)
                     .with_output_types(tuple[str, Alert]))
        results = (keyed
                   | "OwnStage" >> own_stage()
                   | "Send" >> beam.ParDo(_NotifyFn(self._receivers, self._policy, self._secret,
                                                    self._ledger, self._pending_ms,
                                                    self._resolve_ms))
                   .with_outputs(DEAD_LETTERS, main="notifications"))
        return NotifyOutputs(results.notifications, results[DEAD_LETTERS])
