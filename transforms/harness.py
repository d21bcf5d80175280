"""What stallwatch changes in the Beam SDK harness that runs its stateful
DoFns, once per process: ``statecache`` (two costs of SDK-side user state)
and ``workerlogs`` (no traceback for the runner's hang-up at a job's end).

Installed by those DoFns' ``setup``, so it applies in whichever worker
process runs them (in-process FnApiRunner, LOOPBACK or PROCESS workers,
Dataflow), and first thing in each worker process of stallwatch's own pool
(``transforms/worker.py``).
"""

from __future__ import annotations

from transforms import statecache, workerlogs


def install() -> None:
    statecache.install()
    workerlogs.install()
