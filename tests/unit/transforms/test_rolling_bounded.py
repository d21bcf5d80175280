"""RollingEvaluate keeps a bounded state in a stream: members older than the
window leave it, superseded versions are compacted away, GC clears the key."""

import pickle

from apache_beam.utils.timestamp import Timestamp

from transforms.memstate import BagState, Timer, ValueState
from transforms.rolling import LatestMembers, Member, _RollingFn

HOUR = 3_600_000


def _count(key, values, as_of, previous, settled):
    return [(as_of, len(values))], None, None


def test_rolling__state_is_bounded_by_the_window_not_by_the_stream():
    fn = _RollingFn(LatestMembers(_count, retention_ms=HOUR), settle_ms=1_000, every_ms=10_000,
                    gc_ms=2 * HOUR)
    s = {"pending": BagState(), "acc": ValueState(), "clock": ValueState(),
         "settle": Timer(), "wake": Timer(), "gc": Timer()}
    seen, kept, pending = [], [], []
    for i in range(4 * 360):                                   # 4 hours, a view every 10 s
        now = i * 10_000
        for version in (1, 2):                                 # each sent twice: a snapshot, then final
            member = Member(f"view{i}", (version, 0), now, f"v{i}.{version}")
            seen += list(fn.process(("", member), ts=Timestamp(micros=now * 1000), **s))
        kept.append(len(pickle.loads(s["acc"].read())[0]))
        pending.append(len(s["pending"].read()))
    evaluated = [n for _, n in seen]
    # one evaluation per every_ms (10 s): 1,440 in 4 hours, not one per element
    assert len(evaluated) == 4 * 360
    # once the first hour is full, each saw exactly the last hour of views (361)
    assert max(evaluated) == 361 and set(evaluated[400:]) == {361}
    # the accumulator holds the window, and the bag only what arrived since
    # the last evaluation (the final version of the view just evaluated)
    assert max(kept) == 361 and min(kept[400:]) == 361
    assert set(pending) == {1}
    # once the stream stops, GC clears every cell
    list(fn.on_gc("", pending=s["pending"], acc=s["acc"], clock=s["clock"], wake=s["wake"]))
    assert all(s[n].read() in (None, []) for n in ("pending", "acc", "clock"))


class _Stalls:
    """Counts what it holds; a "stall" is urgent."""

    def empty(self, key):
        return []

    def fold(self, acc, item, ts_ms):
        return acc + [item]

    def evaluate(self, key, acc, as_of_ms, settled):
        return [(as_of_ms, list(acc))], None

    def urgent(self, item):
        return item == "stall"


def test_rolling__an_urgent_element_too_soon_after_an_evaluation_runs_with_the_next_element():
    fn = _RollingFn(_Stalls(), settle_ms=1_000, every_ms=10_000, gc_ms=HOUR, urgent_ms=1_000)
    s = {"pending": BagState(), "acc": ValueState(), "clock": ValueState(),
         "settle": Timer(), "wake": Timer(), "gc": Timer()}

    def feed(at_ms, item):
        return list(fn.process(("", item), ts=Timestamp(micros=at_ms * 1000), **s))

    assert feed(0, "heartbeat") == [(0, ["heartbeat"])]          # the key's first element
    assert feed(400, "stall") == []                               # 0.4 s after it: too soon
    assert feed(700, "heartbeat") == []                           # still within urgent_ms
    # the first element after urgent_ms evaluates, though it is not urgent itself:
    # the stall does not wait for every_ms (10 s)
    assert feed(1_200, "heartbeat") == [(1_200, ["heartbeat", "stall", "heartbeat", "heartbeat"])]
    assert feed(2_500, "heartbeat") == []                         # nothing urgent waits now
    assert feed(3_600, "stall") == [(3_600, ["heartbeat", "stall", "heartbeat", "heartbeat",
                                            "heartbeat", "stall"])]
