"""Session fixtures: the Pub/Sub and Kinesis emulators, started on free
loopback ports for the tests that ask for them and always stopped. The
DirectRunner runs without its per-bundle DoFn pickling and introspection,
as ``stallwatch run`` does (pipeline/io/directrunner.py)."""

import os

import pytest

from pipeline.io import directrunner
from tools import emulators

directrunner.install()


def _emulator(name, tmp_path_factory):
    running = emulators.start(name, log_dir=str(tmp_path_factory.mktemp(f"{name}-emulator")))
    saved = {key: os.environ.get(key) for key in running.env}
    os.environ.update(running.env)
    try:
        yield running
    finally:
        running.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory):
    """pstest on 127.0.0.1; PUBSUB_EMULATOR_HOST points at it while it runs."""
    yield from _emulator("pubsub", tmp_path_factory)


@pytest.fixture(scope="session")
def kinesis_emulator(tmp_path_factory):
    """kinesis-mock on 127.0.0.1; KINESIS_ENDPOINT is its URL."""
    yield from _emulator("kinesis", tmp_path_factory)


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory):
    """A standalone Flink cluster (JobManager + 2 TaskManagers) from
    .tools/flink-*, on free loopback ports; always stopped."""
    from tools import flink
    cluster = flink.start(instance=str(tmp_path_factory.mktemp("flink-cluster")))
    try:
        yield cluster
    finally:
        cluster.stop()


_SLOW = ("integration", "e2e")


def pytest_collection_modifyitems(config, items):
    """The folder says how fast a test is: tests/unit must be offline and
    fast (a test there marked integration is refused), and every test in
    tests/integration or tests/e2e is marked integration."""
    for item in items:
        folder = os.path.relpath(str(item.path), os.path.dirname(__file__)).split(os.sep)[0]
        marked = item.get_closest_marker("integration") is not None
        if folder == "unit" and marked:
            raise pytest.UsageError(f"{item.nodeid} is marked integration: move it to "
                                    "tests/integration/")
        if folder in _SLOW and not marked:
            item.add_marker(pytest.mark.integration)
