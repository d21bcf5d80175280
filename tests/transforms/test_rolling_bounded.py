"""RollingEvaluate keeps a bounded state in a stream: members older than the
window leave it, superseded versions are compacted away, GC clears the key."""

from apache_beam.utils.timestamp import Timestamp

from tests.transforms.test_view_state_bounded import Bag, Cell, Timer
from transforms.rolling import Member, _RollingFn

HOUR = 3_600_000


def _count(key, values, as_of, previous, settled):
    return [(as_of, len(values))], None, None


def test_rolling__state_is_bounded_by_the_window_not_by_the_stream():
    fn = _RollingFn(_count, settle_ms=1_000, every_ms=10_000, retention_ms=HOUR, gc_ms=2 * HOUR)
    s = {"members": Bag(), "emitted": Cell(), "last_eval": Cell(), "max_ts": Cell(),
         "due": Cell(), "settle": Timer(), "wake": Timer(), "gc": Timer()}
    sizes, seen = [], []
    for i in range(4 * 360):                                   # 4 hours, a view every 10 s
        now = i * 10_000
        for version in (1, 2):                                 # each sent twice: a snapshot, then final
            member = Member(f"view{i}", (version, 0), now, f"v{i}.{version}")
            out = list(fn.process(("", member), ts=Timestamp(micros=now * 1000), **s))
            seen += [o for o in out]
        sizes.append(len(s["members"].read()))
    # evaluations saw only the last hour of views, never more
    assert max(n for _, n in seen) <= 361
    # the stored bag stays within the window (plus what arrived since the last compaction)
    assert max(sizes) <= 2 * 361 + 2 and sizes[-1] <= 2 * 361 + 2
    # and once the stream stops, GC clears every cell
    list(fn.on_gc("", members=s["members"], emitted=s["emitted"], last_eval=s["last_eval"],
                  max_ts=s["max_ts"], due=s["due"], wake=s["wake"]))
    assert all(s[n].read() in (None, []) for n in ("members", "emitted", "last_eval", "max_ts", "due"))
