"""SessionizeViews: beacons grouped into views with per-view QoE metrics, batch or streaming."""

from __future__ import annotations

import dataclasses
import hashlib
import pickle
import typing
from typing import Iterable, Optional

import apache_beam as beam
from apache_beam import coders, pvalue
from apache_beam.metrics import Metrics
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms import harness
from transforms.model import Beacon, EventKind, View
from transforms.parse import METRICS_NAMESPACE
from transforms.facts import Withdrawn
from transforms.rolling import RETRACTED, Member, read_pickled, use_state, write_pickled
from transforms.viewstate import summarize_views

LATE = "late"
PROGRESS = "progress"
# A beacon of these kinds may open a stall: the detectors hear of it at once.
_STALL_KINDS = frozenset((EventKind.WAITING, EventKind.STALLED, EventKind.REBUFFERSTART))


def _digest(view: View) -> str:
    return hashlib.sha1(repr(dataclasses.replace(view, version=0)).encode("utf-8")).hexdigest()[:16]


def _versioned(view: View, version: int, fired: Timestamp,
               routed: Optional[str] = None) -> Iterable:
    """A view going out as ``version``: on the main output and, as a Member,
    on PROGRESS for the detectors; both at the time its view was complete.
    ``routed``: the viewer its previous version went to."""
    view = dataclasses.replace(view, version=version)
    yield TimestampedValue(view, fired)
    for member in _progress(view, (version, 0), routed):
        yield pvalue.TaggedOutput(PROGRESS, TimestampedValue(member, fired))


def _progress(view: View, rank: tuple[int, int], routed: Optional[str]) -> list[Member]:
    """The Members for a view version: withdrawn from the viewer its last
    version went to, if that was another one (its viewer_id came in later)."""
    members = [Member(view.view_key, rank, view.end_ms, view)]
    if routed is not None and routed != view.viewer_id:
        members.insert(0, Member(view.view_key, rank, view.end_ms, Withdrawn(routed)))
    return members


def _key_ms(view_key: str) -> int:
    return int(view_key.rsplit("@", 1)[1])


def keep_keys(views: list[View], sent: dict) -> list[View]:
    """The views with the keys they were first emitted under.

    A view's key is its first beacon's time, so a beacon earlier than that,
    arriving after the view went out (reordered in the stream), would give
    the same view a new key and leave the old one in the outputs: every
    event counted twice. A key already sent whose beacons now sit in a view
    that was not sent is given to that view. Left as is: two sent views
    joined by a late beacon across an inactivity gap (the earlier keeps its
    key; the later one's last version stays out).
    """
    keys = {v.view_key for v in views}
    stale = [k for k in sent if k not in keys]
    if not stale:
        return views
    out = list(views)
    starts = [_key_ms(v.view_key) for v in out]      # views come in time order
    for key in sorted(stale, key=_key_ms):
        holder = max((i for i, start in enumerate(starts) if start <= _key_ms(key)), default=None)
        if holder is not None and out[holder].view_key not in sent:
            out[holder] = dataclasses.replace(out[holder], view_key=key)
    return out


def _routes(sent: dict, snapped: tuple) -> dict[str, str]:
    """view_key -> the viewer its last PROGRESS Member went to."""
    routes = {view_key: viewer for view_key, viewer in snapped}
    routes.update((view_key, entry[3]) for view_key, entry in sent.items())
    return routes


class _GroupedViewsFn(beam.DoFn):
    """The bounded-input path: every beacon of a view_id at once (after a
    GroupByKey), so each view is summarized once and goes out as version 1.

    It gives what _ViewStateFn gives on bounded input, where the watermark
    only moves once all input is in: there every timer fires after the last
    beacon, so nothing is late and each view is emitted once, at its
    view_id's newest event time + complete_ms (tests/unit/transforms/
    test_batch_paths.py runs both paths on the same input). Here a view costs
    one sort and no per-beacon state reads, writes or timers (docs/benchmarks.md).
    """

    def __init__(self, complete_ms: int, inactivity_ms: int, max_stall_ms: int) -> None:
        self._complete_ms = complete_ms
        self._inactivity_ms = inactivity_ms
        self._max_stall_ms = max_stall_ms
        self._views = Metrics.counter(METRICS_NAMESPACE, "views")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates_dropped")

    def process(self, element: tuple[str, Iterable[Beacon]]) -> Iterable:
        key, grouped = element
        beacons = list(grouped)
        fired = Timestamp(micros=(max(b.event_ms for b in beacons) + self._complete_ms) * 1000)
        views = summarize_views(key, beacons, self._max_stall_ms, self._inactivity_ms)
        self._views.inc(len(views))
        self._duplicates.inc(sum(v.duplicate_events for v in views))
        for view in views:
            yield from _versioned(view, 1, fired)


