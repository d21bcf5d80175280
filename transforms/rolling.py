"""RollingEvaluate: keyed state of the latest version of each member, evaluated
early, on schedule and finally: the one code path for batch and streaming
aggregations whose inputs get updated (views re-emitted with a higher version).

Used by the detectors (one key per detection scope, members = views) and by
the per-minute metrics (one key per cell, members = view contributions).
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any, Callable, Iterable, Optional

import apache_beam as beam
from apache_beam import coders
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms import statecache

# Rank of a retraction: above any version a member can reach.
RETRACTED = (1 << 40, 0)


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One version of one member of a keyed aggregate.

    ``rank`` orders versions of the same ``member_key`` (the highest wins, in
    whatever order they arrive); ``value`` None retracts the member.
    ``end_ms`` (event time) lets old members age out after ``retention_ms``.
    """

    member_key: str
    rank: tuple[int, int]
    end_ms: int
    value: Any


def retraction(member_key: str, end_ms: int) -> Member:
    return Member(member_key, RETRACTED, end_ms, None)


def latest(members: Iterable[Member]) -> dict[str, Member]:
    """The highest-ranked version of each member key (retractions included)."""
    out: dict[str, Member] = {}
    for m in members:
        seen = out.get(m.member_key)
        if seen is None or m.rank > seen.rank:
            out[m.member_key] = m
    return out


# evaluate(key, live member values sorted by member key, as_of_ms, previous, settled)
#   -> (outputs, next previous, wake-up time or None). ``settled``: the input
#   has been quiet for settle_ms (the SETTLE timer; in batch, the evaluation).
Evaluate = Callable[[str, list, int, Any, bool], tuple[list, Any, Optional[int]]]


def _ts(ms: int) -> Timestamp:
    return Timestamp(micros=ms * 1000)


