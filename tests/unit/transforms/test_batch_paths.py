"""The grouped (bounded-input) paths give exactly what the stateful paths give.

SessionizeViews, AggregateMetrics and DetectStallClusters pick a GroupByKey
for a bounded input and per-key state with event-time timers otherwise
(``rolling.use_state``). Here one messy generated workload (duplicates,
reordered and malformed messages, content faults, a CDN outage, bad-wifi
viewers) goes through both, in one pipeline, and every view, metric row and
alert version must be identical.
"""

import apache_beam as beam

from pipeline.generator import scenario
from pipeline.generator.workload import simulate_messages
from tests.builders import fn_api_pipeline
from transforms import AggregateMetrics, DetectStallClusters, ParseBeacons, SessionizeViews
from transforms.model import Cause, RawRecord

_OUT: dict[str, list] = {}


def _collect(name):
    _OUT[name] = []
    return beam.Map(lambda item, name=name: _OUT[name].append(item))


def test_grouped_and_stateful_paths_agree_on_a_messy_workload():
    messages, truth = simulate_messages(scenario.build("small", viewers=150), seed=11)
    records = [RawRecord(m.line(), f"m:{i}") for i, m in enumerate(messages)]
    with fn_api_pipeline() as p:
        beacons = (p | beam.Create(records) | ParseBeacons()).beacons
        for label, stateful in (("state", True), ("grouped", False)):
            sessions = beacons | f"Sessionize {label}" >> SessionizeViews(stateful=stateful)
            metrics = sessions.views | f"Metrics {label}" >> AggregateMetrics(stateful=stateful)
            alerts = sessions.progress | f"Detect {label}" >> DetectStallClusters(stateful=stateful)
            for name, pcoll in (("views", sessions.views), ("late", sessions.late),
                                ("metrics", metrics), ("alerts", alerts)):
                _ = pcoll | f"Collect {name} {label}" >> _collect(f"{name}/{label}")

    for name in ("views", "late", "metrics", "alerts"):
        state = sorted(map(repr, _OUT[f"{name}/state"]))
        grouped = sorted(map(repr, _OUT[f"{name}/grouped"]))
        assert state == grouped, name
    views = _OUT["views/grouped"]
    assert len(views) >= truth["views"] and truth["duplicate_events"] > 0
    assert not _OUT["late/grouped"]
    assert {v.version for v in views} == {1}
    causes = {a.cause for a in _OUT["alerts/grouped"]}
    assert Cause.CONTENT in causes and Cause.VIEWER in causes, causes
    assert len(_OUT["metrics/grouped"]) > 100
