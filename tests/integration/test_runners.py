"""One pipeline, every runner: the same generated workload in batch on the
DirectRunner, Flink [local], Prism and a standalone Flink cluster gives the
same views, alerts and counts. Each run is a `stallwatch run --preset=...` in
its own process, as a user runs it. (Prism 2.62 used to fail this workload
when batch ran on per-key state and timers: its worker stream reset after
about a minute, docs/runners.md. The grouped batch path fixed it.)"""

import pytest

from pipeline import cli
from tests import runs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def workload(tmp_path_factory):
    out = tmp_path_factory.mktemp("workload")
    assert cli.main(["generate", f"--out={out}", "--scenario=small", "--seed=11"]) == 0
    return str(out)


@pytest.fixture(scope="module")
def direct(workload, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("direct"))
    summary, wall = runs.stallwatch(f"--source={workload}", f"--output={output}", "--preset=direct")
    runs.record("batch_direct", {"wall_s": round(wall, 1), "records": summary["input_records"]})
    assert summary["views"] > 0 and summary["alerts"]["content"] > 0
    return output


@pytest.mark.parametrize("preset", ["flink-local", "prism"])
def test_batch__same_views_alerts_and_counts_as_the_direct_runner(preset, workload, direct,
                                                                  tmp_path):
    output = str(tmp_path / preset)
    summary, wall = runs.stallwatch(f"--source={workload}", f"--output={output}",
                                    f"--preset={preset}")
    assert summary["runner"] == {"flink-local": "FlinkRunner", "prism": "PrismRunner"}[preset]
    runs.assert_same_results(direct, output)
    runs.record(f"batch_{preset}", {"wall_s": round(wall, 1), "records": summary["input_records"]})


def test_batch_on_a_standalone_flink_cluster__same_as_the_direct_runner(
        workload, direct, flink_cluster, tmp_path):
    output = str(tmp_path / "cluster")
    summary, wall = runs.stallwatch(f"--source={workload}", f"--output={output}",
                                    "--preset=flink-cluster",
                                    f"--flink_master={flink_cluster.master}")
    runs.assert_same_results(direct, output)
    finished = [j for j in flink_cluster.jobs() if j["state"] == "FINISHED"]
    assert finished, flink_cluster.jobs()          # it ran on the cluster, not in-process
    runs.record("batch_flink_cluster", {"wall_s": round(wall, 1),
                                        "records": summary["input_records"]})


def _worker_facts(_, launcher_pid):
    import os
    import threading

    from transforms import workerlogs
    return os.getpid() != launcher_pid, bool(getattr(threading.excepthook, workerlogs._MARK, False))


def test_process_workers__run_with_the_harness_changes_before_any_stallwatch_dofn(tmp_path):
    """The Flink streaming presets' process workers come from stallwatch's own
    pool: a worker that runs only a plain Map (no stateful DoFn of ours, whose
    setup would install them) already has the hang-up filter. With Beam's pool
    it had not, and a Flink cluster drain printed the runner's hang-up as a
    traceback (CI, 2026-12-03). Prism runs the workers here: the pool is the
    same for every portable runner."""
    import os

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    from pipeline import workerpool
    from runners import presets

    options = PipelineOptions([*presets.PRESETS["prism"], "--environment_type=LOOPBACK",
                               f"--experiments={workerpool.EXPERIMENT}"])
    assert workerpool.wanted(options)
    stop = workerpool.start(options)
    try:
        with beam.Pipeline(options=options) as p:
            facts = (p | beam.Create(range(20)) | beam.Map(_worker_facts, os.getpid())
                     | beam.Distinct())
            assert_that(facts, equal_to([(True, True)]))
    finally:
        stop()