class _RollingFn(beam.DoFn):
    """State per key: MEMBERS (pickled Member versions, compacted on read),
    EMITTED (the evaluator's memory of what it sent), LAST_EVAL and MAX_TS.

    Timers (event time): SETTLE at the newest element + ``settle_ms`` (the
    evaluation once input stops: in batch the only one); WAKE when the
    evaluator asks (e.g. to close an alert after a quiet period); GC at the
    newest element + ``gc_ms`` clears the key. Between them, with
    ``every_ms`` > 0, an element at least ``every_ms`` after the previous
    evaluation triggers one at once, so results do not wait for the watermark.
    """

    MEMBERS = userstate.BagStateSpec("members", coders.BytesCoder())
    EMITTED = userstate.ReadModifyWriteStateSpec("emitted", coders.PickleCoder())
    LAST_EVAL = userstate.ReadModifyWriteStateSpec("last_eval", coders.VarIntCoder())
    MAX_TS = userstate.ReadModifyWriteStateSpec("max_ts", coders.VarIntCoder())
    DUE = userstate.ReadModifyWriteStateSpec("due", coders.VarIntCoder())
    SETTLE = userstate.TimerSpec("settle", TimeDomain.WATERMARK)
    WAKE = userstate.TimerSpec("wake", TimeDomain.WATERMARK)
    GC = userstate.TimerSpec("gc", TimeDomain.WATERMARK)

    def __init__(self, evaluate: Evaluate, settle_ms: int, every_ms: int,
                 retention_ms: int, gc_ms: int) -> None:
        self._evaluate = evaluate
        self._settle_ms = settle_ms
        self._every_ms = every_ms
        self._retention_ms = retention_ms
        self._gc_ms = gc_ms

    def setup(self) -> None:
        statecache.install()      # Beam's state-cache weigher, minus a slow scan (statecache.py)

    def process(self, element: tuple[str, Member],
                ts=beam.DoFn.TimestampParam,
                members=beam.DoFn.StateParam(MEMBERS),
                emitted=beam.DoFn.StateParam(EMITTED),
                last_eval=beam.DoFn.StateParam(LAST_EVAL),
                max_ts=beam.DoFn.StateParam(MAX_TS),
                due=beam.DoFn.StateParam(DUE),
                settle=beam.DoFn.TimerParam(SETTLE),
                wake=beam.DoFn.TimerParam(WAKE),
                gc=beam.DoFn.TimerParam(GC)) -> Iterable:
        key, member = element
        members.add(pickle.dumps(member, protocol=pickle.HIGHEST_PROTOCOL))
        now = ts.micros // 1000
        newest = max(max_ts.read() or now, now)
        max_ts.write(newest)
        settle.set(_ts(newest + self._settle_ms))
        gc.set(_ts(newest + self._gc_ms))
        if self._every_ms > 0:
            previous = last_eval.read()
            if previous is None or now >= previous + self._every_ms:
                yield from self._run(key, now, members, emitted, last_eval, due, wake,
                                     stamp=False, settled=False)

    @userstate.on_timer(SETTLE)
    def on_settle(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                  members=beam.DoFn.StateParam(MEMBERS),
                  emitted=beam.DoFn.StateParam(EMITTED),
                  last_eval=beam.DoFn.StateParam(LAST_EVAL),
                  due=beam.DoFn.StateParam(DUE),
                  wake=beam.DoFn.TimerParam(WAKE)) -> Iterable:
        yield from self._run(key, fired.micros // 1000, members, emitted, last_eval, due, wake)

    @userstate.on_timer(WAKE)
    def on_wake(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                members=beam.DoFn.StateParam(MEMBERS),
                emitted=beam.DoFn.StateParam(EMITTED),
                last_eval=beam.DoFn.StateParam(LAST_EVAL),
                due=beam.DoFn.StateParam(DUE),
                wake=beam.DoFn.TimerParam(WAKE)) -> Iterable:
        due.clear()
        yield from self._run(key, fired.micros // 1000, members, emitted, last_eval, due, wake,
                             settled=False)

    @userstate.on_timer(GC)
    def on_gc(self, key=beam.DoFn.KeyParam,
              members=beam.DoFn.StateParam(MEMBERS),
              emitted=beam.DoFn.StateParam(EMITTED),
              last_eval=beam.DoFn.StateParam(LAST_EVAL),
              max_ts=beam.DoFn.StateParam(MAX_TS),
              due=beam.DoFn.StateParam(DUE),
              wake=beam.DoFn.TimerParam(WAKE)) -> Iterable:
        # In batch the runner fires the timers set with the input in any
        # order, and a WAKE set later (for an earlier time) after them: run
        # whatever is still due, in time order, before letting go.
        newest, evaluated = max_ts.read(), last_eval.read()
        if newest is not None and (evaluated is None or evaluated < newest + self._settle_ms):
            yield from self._run(key, newest + self._settle_ms, members, emitted, last_eval,
                                 due, wake)
        pending = due.read()
        while pending is not None:
            due.clear()
            yield from self._run(key, pending, members, emitted, last_eval, due, wake,
                                 settled=False)
            pending = due.read()
        for state in (members, emitted, last_eval, max_ts):
            state.clear()

    def _run(self, key: str, as_of: int, members, emitted, last_eval, due, wake,
             stamp: bool = True, settled: bool = True) -> list:
        stored = [pickle.loads(b) for b in members.read()]
        previous = emitted.read()
        if not stored and previous is None:
            return []                                  # nothing here (a timer after GC)
        current = latest(stored)
        cutoff = as_of - self._retention_ms if self._retention_ms > 0 else None
        live = {k: m for k, m in current.items()
                if m.value is not None and (cutoff is None or m.end_ms >= cutoff)}
        if len(live) < len(stored):                    # compact: superseded, retracted, aged out
            members.clear()
            for m in live.values():
                members.add(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL))
        values = [live[k].value for k in sorted(live)]
        outputs, memory, wake_at = self._evaluate(key, values, as_of, previous, settled)
        emitted.write(memory)
        last_eval.write(as_of)
        if wake_at is not None and wake_at > as_of:
            wake.set(_ts(wake_at))
            due.write(wake_at)
        # From a timer, outputs carry its time; from an element, the element's.
        # A list, not a generator: every state change is made before the
        # caller moves on (on_gc clears the state right after).
        return [TimestampedValue(out, _ts(as_of)) if stamp else out for out in outputs]


def use_state(stateful: Optional[bool], pcoll: beam.PCollection, early: bool) -> bool:
    """Whether a keyed aggregation keeps per-key state and timers (True) or
    groups its bounded input once (False).

    ``stateful`` None decides by the input: state for an unbounded
    PCollection (a stream, TestStream) or when results are wanted ``early``,
    before the input ends; a GroupByKey for a bounded one. The two paths run
    the same pure functions and give the same output on bounded input: the
    watermark only moves once all of it is in, so every timer fires after
    the last element (tests run both on the same input).
    """
    if stateful is not None:
        return stateful
    return early or not pcoll.is_bounded


