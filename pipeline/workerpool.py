"""The Python workers of a portable run as processes that carry stallwatch's
harness changes from their first line.

Beam's own process workers (LOOPBACK with
``--experiments=use_loopback_process_worker``) are ``python -c
"...SdkHarness(...).run()"``: no logging set up and none of
``transforms.harness`` until one of our stateful DoFns is set up in that
process. A worker that never ran one then prints the runner's hang-up at the
job's end as a traceback (seen in CI on a Flink cluster drain). This pool
starts ``<this interpreter> -m transforms.worker`` instead; the launcher
points the pipeline's environment at it (EXTERNAL), which is what LOOPBACK
does with Beam's pool.

Element types: none (no PTransform here).
"""

from __future__ import annotations

import subprocess
import sys
from typing import Callable

from apache_beam.options.pipeline_options import DebugOptions, PipelineOptions, PortableOptions
from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker import sdk_worker_main, worker_pool_main

EXPERIMENT = "use_loopback_process_worker"


def wanted(options: PipelineOptions) -> bool:
    """True when the run asks for LOOPBACK process workers (the Flink
    streaming presets do)."""
    portable = options.view_as(PortableOptions)
    return (EXPERIMENT in (options.view_as(DebugOptions).experiments or [])
            and (portable.environment_type or "").upper() == "LOOPBACK")


class _Pool(worker_pool_main.BeamFnExternalWorkerPoolServicer):
    """Beam's worker pool service, starting ``transforms.worker`` processes."""

    def StartWorker(self, request: beam_fn_api_pb2.StartWorkerRequest, unused_context):
        command = [sys.executable, "-m", "transforms.worker",
                   f"--control={request.control_endpoint.url}", f"--id={request.worker_id}",
                   f"--state_cache_bytes={self._state_cache_size}",
                   f"--data_buffer_ms={self._data_buffer_time_limit_ms}"]
        try:
            # A worker's stdout goes to stderr: the run's stdout is its summary.
            self._worker_processes[request.worker_id] = subprocess.Popen(
                command, stdout=sys.__stderr__.fileno(), close_fds=True)
        except OSError as exc:
            return beam_fn_api_pb2.StartWorkerResponse(error=str(exc))
        return beam_fn_api_pb2.StartWorkerResponse()


def start(options: PipelineOptions) -> Callable[[], None]:
    """Start the pool and point ``options``' environment at it; returns the
    function that stops it (its workers are stopped by the runner, or killed
    at this process's exit)."""
    experiments = options.view_as(DebugOptions).experiments or []
    # The sizes Beam's LOOPBACK pool would be given for the same flags.
    address, server = _Pool.start(
        use_process=True,
        state_cache_size=sdk_worker_main._get_state_cache_size_bytes(options=options),
        data_buffer_time_limit_ms=sdk_worker_main._get_data_buffer_time_limit_ms(experiments))
    portable = options.view_as(PortableOptions)
    portable.environment_type, portable.environment_config = "EXTERNAL", address
    return lambda: server.stop(1)
