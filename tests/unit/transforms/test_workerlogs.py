"""transforms/workerlogs.py: the runner's hang-up at a job's end prints
nothing; every other data-plane error still prints."""

import logging
import threading

import grpc
import pytest

from transforms import workerlogs


class _Rpc(grpc.RpcError):
    def __init__(self, code, details):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


HANGUP = _Rpc(grpc.StatusCode.CANCELLED, "Multiplexer hanging up")
OTHERS = [_Rpc(grpc.StatusCode.UNAVAILABLE, "Multiplexer hanging up"),
          _Rpc(grpc.StatusCode.CANCELLED, "Cancelled by the client"),
          ValueError("Multiplexer hanging up")]


@pytest.fixture
def installed():
    saved_hook = threading.excepthook
    logger = logging.getLogger("apache_beam.runners.worker.data_plane")
    saved_filters = list(logger.filters)
    printed = []
    threading.excepthook = lambda args: printed.append(args.exc_value)
    workerlogs.install()
    try:
        yield logger, printed
    finally:
        threading.excepthook, logger.filters = saved_hook, saved_filters


def _log(logger, exc, caplog):
    caplog.clear()
    try:
        raise exc
    except Exception:
        logger.exception("Failed to read inputs in the data plane.")
    return len(caplog.records)


def test_install__the_runners_hangup_is_not_logged_other_errors_are(installed, caplog):
    logger, _ = installed
    assert _log(logger, HANGUP, caplog) == 0
    assert [_log(logger, exc, caplog) for exc in OTHERS] == [1, 1, 1]


def test_install__a_thread_ending_with_the_hangup_prints_nothing_others_still_do(installed):
    _, printed = installed
    for exc in (HANGUP, *OTHERS):
        def fail(exc=exc):
            raise exc
        thread = threading.Thread(target=fail)
        thread.start()
        thread.join()
    assert printed == OTHERS


def test_install__twice_installs_once(installed):
    assert workerlogs.install() is False
