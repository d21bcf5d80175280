"""The DirectRunner patch (pipeline/directrunner.py) keeps Beam's behaviour:
the same results, state and timers still found, an unpicklable DoFn still refused."""

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_pipeline, test_stream, util
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam import coders

from pipeline import directrunner


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
