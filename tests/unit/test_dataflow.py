"""Dataflow, offline: the pipeline translates for the Dataflow service
(``--dry_run=True --no_auth``: nothing is submitted, no credentials), and the
Flex Template's metadata.json and Dockerfile agree with the code."""

import argparse
import json
import os
import re

from pipeline import launch
from pipeline.options import QoeOptions
from tests import ROOT

METADATA = os.path.join(ROOT, "runners", "dataflow", "metadata.json")
DOCKERFILE = os.path.join(ROOT, "runners", "dataflow", "Dockerfile")
# Flags left out of the template, and why.
NOT_IN_TEMPLATE = {
    "stream_tick_s": "DirectRunner stream feed only",
    "replay_speed": "file replay on the DirectRunner only",
    "replay_tick_s": "file replay on the DirectRunner only",
    "checkpoint": "a local file of reader positions; Dataflow keeps positions in its own state",
    "notify_secret": "a template parameter is shown in the job's parameters: sign with "
                     "STALLWATCH_NOTIFY_SECRET in the launcher's environment instead",
}
DATAFLOW = ["--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--project=qoe-prod",
            "--region=europe-west1", "--temp_location=gs://qoe-prod-tmp/tmp",
            "--sdk_location=container"]


def _dry_run(*flags):
    return launch.run([*DATAFLOW, *flags])


def test_dry_run__streaming_from_pubsub_is_a_streaming_job_with_the_native_read():
    job = _dry_run("--streaming", "--source=pubsub://projects/qoe-prod/subscriptions/beacons",
                   "--output=gs://qoe-prod-out/run",
                   "--alerts=pubsub://projects/qoe-prod/topics/alerts",
                   "--dead_letter=pubsub://projects/qoe-prod/topics/dead-letters",
                   "--views_table=qoe-prod:qoe.views", "--metrics_table=qoe-prod:qoe.metrics")
    assert job["dry_run"] and job["job_type"] == "JOB_TYPE_STREAMING"
    urns = set(job["transform_urns"])
    assert "beam:transform:pubsub_read:v1" in urns             # Dataflow's own Pub/Sub read
    assert "beam:transform:teststream:v1" not in urns          # no DirectRunner feed
    assert job["splittable_dofns"] == []                       # not our Kinesis read
    assert "beam:transform:write_to_big_query:v0" in urns      # views + metrics tables
    assert "beam:transform:group_by_key:v1" in urns            # keyed state per view / video
    # Views are sessionized and files cut by keyed state and timers in the
    # global window: no session or fixed windows, no trigger beyond the default.
    assert job["window_fns"] == ["beam:window_fn:global_windows:v1"]
    assert set(job["triggers"]) <= {"default", "always"}     # "always": Reshuffle's own


def test_dry_run__batch_from_cloud_storage_is_a_batch_job_without_stream_reads():
    job = _dry_run("--source=gs://qoe-prod-beacons/2026-11-28/*.ndjson.gz",
                   "--output=gs://qoe-prod-out/batch", "--views_table=qoe-prod:qoe.views")
    assert job["job_type"] == "JOB_TYPE_BATCH"
    urns = set(job["transform_urns"])
    assert not {u for u in urns if "pubsub" in u or "teststream" in u}
    assert "beam:transform:write_to_big_query:v0" in urns


def test_dry_run__kinesis_source_reads_through_the_splittable_dofn():
    job = _dry_run("--streaming", "--source=kinesis://beacons?region=eu-west-1",
                   "--output=gs://qoe-prod-out/run")
    assert job["job_type"] == "JOB_TYPE_STREAMING"
    assert "beam:transform:pubsub_read:v1" not in job["transform_urns"]
    # the read is a ParDo with a restriction coder: a splittable DoFn, the only one
    assert job["splittable_dofns"] == ["ReadBeacons/ReadStream/Read"]


def _own_flags():
    parser = argparse.ArgumentParser()
    QoeOptions._add_argparse_args(parser)
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def test_metadata__every_parameter_is_a_flag_and_every_flag_a_parameter():
    parameters = json.load(open(METADATA))["parameters"]
    names = [p["name"] for p in parameters]
    flags = _own_flags()
    assert len(names) == len(set(names))
    assert set(names) <= set(flags)                         # no parameter the pipeline ignores
    assert set(flags) - set(names) == set(NOT_IN_TEMPLATE)   # every other flag is offered
    for p in parameters:
        assert p["label"] and p["helpText"]
        assert p["isOptional"] == (p["name"] not in ("source", "output"))


def test_metadata__regexes_accept_the_defaults_and_real_values_and_refuse_junk():
    flags = _own_flags()
    samples = {"source": "pubsub://projects/p/subscriptions/beacons",
               "output": "gs://bucket/out", "alerts": "pubsub://projects/p/topics/alerts",
               "dead_letter": "kinesis://dead", "views_table": "p:qoe.views",
               "metrics_table": "p.qoe.metrics", "stop_at_latest": "true",
               "notify": "pagerduty:https://events.pagerduty.com/v2/enqueue?routing_key=K",
               "notify_ledger": "gs://bucket/notify"}
    for p in json.load(open(METADATA))["parameters"]:
        value = samples.get(p["name"], str(flags[p["name"]].default))
        for regex in p.get("regexes", []):
            assert re.match(regex, value), (p["name"], value)
            assert not re.match(regex, "not a value!"), p["name"]


def test_dockerfile__pins_the_beam_version_of_setup_py():
    setup = open(os.path.join(ROOT, "setup.py")).read()
    version = re.search(r'BEAM_VERSION = "([^"]+)"', setup).group(1)
    dockerfile = open(DOCKERFILE).read()
    assert re.findall(r"apache/beam_python3\.\d+_sdk:(\S+)", dockerfile) == [version]
    assert re.findall(r'apache-beam\[gcp\]==([^"\s]+)', dockerfile) == [version]
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=/template/runners/dataflow/main.py" in dockerfile
    assert os.path.exists(os.path.join(ROOT, "runners", "dataflow", "main.py"))


def test_dry_run__does_not_touch_pubsub_or_create_subscriptions(monkeypatch):
    # A topic URI would create a subscription on a real run; a dry run must
    # stay offline: no emulator here, and no credentials.
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    job = _dry_run("--streaming", "--source=pubsub://projects/qoe-prod/topics/beacons",
                   "--output=gs://qoe-prod-out/run",
                   "--alerts=pubsub://projects/qoe-prod/topics/alerts")
    assert job["job_type"] == "JOB_TYPE_STREAMING"


def test_dry_run__notify_adds_its_steps_to_the_streaming_job():
    flags = ("--streaming", "--source=pubsub://projects/qoe-prod/subscriptions/beacons",
             "--output=gs://qoe-prod-out/run")
    plain = _dry_run(*flags)
    notified = _dry_run(*flags, "--notify=pagerduty:https://events.pagerduty.com/v2/enqueue"
                                "?routing_key=K", "--notify=slack:https://hooks.slack.com/x")
    assert notified["job_type"] == "JOB_TYPE_STREAMING"
    # PerReceiver, OwnStage (a Reshuffle's parts), Send, the dead letters' Flatten, ...
    assert notified["transforms"] > plain["transforms"] + 4
    assert notified["window_fns"] == ["beam:window_fn:global_windows:v1"]
