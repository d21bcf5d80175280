"""State per view_id is released on schedule: it does not grow with finished views.

The DoFn is driven directly with in-memory state cells and event-time timers,
so the test can look inside the state between watermark steps.
"""

import pickle

import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp

from tests.builders import T0_MS, watched
from transforms.memstate import BagState, Timer, ValueState
from transforms.sessionize import _Meta, _ViewStateFn

INACTIVITY_MS = 3_600_000


class Harness:
    def __init__(self, progress_ms=0):
        self.fn = _ViewStateFn(60_000, INACTIVITY_MS, 300_000, progress_ms)
        self.keys: dict[str, dict] = {}
        self.out = []

    def state(self, key):
        return self.keys.setdefault(key, {n: BagState() if n == "beacons" else
                                          Timer() if n in ("complete", "expire", "forget") else ValueState()
                                          for n in ("beacons", "meta", "complete", "expire",
                                                    "forget")})

    def feed(self, beacon):
        s = self.state(beacon.view_id)
        self.out += list(self.fn.process(
            (beacon.view_id, beacon), beacons=s["beacons"], meta=s["meta"],
            complete=s["complete"], expire=s["expire"]))

    def advance(self, watermark_ms):
        while True:
            due = [(t.value, name, key) for key, s in self.keys.items()
                   for name, t in ((n, s[n]) for n in ("complete", "expire", "forget"))
                   if t.value is not None and t.value <= watermark_ms]
            if not due:
                return
            at, name, key = min(due)
            s = self.keys[key]
            s[name].clear()
            fired = Timestamp(micros=at * 1000)
            if name == "complete":
                self.out += list(self.fn.on_complete(key, s["beacons"], s["meta"], fired))
            elif name == "expire":
                self.out += list(self.fn.on_expire(key, s["beacons"], s["meta"], s["forget"],
                                                   fired))
            else:
                self.fn.on_forget(s["meta"])

    def live_keys(self):
        return sum(1 for s in self.keys.values() if any(c.value is not None for c in s.values()))


@pytest.mark.parametrize("progress_ms", [0, 30_000], ids=["batch", "with-snapshots"])
def test_view_state__released_on_schedule_not_kept_per_finished_view(progress_ms):
    h = Harness(progress_ms)
    starts_s = [i * 20 for i in range(600)]                   # a view every 20 s for 200 min
    for i, start in enumerate(starts_s):
        for b in watched(f"v{i}", f"u{i}", start_s=start, to_s=60):
            h.feed(b)
    last_ms = [T0_MS + (start + 62) * 1000 for start in starts_s]   # each view's last beacon
    tombstones = 0
    for minutes in (60, 150, 240, 330):
        watermark = T0_MS + minutes * 60_000
        h.advance(watermark)
        # only views whose last beacon is < 2 x inactivity old still hold anything
        assert h.live_keys() == sum(1 for t in last_ms if t + 2 * INACTIVITY_MS > watermark)
        # and what they hold after expiry is a single tombstone, not their beacons
        metas = [(s, pickle.loads(s["meta"].value)) for s in h.keys.values()
                 if s["meta"].value is not None]
        expired = [(s, meta) for s, meta in metas if meta.closed is not None]
        assert len(expired) == sum(1 for t in last_ms
                                   if t + INACTIVITY_MS <= watermark < t + 2 * INACTIVITY_MS)
        assert all(not s["beacons"].read() and meta == _Meta(closed=meta.closed)
                   for s, meta in expired)
        tombstones += len(expired)
    assert tombstones > 0               # the checks above saw expired views, not an empty list
    h.advance(T0_MS + 10 * 3_600_000)
    assert h.live_keys() == 0
    views = [o for o in h.out if not isinstance(o, TaggedOutput)]
    assert len(views) == 600 and {tv.value.version for tv in views} == {1}
    members = [o.value.value if isinstance(o.value, TimestampedValue) else o.value
               for o in h.out if isinstance(o, TaggedOutput)]
    snapshots = [m for m in members if m.rank[1] > 0]
    assert bool(snapshots) == bool(progress_ms)
