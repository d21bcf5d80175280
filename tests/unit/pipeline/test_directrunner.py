"""The DirectRunner patch (pipeline/io/directrunner.py) keeps Beam's behaviour:
the same results, state and timers still found, an unpicklable DoFn still refused."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline, test_stream, util
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam import coders

from pipeline.io import directrunner


class _CountFn(beam.DoFn):
    COUNT = userstate.ReadModifyWriteStateSpec("count", coders.VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.WATERMARK)

    def process(self, element, count=beam.DoFn.StateParam(COUNT),
                flush=beam.DoFn.TimerParam(FLUSH)):
        count.write((count.read() or 0) + 1)
        flush.set(100)
        return ()

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, count=beam.DoFn.StateParam(COUNT)):
        yield key, count.read()


def test_directrunner__installed_once_and_state_and_timers_still_work():
    directrunner.install()
    assert directrunner.install() is False                 # idempotent
    assert userstate.is_stateful_dofn(_CountFn()) and not userstate.is_stateful_dofn(beam.DoFn())
    events = (test_stream.TestStream()
              .add_elements([("a", 1), ("b", 1), ("a", 1)])
              .advance_watermark_to(200).advance_watermark_to_infinity())
    with test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"])) as p:
        counts = p | events | beam.ParDo(_CountFn())
        util.assert_that(counts, util.equal_to([("a", 2), ("b", 1)]))


def test_directrunner__an_unpicklable_dofn_is_still_refused():
    directrunner.install()

    class _HoldsAGenerator(beam.DoFn):
        def __init__(self):
            self._items = (i for i in range(3))

        def process(self, element):
            yield element

    with pytest.raises(TypeError, match="pickle"):
        with test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"])) as p:
            _ = p | test_stream.TestStream().add_elements([1]) | beam.ParDo(_HoldsAGenerator())


def test_directrunner__counters_count_every_bundle_of_a_stream():
    from apache_beam.metrics import Metrics
    from apache_beam.metrics.metric import MetricsFilter
    directrunner.install()

    def count(element):
        Metrics.counter("test_directrunner", "elements").inc()
        return element

    events = test_stream.TestStream()
    for tick in range(3):                        # three bundles of three
        events = events.add_elements([1, 2, 3]).advance_watermark_to(10 * (tick + 1))
    pipeline = beam.Pipeline(options=PipelineOptions(["--streaming"]))
    _ = pipeline | events.advance_watermark_to_infinity() | beam.Map(count)
    result = pipeline.run()
    result.wait_until_finish()
    counters = result.metrics().query(MetricsFilter().with_namespace("test_directrunner"))
    assert [c.committed for c in counters["counters"]] == [9]


class _LoopFn(beam.DoFn):
    """Per key: a timer that fires every 10 s until 50 s; key "moved" sets its
    timer to 5 s and then moves it to 35 s; key "cleared" sets one and clears it."""
    TICK = userstate.TimerSpec("tick", TimeDomain.WATERMARK)

    def process(self, element, key=beam.DoFn.KeyParam, tick=beam.DoFn.TimerParam(TICK)):
        _, at = element
        if key == "cleared" and at is None:
            tick.clear()
        else:
            tick.set(at)
        return ()

    @userstate.on_timer(TICK)
    def on_tick(self, key=beam.DoFn.KeyParam, now=beam.DoFn.TimestampParam,
                tick=beam.DoFn.TimerParam(TICK)):
        yield key, int(now.micros // 1_000_000)
        if key == "loop" and now < 50:
            tick.set(now + 10)


def test_directrunner__due_timers_are_found_without_a_scan_exactly_as_with_one():
    directrunner.install()
    events = (test_stream.TestStream()
              .add_elements([("loop", 10), ("moved", 5), ("cleared", 20)])
              .advance_watermark_to(1)
              .add_elements([("moved", 35), ("cleared", None)])
              .advance_watermark_to(25)
              .advance_watermark_to(100)
              .advance_watermark_to_infinity())
    with test_pipeline.TestPipeline(options=PipelineOptions(["--streaming"])) as p:
        fired = p | events | beam.ParDo(_LoopFn())
        util.assert_that(fired, util.equal_to(
            [("loop", t) for t in (10, 20, 30, 40, 50)] + [("moved", 35)]))


def test_directrunner__timer_index_names_due_keys_and_forgets_changed_ones():
    from apache_beam.transforms.trigger import InMemoryUnmergedState
    from apache_beam.utils.timestamp import Timestamp

    def state(*times, realtime=False):
        s = InMemoryUnmergedState()
        for n, at in enumerate(times):
            s.set_timer("w", f"t{n}", TimeDomain.WATERMARK, Timestamp(at))
        if realtime:
            s.set_timer("w", "r", TimeDomain.REAL_TIME, Timestamp(1))
        return s

    states = {b"a": state(10, 30), b"b": state(20), b"c": state(realtime=True)}
    index = directrunner._TimerIndex(states)
    assert index.due(states, Timestamp(5)) == {b"c"}          # processing-time: always asked
    assert index.due(states, Timestamp(10)) == {b"a", b"c"}
    assert index.due(states, Timestamp(10)) == {b"a", b"c"}   # still due until its commit
    states[b"a"] = state(30)                                  # a's bundle fired 10, committed
    index.touched([b"a"])
    assert index.due(states, Timestamp(25)) == {b"b", b"c"}
    del states[b"b"]                                          # b's state is gone
    states[b"c"] = state()
    index.touched([b"b", b"c"])
    assert index.due(states, Timestamp(25)) == set()
    assert index.due(states, Timestamp(30)) == {b"a"}
