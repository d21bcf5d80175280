"""Silence one print of Beam's SDK harness that is not an error: the runner
hanging up the data stream when it closes the environment at a job's end.

Beam 2.62's harness reads the data stream on a thread; when the runner closes
the environment before the harness has closed its side, that read ends with
gRPC CANCELLED "Multiplexer hanging up", logged as an ERROR with a traceback
and printed again by Python's thread hook. Only these two prints of this one
cause go: a hang-up in the middle of a job still fails the job on the
runner's side, which the launcher reports. Where it was seen: docs/runners.md.
"""

from __future__ import annotations

import logging
import threading

HANGUP = "Multiplexer hanging up"
_LOGGER = "apache_beam.runners.worker.data_plane"
_MARK = "_stallwatch_hangup"


def is_hangup(exc: BaseException | None) -> bool:
    """True for the runner's CANCELLED "Multiplexer hanging up" on a gRPC stream."""
    import grpc
    if not isinstance(exc, grpc.RpcError) or not hasattr(exc, "code"):
        return False
    return exc.code() == grpc.StatusCode.CANCELLED and HANGUP in (exc.details() or "")


class _DropHangup(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_hangup(record.exc_info[1]))


def install() -> bool:
    """Add the log filter and the thread hook, once per process; returns
    False if they already were."""
    if getattr(threading.excepthook, _MARK, False):
        return False
    logging.getLogger(_LOGGER).addFilter(_DropHangup())
    previous = threading.excepthook

    def excepthook(args) -> None:
        if not is_hangup(args.exc_value):
            previous(args)

    setattr(excepthook, _MARK, True)
    threading.excepthook = excepthook
    return True
