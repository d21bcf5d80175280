"""RollingEvaluate: per key, fold what arrives into an accumulator and evaluate it
early, on schedule and finally; the one keyed-aggregation primitive of batch
and streaming (metric and response cells, every detection stage).

An ``Evaluator`` is three pure functions: ``empty(key)``, ``fold(acc, item,
ts_ms)`` (commutative: items may arrive in any order) and ``evaluate(key, acc,
as_of_ms, settled)`` -> (outputs, wake-up time or None). On an unbounded input
the key keeps the items that arrived since its last evaluation in a bag (an
append, O(1) per element) and its accumulator as one pickled value, so an
evaluation costs the items that arrived plus one read and write of the
accumulator. On a bounded input the key's items are grouped once and
evaluated as the last timer of a batch run would.
"""

from __future__ import annotations

import dataclasses
import pickle
import typing
from typing import Any, Callable, Iterable, Optional, Protocol

import apache_beam as beam
from apache_beam import coders, pvalue, typehints
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from transforms import harness
from transforms.memstate import BagState, Timer, ValueState

# Rank of a retraction: above any version a member can reach.
RETRACTED = (1 << 40, 0)
_PICKLE = pickle.HIGHEST_PROTOCOL


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


class Evaluator(Protocol):
    """What RollingEvaluate does per key; pure functions of their arguments."""

    def empty(self, key: str) -> Any: ...

    def fold(self, acc: Any, item: Any, ts_ms: int) -> Any: ...

    # -> (outputs, wake-up time or None). ``settled``: the input has been
    # quiet for settle_ms (the SETTLE timer; in batch, the last evaluation).
    # An output may be a pvalue.TaggedOutput.
    def evaluate(self, key: str, acc: Any, as_of_ms: int,
                 settled: bool) -> tuple[list, Optional[int]]: ...

    # Optional: whether an item is news that should not wait for the
    # ``every_ms`` period (e.g. a new stall), only for ``urgent_ms``.
    # def urgent(self, item: Any) -> bool: ...


# evaluate(key, live member values sorted by member key, as_of_ms, previous, settled)
#   -> (outputs, next previous, wake-up time or None)
MembersEvaluate = Callable[[str, list, int, Any, bool], tuple[list, Any, Optional[int]]]


class LatestMembers:
    """An Evaluator over the latest version of each Member (metrics cells):
    it keeps them, drops those that ended ``retention_ms`` before the
    evaluation, and hands their values to ``evaluate`` with its memory."""

    def __init__(self, evaluate: MembersEvaluate, retention_ms: int = 0) -> None:
        self._evaluate, self._retention_ms = evaluate, retention_ms

    def empty(self, key: str) -> list:
        return [{}, None]               # [latest Member per member key, evaluator memory]

    def fold(self, acc: list, member: Member, ts_ms: int) -> list:
        members = acc[0]
        seen = members.get(member.member_key)
        if seen is None or member.rank > seen.rank:
            members[member.member_key] = member
        return acc

    def evaluate(self, key: str, acc: list, as_of_ms: int, settled: bool):
        members, memory = acc
        cutoff = as_of_ms - self._retention_ms if self._retention_ms > 0 else None
        for member_key, member in list(members.items()):
            if member.value is None or (cutoff is not None and member.end_ms < cutoff):
                del members[member_key]             # retracted or aged out
        values = [members[k].value for k in sorted(members)]
        if not values and memory is None:
            return [], None
        outputs, memory, wake = self._evaluate(key, values, as_of_ms, memory, settled)
        acc[1] = memory
        return outputs, wake


def read_pickled(cell, default: Any = None) -> Any:
    """A value kept pickled in a bytes cell (the state cache weighs bytes in
    O(1): statecache.py), or ``default``."""
    raw = cell.read()
    return pickle.loads(raw) if raw is not None else default


def write_pickled(cell, value: Any) -> None:
    cell.write(pickle.dumps(value, protocol=_PICKLE))


def _ts(ms: int) -> Timestamp:
    return Timestamp(micros=ms * 1000)


