"""StreamFeed: bundles per tick, watermark behind the reader's, positions
committed only after the runner took a bundle, bounded and drained stops."""

from apache_beam.testing import test_stream

from pipeline.io.streams.feed import StreamFeed
from transforms.model import RawRecord


class Clock:
    def __init__(self):
        self.now = 1_000.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


class ScriptedReader:
    """A reader that hands out prepared rounds (a list of records each);
    exercises the feed's contract, the readers' own tests use the emulators."""

    def __init__(self, clock, rounds):
        self.clock, self.rounds, self.stats = clock, list(rounds), {}
        self.handed, self.committed, self._last = 0, [], []

    def poll(self):
        self.clock.now += 0.05
        self._last = self.rounds.pop(0) if self.rounds else []
        self.handed += len(self._last)
        return self._last

    @property
    def caught_up(self):
        return not self.rounds and not self._last

    def watermark_ms(self):
        return int(self.clock.now * 1000)

    def positions(self):
        return self.handed

    def commit(self, positions):
        self.committed.append(positions)

    def close(self):
        pass


def _records(n, at_s):
    return [RawRecord(b"{}", f"test:{at_s}:{i}", int(at_s * 1000)) for i in range(n)]


def test_feed__commits_a_bundle_only_after_it_was_taken_and_stops_at_latest():
    clock = Clock()
    reader = ScriptedReader(clock, [_records(3, 1000), [], _records(2, 1001)])
    feed = StreamFeed(reader, tick_ms=1_000, max_lag_ms=300_000, drain_ms=600_000,
                      stop_at_latest=True, idle_ms=2_000, clock=clock, sleep=clock.sleep)
    events = feed.events()
    first = next(events)
    assert isinstance(first, test_stream.ElementEvent) and len(first.timestamped_values) == 5
    assert reader.committed == []          # handed to the runner, not yet taken
    watermark = next(events)
    assert isinstance(watermark, test_stream.WatermarkEvent)
    assert watermark.new_watermark.micros // 1000 <= int(clock.now * 1000) - 300_000
    rest = list(events)
    assert reader.committed[0] == 5
    assert not any(isinstance(e, test_stream.ElementEvent) for e in rest)
    marks = [e.new_watermark.micros // 1000 for e in rest]
    assert marks == sorted(marks) and marks[-1] >= 1_001_000 + 600_000   # drained
    assert feed.records == 5


def test_feed__a_stop_request_drains_and_ends():
    clock = Clock()
    reader = ScriptedReader(clock, [_records(1, 1000)] + [[]] * 10_000)
    feed = StreamFeed(reader, tick_ms=500, max_lag_ms=0, drain_ms=60_000,
                      clock=clock, sleep=clock.sleep)
    events = feed.events()
    assert isinstance(next(events), test_stream.ElementEvent)
    feed.stop_requested.set()
    rest = list(events)
    assert reader.committed and rest[-1].new_watermark.micros // 1000 >= 1_000_000 + 60_000


def test_feed__a_big_tick_goes_to_the_runner_in_events_under_grpcs_4_mib_limit():
    from pipeline.io.replay import CODER, MAX_EVENT_BYTES
    clock = Clock()
    big = [RawRecord(b"x" * 2_000, f"test:{i}", 1_000_000) for i in range(5_000)]   # ~10 MB
    reader = ScriptedReader(clock, [big])
    feed = StreamFeed(reader, tick_ms=5_000, max_lag_ms=0, drain_ms=1_000,
                      stop_at_latest=True, idle_ms=100, clock=clock, sleep=clock.sleep)
    protos = list(feed.read_multiple(None))
    elements = [p.element_event for p in protos if p.HasField("element_event")]
    assert len(elements) >= 4
    assert all(p.ByteSize() < 4 * 1024 * 1024 for p in protos)
    assert max(p.ByteSize() for p in protos) <= MAX_EVENT_BYTES + 64 * 1024
    got = [CODER.decode(e.encoded_element) for ev in elements for e in ev.elements]
    assert [r.source for r in got] == [r.source for r in big]          # all, in order
    assert feed.finished


def test_feed__is_not_finished_while_the_runner_has_not_taken_everything():
    clock = Clock()
    reader = ScriptedReader(clock, [_records(2, 1000)])
    feed = StreamFeed(reader, tick_ms=500, max_lag_ms=0, drain_ms=1_000,
                      stop_at_latest=True, idle_ms=100, clock=clock, sleep=clock.sleep)
    protos = feed.read_multiple(None)
    next(protos)                      # the runner's reader died after one event
    assert not feed.finished