class _Cell:
    """A value state (or a timer) in memory, so the grouped path can run
    _RollingFn's own timer code on a whole group at once."""

    def __init__(self, value: Any = None) -> None:
        self._value = value

    def read(self) -> Any:
        return self._value

    def write(self, value: Any) -> None:
        self._value = value

    def clear(self) -> None:
        self._value = None

    def set(self, _when: Timestamp) -> None:
        pass                 # a wake-up: DUE holds its time and on_gc runs it


class _Bag:
    """A bag state in memory (see _Cell)."""

    def __init__(self) -> None:
        self._items: list = []

    def read(self) -> list:
        return self._items

    def add(self, value: Any) -> None:
        self._items.append(value)

    def clear(self) -> None:
        self._items = []


class _GroupedRollingFn(beam.DoFn):
    """The bounded-input path: a key's members all at once (after a
    GroupByKey, each with its event time). It runs _RollingFn.on_gc on them,
    as the last timer of a batch run does: the settled evaluation at the
    newest element + settle_ms, then each wake-up the evaluator asked for,
    in time order."""

    def __init__(self, fn: _RollingFn) -> None:
        self._fn = fn

    def process(self, element: tuple[str, Iterable[tuple[int, Member]]]) -> Iterable:
        key, grouped = element
        members, newest = _Bag(), None
        for ms, member in grouped:
            members.add(pickle.dumps(member, protocol=pickle.HIGHEST_PROTOCOL))
            newest = ms if newest is None else max(newest, ms)
        yield from self._fn.on_gc(key, members=members, emitted=_Cell(), last_eval=_Cell(),
                                  max_ts=_Cell(newest), due=_Cell(), wake=_Cell())


def with_event_ms(element: tuple[str, Any], ts=beam.DoFn.TimestampParam) -> tuple[str, tuple[int, Any]]:
    """(key, value) -> (key, (event time ms, value)): a GroupByKey keeps values,
    not their timestamps."""
    key, value = element
    return key, (ts.micros // 1000, value)


class RollingEvaluate(beam.PTransform):
    """Keep the latest version of each member per key; evaluate the key's
    members and emit what the evaluator returns.

    Input:  PCollection[tuple[str, Member]].
    Output: PCollection of the evaluator's outputs.

    Args:
      evaluate: see ``Evaluate``; must be a pure function of its arguments so
        that batch and streaming agree.
      settle_ms: evaluate this long (event time) after the newest element.
      every_ms: evaluate on an element this long after the last evaluation
        (0: only on timers, as in batch, where early results would be noise).
      retention_ms: ignore and drop members that ended this long before the
        evaluation time (0: keep all).
      gc_ms: clear the key this long after its newest element.

    ``stateful``: see ``use_state`` (None: grouped once for a bounded input
    evaluated only when it settles, keyed state otherwise).

    On the stateful path the input is reshuffled first. Without it Beam 2.77's FnApiRunner may
    fuse this stateful DoFn into the stage of an upstream stateful DoFn's
    timers, and the state it writes then lands under the upstream timer's
    key: in batch, about every second run evaluated an empty state and
    emitted nothing (found by the end-to-end test; 6 of 6 runs right with it).
    """

    def __init__(self, evaluate: Evaluate, settle_ms: int, gc_ms: int,
                 every_ms: int = 0, retention_ms: int = 0,
                 stateful: Optional[bool] = None) -> None:
        super().__init__()
        if min(settle_ms, gc_ms, every_ms, retention_ms) < 0 or gc_ms <= settle_ms:
            raise ValueError("need 0 <= settle_ms < gc_ms and every_ms, retention_ms >= 0")
        self._fn = _RollingFn(evaluate, settle_ms, every_ms, retention_ms, gc_ms)
        self._stateful = stateful

    def expand(self, keyed: beam.PCollection) -> beam.PCollection:
        if use_state(self._stateful, keyed, self._fn._every_ms > 0):
            return (keyed
                    | "OwnStage" >> beam.Reshuffle()
                    | "KeepLatestAndEvaluate" >> beam.ParDo(self._fn))
        return (keyed
                | "WithTime" >> beam.Map(with_event_ms)
                | "GroupByKey" >> beam.GroupByKey()
                | "Evaluate" >> beam.ParDo(_GroupedRollingFn(self._fn)))
