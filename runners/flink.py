"""Flink: launch presets and the forms for a real cluster.

The job server is Beam's Flink runner (Beam 2.62, Flink 1.19) shaded by
`make flink-jobserver` (tools/flink/pom.xml); Python's FlinkRunner starts it
from ``--flink_job_server_jar`` for each job. Three ways to run:

``flink-local``: ``--flink_master=[local]``, an embedded Flink MiniCluster in
the job server's JVM; the SDK harness is this process (LOOPBACK).

``flink-cluster``: a standalone cluster, e.g. ``make flink-up`` (JobManager +
2 TaskManagers on loopback, REST on localhost:8081). The job server submits
to it over REST; the TaskManagers call back into this process for the Python
work (LOOPBACK), so the cluster must be on this machine.

A remote cluster: the Python workers must run beside the TaskManagers. Start
a worker pool there (pure Python, no Docker) with stallwatch installed::

    python -m apache_beam.runners.worker.worker_pool_main --service_port=50000

and submit with ``--flink_master=HOST:8081 --environment_type=EXTERNAL
--environment_config=localhost:50000`` (each TaskManager reaches its own pool),
or ``--environment_type=PROCESS --environment_config='{"command": "/path/to/boot"}'``
with Beam's Python boot binary installed on every TaskManager host.

Streaming adds checkpointing, which the source needs to commit what it read
(Kinesis positions, Pub/Sub acks happen on bundle finalization, which Flink
runs after a completed checkpoint): ``--checkpointing_interval`` (ms),
``--state_backend`` (``filesystem``: heap state, or ``rocksdb`` for large
state) with ``--state_backend_storage_path`` (unset: the cluster's own
state backend and ``state.checkpoints.dir``; ``python -m tools.flink up
--state_backend=rocksdb`` starts one with RocksDB and incremental
checkpoints), and ``--savepoint_path`` to resume a job stopped with a
savepoint (docs/runners.md).
"""

from __future__ import annotations

from runners import tools

_COMMON = [
    "--runner=FlinkRunner",
    f"--flink_version={tools.FLINK_MINOR}",
    f"--flink_job_server_jar={tools.FLINK_JOB_SERVER_JAR}",
    "--environment_type=LOOPBACK",
    "--parallelism=2",
]

LOCAL = ["--flink_master=[local]", *_COMMON]
CLUSTER = ["--flink_master=localhost:8081", *_COMMON]
# Added by the presets when --streaming is given:
# - checkpoints, which the source needs to commit what it read;
# - the SDK harness's state cache (Beam 2.62 ships it off, so every state
#   read is a gRPC call to the runner), and one Python worker *process* per
#   parallel task instead of threads in this process, so the Python work is
#   not held to one core by the GIL (stallwatch's own pool starts them:
#   pipeline/workerpool.py);
# - no idle shutdown of sources on a cluster: a source subtask that finished
#   (Impulse has one element for two subtasks) blocks every later checkpoint
#   barrier, so nothing read would be committed. The job then never ends by
#   itself; after a drain (Ctrl-C) the launcher stops it with a savepoint
#   (pipeline/flinkjob.py);
# - bundles finished before a checkpoint barrier: inside the snapshot Beam
#   2.62 keeps an open bundle's output in a buffer that only a later watermark
#   or bundle flushes, which the read's first bundle may never get
#   (docs/runners.md).
STREAMING = ["--checkpointing_interval=10000", "--finish_bundle_before_checkpointing",
             "--max_cache_memory_usage_mb=256",
             "--experiments=use_loopback_process_worker", "--sdk_worker_parallelism=2"]
# flink-local keeps checkpoints in the JobManager's memory (5 MB at most)
# unless told otherwise. Its embedded cluster has no REST API for the
# launcher to stop a drained job, so there sources end when idle and the job
# ends by itself after a drain; with parallelism above 1 its checkpoints then
# stop completing (see above): for a long-running stream use a cluster.
LOCAL_STREAMING = STREAMING + ["--shutdown_sources_after_idle_ms=1000",
                               "--state_backend=filesystem",
                               f"--state_backend_storage_path=file://{tools.TOOLS}/run/flink-local-checkpoints"]