def _stamped(out: Any, ms: int) -> Any:
    if isinstance(out, pvalue.TaggedOutput):
        return pvalue.TaggedOutput(out.tag, TimestampedValue(out.value, _ts(ms)))
    return TimestampedValue(out, _ts(ms))


class _Clock(typing.NamedTuple):
    """A key's times, in one state cell (each cell costs a runner round trip
    on a portable runner)."""

    newest: Optional[int] = None      # the newest element's event time
    evaluated: Optional[int] = None   # when the key was last evaluated
    due: Optional[int] = None         # the wake-up the evaluator asked for
    news: bool = False                # an urgent element waits in PENDING


class _RollingFn(beam.DoFn):
    """State per key: PENDING (pickled (ts, item) since the last evaluation),
    ACC (the pickled accumulator) and CLOCK (a pickled ``_Clock``).

    Timers (event time): SETTLE at the newest element + ``settle_ms`` (the
    evaluation once input stops: in batch the only one); WAKE when the
    evaluator asks (e.g. to close an alert after a quiet period); GC at the
    newest element + ``gc_ms`` clears the key. Between them, with
    ``every_ms`` set, an element at least ``every_ms`` after the previous
    evaluation (0: every element) triggers one at once, so results do not
    wait for the watermark.
    """

    PENDING = userstate.BagStateSpec("pending", coders.BytesCoder())
    ACC = userstate.ReadModifyWriteStateSpec("acc", coders.BytesCoder())
    CLOCK = userstate.ReadModifyWriteStateSpec("clock", coders.BytesCoder())
    SETTLE = userstate.TimerSpec("settle", TimeDomain.WATERMARK)
    WAKE = userstate.TimerSpec("wake", TimeDomain.WATERMARK)
    GC = userstate.TimerSpec("gc", TimeDomain.WATERMARK)

    def __init__(self, evaluator: Evaluator, settle_ms: int, every_ms: Optional[int],
                 gc_ms: int, urgent_ms: Optional[int] = None) -> None:
        self._evaluator = evaluator
        self._settle_ms = settle_ms
        self._every_ms = every_ms
        self._gc_ms = gc_ms
        self._urgent = (getattr(evaluator, "urgent", None)
                        if urgent_ms is not None and every_ms is not None else None)
        self._urgent_ms = urgent_ms

    def setup(self) -> None:
        harness.install()         # Beam's SDK state costs removed, its end-of-job hang-up quiet

    def process(self, element: tuple[str, Any],
                ts=beam.DoFn.TimestampParam,
                pending=beam.DoFn.StateParam(PENDING),
                acc=beam.DoFn.StateParam(ACC),
                clock=beam.DoFn.StateParam(CLOCK),
                settle=beam.DoFn.TimerParam(SETTLE),
                wake=beam.DoFn.TimerParam(WAKE),
                gc=beam.DoFn.TimerParam(GC)) -> list:
        key, item = element
        now = ts.micros // 1000
        times: _Clock = read_pickled(clock)
        if times is None:
            # A key without a clock holds nothing (every write writes it):
            # saying so spares the runner round trips that reading would cost.
            pending.clear()
            acc.clear()
            times = _NO_CLOCK
        pending.add(pickle.dumps((now, item), protocol=_PICKLE))
        newest = max(times.newest or now, now)
        times = times._replace(newest=newest)
        settle.set(_ts(newest + self._settle_ms))
        gc.set(_ts(newest + self._gc_ms))
        outputs: list = []
        if self._every_ms is not None:
            previous = times.evaluated
            news = times.news or self._urgent is not None and self._urgent(item)
            if (previous is None or now >= previous + self._every_ms
                    or news and now >= previous + self._urgent_ms):
                outputs, times = self._run(key, now, pending, acc, times, wake,
                                           stamp=False, settled=False)
            elif news:
                times = times._replace(news=True)    # the next element after urgent_ms runs it
        write_pickled(clock, times)
        return outputs

    @userstate.on_timer(SETTLE)
    def on_settle(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                  pending=beam.DoFn.StateParam(PENDING),
                  acc=beam.DoFn.StateParam(ACC),
                  clock=beam.DoFn.StateParam(CLOCK),
                  wake=beam.DoFn.TimerParam(WAKE)) -> list:
        return self._run_and_keep(key, fired.micros // 1000, pending, acc, clock, wake, False)

    @userstate.on_timer(WAKE)
    def on_wake(self, key=beam.DoFn.KeyParam, fired=beam.DoFn.TimestampParam,
                pending=beam.DoFn.StateParam(PENDING),
                acc=beam.DoFn.StateParam(ACC),
                clock=beam.DoFn.StateParam(CLOCK),
                wake=beam.DoFn.TimerParam(WAKE)) -> list:
        return self._run_and_keep(key, fired.micros // 1000, pending, acc, clock, wake, True)

    def _run_and_keep(self, key: str, as_of: int, pending, acc, clock, wake,
                      woken: bool) -> list:
        held: _Clock = read_pickled(clock, _NO_CLOCK)
        times = held._replace(due=None) if woken else held
        outputs, after = self._run(key, as_of, pending, acc, times, wake, settled=not woken)
        if after != held:
            write_pickled(clock, after)
        return outputs

    @userstate.on_timer(GC)
    def on_gc(self, key=beam.DoFn.KeyParam,
              pending=beam.DoFn.StateParam(PENDING),
              acc=beam.DoFn.StateParam(ACC),
              clock=beam.DoFn.StateParam(CLOCK),
              wake=beam.DoFn.TimerParam(WAKE)) -> list:
        # In batch the runner fires the timers set with the input in any
        # order, and a WAKE set later (for an earlier time) after them: run
        # whatever is still due, in time order, before letting go.
        times: _Clock = read_pickled(clock, _NO_CLOCK)
        outputs: list = []
        if times.newest is not None and (times.evaluated is None or
                                         times.evaluated < times.newest + self._settle_ms):
            outputs, times = self._run(key, times.newest + self._settle_ms, pending, acc,
                                       times, wake)
        while times.due is not None:
            done, times = self._run(key, times.due, pending, acc, times._replace(due=None),
                                    wake, settled=False)
            outputs += done
        for state in (pending, acc, clock):
            state.clear()
        return outputs

    def _run(self, key: str, as_of: int, pending, acc, times: _Clock, wake,
             stamp: bool = True, settled: bool = True) -> tuple[list, _Clock]:
        """Fold what arrived, evaluate as of ``as_of``: (outputs, the clock after)."""
        arrived = pending.read()
        stored = acc.read()
        if stored is None and not arrived:
            return [], times                           # nothing here (a timer after GC)
        value = pickle.loads(stored) if stored is not None else self._evaluator.empty(key)
        if arrived:
            for ts_ms, item in sorted((pickle.loads(b) for b in arrived), key=lambda p: p[0]):
                value = self._evaluator.fold(value, item, ts_ms)
            pending.clear()
        outputs, wake_at = self._evaluator.evaluate(key, value, as_of, settled)
        acc.write(pickle.dumps(value, protocol=_PICKLE))
        times = times._replace(evaluated=as_of, news=False)
        if wake_at is not None and wake_at > as_of:
            wake.set(_ts(wake_at))
            times = times._replace(due=wake_at)
        # From a timer, outputs carry its time; from an element, the element's.
        return [_stamped(out, as_of) if stamp else out for out in outputs], times


_NO_CLOCK = _Clock()


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


def own_stage() -> beam.PTransform:
    """A Reshuffle to put before a stateful DoFn, so it runs in a stage of its own.

    Workaround (Beam 2.62's FnApiRunner, batch): a stateful DoFn may be fused
    into the stage of an upstream stateful DoFn's timers, and the state it
    writes then lands under the upstream timer's key.
    """
    return beam.Reshuffle()


class _GroupedRollingFn(beam.DoFn):
    """The bounded-input path: a key's items all at once (after a GroupByKey,
    each with its event time). It runs _RollingFn.on_gc on them, as the last
    timer of a batch run does: the settled evaluation at the newest element +
    settle_ms, then each wake-up the evaluator asked for, in time order."""

    def __init__(self, fn: _RollingFn) -> None:
        self._fn = fn

    def process(self, element: tuple[str, Iterable[tuple[int, Any]]]) -> Iterable:
        key, grouped = element
        pending, newest = BagState(), None
        for ms, item in grouped:
            pending.add(pickle.dumps((ms, item), protocol=_PICKLE))
            newest = ms if newest is None else max(newest, ms)
        clock = ValueState()
        write_pickled(clock, _Clock(newest=newest))
        yield from self._fn.on_gc(key, pending=pending, acc=ValueState(), clock=clock, wake=Timer())


def with_event_ms(element: tuple[str, Any], ts=beam.DoFn.TimestampParam) -> tuple[str, tuple[int, Any]]:
    """(key, value) -> (key, (event time ms, value)): a GroupByKey keeps values,
    not their timestamps."""
    key, value = element
    return key, (ts.micros // 1000, value)


class RollingEvaluate(beam.PTransform):
    """Fold each key's input into an accumulator; evaluate it and emit what
    the evaluator returns.

    Input:  PCollection[tuple[str, T]] (or several, flattened first).
    Output: PCollection of the evaluator's outputs; with ``tags``, a
            DoOutputsTuple whose extra outputs are the evaluator's
            ``pvalue.TaggedOutput``s.

    Args:
      evaluator: an ``Evaluator`` (or a MembersEvaluate function, wrapped in
        ``LatestMembers``); pure, so that batch and streaming agree.
      settle_ms: evaluate this long (event time) after the newest element.
      every_ms: evaluate on an element this long after the last evaluation
        (0: on every element; None: only on timers, as in batch).
      urgent_ms: an element the evaluator calls urgent triggers an
        evaluation this long after the last one, or if it came sooner, the
        key's first element after that does (None: no such elements).
      gc_ms: clear the key this long after its newest element.
      tags: the evaluator's extra output tags.

    ``stateful``: see ``use_state`` (None: grouped once for a bounded input
    evaluated only when it settles, keyed state otherwise).

    On the stateful path a bounded input (tests) gets a stage of its own
    first (``own_stage``); streaming runners key the input by their own exchange.
    """

    def __init__(self, evaluator, settle_ms: int, gc_ms: int,
                 every_ms: Optional[int] = None, retention_ms: int = 0,
                 stateful: Optional[bool] = None, tags: tuple[str, ...] = (),
                 urgent_ms: Optional[int] = None) -> None:
        super().__init__()
        if min(settle_ms, gc_ms, retention_ms) < 0 or gc_ms <= settle_ms or \
                (every_ms is not None and every_ms < 0):
            raise ValueError("need 0 <= settle_ms < gc_ms and every_ms, retention_ms >= 0")
        if callable(evaluator) and not hasattr(evaluator, "evaluate"):
            evaluator = LatestMembers(evaluator, retention_ms)
        self._fn = _RollingFn(evaluator, settle_ms, every_ms, gc_ms, urgent_ms)
        self._stateful = stateful
        self._tags = tags

    def expand(self, keyed: beam.PCollection):
        if isinstance(keyed, (tuple, list)):
            keyed = keyed | "Together" >> beam.Flatten()
        if use_state(self._stateful, keyed, self._fn._every_ms is not None):
            if keyed.is_bounded:
                keyed = keyed | "OwnStage" >> own_stage()
            if keyed.element_type in (None, typehints.Any):
                keyed.element_type = typehints.Tuple[str, typehints.Any]   # str keys: a deterministic coder
            fn = beam.ParDo(self._fn)
            return keyed | "KeepAndEvaluate" >> (fn.with_outputs(*self._tags, main="main")
                                                  if self._tags else fn)
        fn = beam.ParDo(_GroupedRollingFn(self._fn))
        return (keyed
                | "WithTime" >> beam.Map(with_event_ms).with_output_types(tuple[str, Any])
                | "GroupByKey" >> beam.GroupByKey()
                | "Evaluate" >> (fn.with_outputs(*self._tags, main="main")
                                 if self._tags else fn))