class _Meta(typing.NamedTuple):
    """All of a view_id's state but its beacons, in one cell: one read and
    one write per beacon (each state cell costs a runner round trip on a
    portable runner; docs/streaming.md)."""

    last: Optional[int] = None        # newest event time of the open view(s)
    closed: Optional[int] = None      # last event time of a finalized view (a tombstone)
    emitted: dict = {}                # view_key -> (version, digest, duplicates, viewer)
    snapshot: tuple = (None, ())      # (time, ((view_key, viewer), ...)) of the last snapshot


_NO_META = _Meta()


class _ViewStateFn(beam.DoFn):
    """Holds the beacons of one view_id until its view is complete, then emits it.

    State (per view_id): BEACONS, the bag of its beacons; META, a ``_Meta``:
    the latest event time seen, what went out ({view_key: (version, digest,
    duplicates, viewer)}), the last snapshot, and after expiry a tombstone
    (the finalized view's last event time).
    Timers (event time): COMPLETE at last + complete_ms, EXPIRE at
    last + inactivity_ms, FORGET at the tombstone + 2 x inactivity_ms.

    Worked timeline (complete 60 s, inactivity 60 min):

      t=0 s    first beacon       BEACONS=[b0], COMPLETE@60 s, EXPIRE@3600 s
      t=30 s   beacon             COMPLETE@90 s, EXPIRE@3630 s
      wm 90 s  COMPLETE fires     views summarized, emitted as version 1
      t=600 s  play after pause   COMPLETE@660 s, EXPIRE@4200 s (same view)
      wm 660 s COMPLETE fires     the view changed: version 2, same view_key
      wm 4200 s EXPIRE fires      anything unsent goes out; BEACONS cleared,
                                  META only the tombstone 600 s, FORGET@7800 s
      a beacon for t <= 4200 s now: too late, goes to the LATE output
      a beacon for t > 4200 s: a new view of the same view_id
      wm 7800 s FORGET fires      the tombstone goes: nothing is left for the key

    Bound: the beacons of the view_id's open view(s) (at most inactivity_s
    of them) plus a few hundred bytes; after expiry one integer, gone after
    FORGET. In batch the watermark jumps to the end once all input is in:
    COMPLETE fires once with every beacon, so each view comes out exactly once.
    """

    # Beacons are kept pickled: the SDK's state cache measures what it holds,
    # and flat bytes measure in O(1) where objects would be walked.
    BEACONS = userstate.BagStateSpec("beacons", coders.BytesCoder())
    META = userstate.ReadModifyWriteStateSpec("meta", coders.BytesCoder())      # a pickled _Meta
    COMPLETE = userstate.TimerSpec("complete", TimeDomain.WATERMARK)
    EXPIRE = userstate.TimerSpec("expire", TimeDomain.WATERMARK)
    FORGET = userstate.TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, complete_ms: int, inactivity_ms: int, max_stall_ms: int,
                 progress_ms: int = 0) -> None:
        self._progress_ms = progress_ms
        self._complete_ms = complete_ms
        self._inactivity_ms = inactivity_ms
        self._max_stall_ms = max_stall_ms
        self._views = Metrics.counter(METRICS_NAMESPACE, "views")
        self._updates = Metrics.counter(METRICS_NAMESPACE, "view_updates")
        self._duplicates = Metrics.counter(METRICS_NAMESPACE, "duplicates_dropped")
        self._late = Metrics.counter(METRICS_NAMESPACE, "late_beacons")

    def setup(self) -> None:
        harness.install()         # Beam's SDK state costs removed, its end-of-job hang-up quiet

    def process(self, element: tuple[str, Beacon],
                beacons=beam.DoFn.StateParam(BEACONS),
                meta=beam.DoFn.StateParam(META),
                complete=beam.DoFn.TimerParam(COMPLETE),
                expire=beam.DoFn.TimerParam(EXPIRE)) -> list:
        key, beacon = element
        held: _Meta = read_pickled(meta)
        if held is None:
            # A view_id without META holds no beacons (every add writes it):
            # saying so spares its first snapshot a runner round trip.
            beacons.clear()
            held = _NO_META
        if held.closed is not None and beacon.event_ms <= held.closed + self._inactivity_ms:
            self._late.inc()              # its view was finalized: never silently lost
            return [pvalue.TaggedOutput(LATE, beacon)]
        beacons.add(pickle.dumps(beacon, protocol=pickle.HIGHEST_PROTOCOL))
        latest = max(held.last or beacon.event_ms, beacon.event_ms)
        complete.set(Timestamp(micros=(latest + self._complete_ms) * 1000))
        expire.set(Timestamp(micros=(latest + self._inactivity_ms) * 1000))
        held = held._replace(last=latest)
        outputs = []
        taken_at = held.snapshot[0]
        if self._progress_ms > 0 and (beacon.kind in _STALL_KINDS or taken_at is None
                                      or beacon.event_ms >= taken_at + self._progress_ms):
            outputs, held = self._snapshot(key, beacon.event_ms, beacons, held)
        write_pickled(meta, held)
        return outputs

    def _snapshot(self, key: str, now_ms: int, beacons, held: _Meta) -> tuple[list, _Meta]:
        """The view(s) as they stand, for the detectors only (PROGRESS output).

        Ranked (versions sent, events) so a later snapshot or version wins;
        a view_key an earlier snapshot used and the beacons no longer yield
        (an earlier beacon came in) is retracted.
        """
        sent, (_, previous) = held.emitted, held.snapshot
        routes = _routes(sent, previous)
        views = keep_keys(summarize_views(key, [pickle.loads(b) for b in beacons.read()],
                                          self._max_stall_ms, self._inactivity_ms), sent)
        outputs = []
        for view in views:
            version = sent.get(view.view_key, (0,))[0]
            outputs += [pvalue.TaggedOutput(PROGRESS, member) for member in _progress(
                dataclasses.replace(view, version=version), (version, view.events),
                routes.get(view.view_key))]
            routes[view.view_key] = view.viewer_id
        keys = {v.view_key for v in views}
        outputs += [pvalue.TaggedOutput(PROGRESS, Member(stale, RETRACTED, now_ms,
                                                         Withdrawn(viewer)))
                    for stale, viewer in previous if stale not in keys]
        snapshot = (now_ms, tuple(sorted(
            (view_key, routes[view_key]) for view_key in keys | {k for k, _ in previous})))
        return outputs, held._replace(snapshot=snapshot)

    @userstate.on_timer(COMPLETE)
    def on_complete(self, key=beam.DoFn.KeyParam,
                    beacons=beam.DoFn.StateParam(BEACONS),
                    meta=beam.DoFn.StateParam(META),
                    fired=beam.DoFn.TimestampParam) -> list:
        held = read_pickled(meta, _NO_META)
        outputs, after = self._emit(key, beacons, held, fired)
        if after != held:
            write_pickled(meta, after)
        return outputs

    @userstate.on_timer(EXPIRE)
    def on_expire(self, key=beam.DoFn.KeyParam,
                  beacons=beam.DoFn.StateParam(BEACONS),
                  meta=beam.DoFn.StateParam(META),
                  forget=beam.DoFn.TimerParam(FORGET),
                  fired=beam.DoFn.TimestampParam) -> list:
        held = read_pickled(meta, _NO_META)
        outputs, _ = self._emit(key, beacons, held, fired)
        beacons.clear()
        if held.last is None:
            meta.clear()
        else:
            write_pickled(meta, _Meta(closed=held.last))
            forget.set(Timestamp(micros=(held.last + 2 * self._inactivity_ms) * 1000))
        return outputs

    @userstate.on_timer(FORGET)
    def on_forget(self, meta=beam.DoFn.StateParam(META)) -> list:
        held = read_pickled(meta)
        if held is not None and held._replace(closed=None) != _NO_META:
            write_pickled(meta, held._replace(closed=None))   # a newer view of the view_id is open
        else:
            meta.clear()
        return []

    def _emit(self, key: str, beacons, held: _Meta, fired) -> tuple[list, _Meta]:
        """The views of the buffered beacons that changed since last time, on
        the main output and (as Members) on PROGRESS for the detectors, and
        META as it is after sending them."""
        sent = dict(held.emitted)
        taken_at, snapped = held.snapshot
        routes = _routes(sent, snapped)
        outputs: list = []
        views = keep_keys(summarize_views(key, [pickle.loads(b) for b in beacons.read()],
                                          self._max_stall_ms, self._inactivity_ms), sent)
        for view in views:
            digest = _digest(view)
            version, previous, counted, _ = sent.get(view.view_key, (0, None, 0, None))
            if digest == previous:
                continue
            (self._updates if version else self._views).inc()
            self._duplicates.inc(view.duplicate_events - counted)
            sent[view.view_key] = (version + 1, digest, view.duplicate_events, view.viewer_id)
            outputs += _versioned(view, version + 1, fired, routes.get(view.view_key))
            routes[view.view_key] = view.viewer_id
        stale = set(routes) - {v.view_key for v in views}
        for view_key in sorted(stale):
            outputs.append(pvalue.TaggedOutput(PROGRESS, TimestampedValue(
                Member(view_key, RETRACTED, fired.micros // 1000, Withdrawn(routes[view_key])),
                fired)))
            sent.pop(view_key, None)
        snapshot = held.snapshot
        if snapped and (stale or any(routes[k] != v for k, v in snapped if k in routes)):
            snapshot = (taken_at, tuple(sorted((k, routes[k]) for k, _ in snapped
                                               if k not in stale)))
        return outputs, held._replace(emitted=sent, snapshot=snapshot)


class SessionizedViews(typing.NamedTuple):
    views: beam.PCollection          # of View: a view_key again with a higher version is an update
    late: beam.PCollection           # of Beacon that arrived after their view was finalized
    progress: beam.PCollection       # of Member(View | Withdrawn): versions, snapshots, withdrawals


class SessionizeViews(beam.PTransform):
    """Turn beacons into one summary per view, emitted when the view is complete.

    Input:  PCollection[Beacon], timestamped at their (bounded) event time.
    Output: SessionizedViews:
            views, PCollection[View]. A view is the beacons of one ``view_id``
            until ``inactivity_s`` pass without any; a video change or
            ``max_stall_s`` of continuous rebuffering starts a new one. In
            streaming a view is emitted once ``complete_s`` pass without
            beacons and re-emitted, same ``view_key`` with ``version`` + 1,
            when later beacons change it; in batch each view comes out once,
            as version 1.
            late, PCollection[Beacon] that came after their view was final.
            progress, PCollection[Member] of View for the detectors: every
            version above and, with ``progress_s`` > 0, snapshots of views
            still playing (on each beacon that may open a stall, and at most
            ``progress_s`` apart otherwise), so detection need not wait for
            views to end. Snapshots are not views: they never reach ``views``.
            A view key that no longer exists, or whose viewer_id changed,
            is withdrawn from the viewer its last Member named (a Member
            whose value is ``Withdrawn(viewer_id)``).

    Args:
      inactivity_s: silence (s) after which a view is final; later beacons
        for its time go to ``late``, beacons after it open a new view (Mux: 3600).
      max_stall_s: continuous rebuffering (s) that force-ends a view (Mux: 300).
      complete_s: silence (s) after which a view is emitted (Mux: 60).
      progress_s: event time between snapshots of a playing view (0: none,
        the batch setting: every view is complete by the time anyone looks).
      stateful: how views are held (see ``rolling.use_state``). None picks by
        the input: per-key state and event-time timers for an unbounded
        input or with ``progress_s``; one GroupByKey for a bounded one,
        with the same views (each once, as version 1) several times faster.
    """

    def __init__(self, inactivity_s: int = 3600, max_stall_s: int = 300,
                 complete_s: int = 60, progress_s: int = 0,
                 stateful: Optional[bool] = None) -> None:
        super().__init__()
        for name, value in (("inactivity_s", inactivity_s), ("max_stall_s", max_stall_s),
                            ("complete_s", complete_s)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if complete_s > inactivity_s:
            raise ValueError("complete_s must not exceed inactivity_s")
        if progress_s < 0:
            raise ValueError(f"progress_s must be >= 0, got {progress_s}")
        if stateful is False and progress_s > 0:
            raise ValueError("progress_s > 0 needs the stateful path")
        self._stateful = stateful
        self._fn = _ViewStateFn(complete_s * 1000, inactivity_s * 1000, max_stall_s * 1000,
                                progress_s * 1000)
        self._grouped_fn = _GroupedViewsFn(complete_s * 1000, inactivity_s * 1000,
                                           max_stall_s * 1000)

    def expand(self, beacons: beam.PCollection) -> SessionizedViews:
        keyed = (beacons
                 | "KeyByView" >> beam.Map(lambda b: (b.view_id, b))
                     .with_output_types(tuple[str, Beacon]))
        if use_state(self._stateful, beacons, self._fn._progress_ms > 0):
            results = keyed | "KeepViewState" >> beam.ParDo(self._fn).with_outputs(
                LATE, PROGRESS, main="views")
        else:
            results = (keyed
                       | "GroupByView" >> beam.GroupByKey()
                       | "SummarizeViews" >> beam.ParDo(self._grouped_fn).with_outputs(
                           LATE, PROGRESS, main="views"))
        return SessionizedViews(results.views, results[LATE], results[PROGRESS])
