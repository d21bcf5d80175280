"""A standalone Flink cluster on loopback, from the PyPI Flink packages.

    python -m tools.flink unpack --version=V --downloads=DIR   make FLINK_HOME (make flink-dist)
    python -m tools.flink up [--port=8081] [--taskmanagers=2] [--state_backend=rocksdb]
                                                                JobManager + TaskManagers
    python -m tools.flink status                                what `up` started
    python -m tools.flink down                                  stop it

The apache-flink wheel carries Flink's scripts and conf (pyflink/bin,
pyflink/conf) and the apache-flink-libraries sdist its jars (deps/lib, opt,
plugins): together a complete Flink distribution. It is unpacked into
.tools/flink-V/ and started with Flink's own bin/jobmanager.sh and
bin/taskmanager.sh, each instance with its own conf, log and PID directory
under .tools/run/, so tests can start a cluster beside a developer's one.
PyFlink itself is not installed (its Beam pin would fight ours).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from typing import Optional

import yaml

from pipeline import flinkjob
from runners import tools as runner_tools
from tools.emulators import RUN, TOOLS, free_port

FLINK_VERSION = runner_tools.FLINK_VERSION
STATE = os.path.join(RUN, "flink.json")


class FlinkError(RuntimeError):
    """The distribution is missing or the cluster did not come up; says what to run."""


def flink_home(version: str = FLINK_VERSION) -> str:
    return os.path.join(TOOLS, f"flink-{version}")


def unpack(version: str, downloads: str) -> str:
    """Build FLINK_HOME from the downloaded wheel and sdist; returns its path."""
    wheels = glob.glob(os.path.join(downloads, f"apache_flink-{version}-*.whl"))
    sdists = glob.glob(os.path.join(downloads, f"apache-flink-libraries-{version}.tar.gz"))
    if not wheels or not sdists:
        raise FlinkError(f"apache-flink / apache-flink-libraries {version} not in {downloads}: "
                         "run 'make flink-dist'")
    home = flink_home(version)
    staging = home + ".partial"
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in wheel.namelist():
            for part in ("bin", "conf"):
                prefix = f"pyflink/{part}/"
                if name.startswith(prefix) and not name.endswith("/"):
                    _write(os.path.join(staging, part, name[len(prefix):]), wheel.read(name))
    with tarfile.open(sdists[0]) as sdist:
        prefix = f"apache-flink-libraries-{version}/deps/"
        for member in sdist.getmembers():
            if member.isfile() and member.name.startswith(prefix):
                relative = member.name[len(prefix):]
                if relative.split("/", 1)[0] in ("bin", "lib", "opt", "plugins", "licenses"):
                    _write(os.path.join(staging, relative), sdist.extractfile(member).read())
    for script in glob.glob(os.path.join(staging, "bin", "*.sh")) + [
            os.path.join(staging, "bin", "flink")]:
        os.chmod(script, 0o755)
    if not glob.glob(os.path.join(staging, "lib", "flink-dist-*.jar")):
        raise FlinkError("no flink-dist jar in apache-flink-libraries: not a Flink distribution")
    shutil.rmtree(home, ignore_errors=True)
    os.rename(staging, home)
    return home


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


@dataclasses.dataclass
class Cluster:
    """A running standalone cluster: its REST address and where it keeps its files."""
    home: str
    instance: str
    rest_port: int
    taskmanagers: int

    @property
    def master(self) -> str:
        """The value for --flink_master."""
        return f"localhost:{self.rest_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    def get(self, path: str):
        return flinkjob.rest(self.rest_url, path, timeout_s=5)

    def jobs(self) -> list[dict]:
        return self.get("/jobs/overview")["jobs"]

    def cancel_running(self) -> None:
        """Cancel every running job (a failed test must not leave one behind)."""
        for job in self.jobs():
            if job["state"] == "RUNNING":
                flinkjob.cancel(self.rest_url, job["jid"])

    def _script(self, script: str, *args: str) -> None:
        env = dict(os.environ, FLINK_CONF_DIR=os.path.join(self.instance, "conf"),
                   FLINK_LOG_DIR=os.path.join(self.instance, "log"),
                   FLINK_PID_DIR=os.path.join(self.instance, "pid"))
        subprocess.run([os.path.join(self.home, "bin", script), *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL)

    def stop(self) -> None:
        for script in ("taskmanager.sh", "jobmanager.sh"):
            try:
                self._script(script, "stop-all")
            except subprocess.CalledProcessError:
                pass


STATE_BACKENDS = ("hashmap", "rocksdb")


def configure(home: str, instance: str, rest_port: int, slots: int,
              state_backend: str = "hashmap") -> None:
    """Flink's shipped config.yaml with loopback addresses, our ports and memory.

    ``state_backend``: ``hashmap`` keeps keyed state on the heap and writes
    all of it at every checkpoint; ``rocksdb`` keeps it in RocksDB (in
    flink-dist) and checkpoints incrementally: only the files written since
    the last checkpoint. Jobs that set no ``--state_backend`` use this one."""
    with open(os.path.join(home, "conf", "config.yaml")) as handle:
        config = yaml.safe_load(handle)
    config["jobmanager"].update({
        "bind-host": "127.0.0.1",
        "rpc": {"address": "127.0.0.1", "port": free_port()},
        "memory": {"process": {"size": "1024m"}}})
    config["taskmanager"].update({
        "bind-host": "127.0.0.1", "host": "127.0.0.1", "numberOfTaskSlots": slots,
        # Beam's graph has many exchanges: the default 10 % network share of
        # a small TaskManager is too few buffers for parallelism 2, and each
        # blocking (batch) partition reserves 512 of them for sort-shuffle.
        "memory": {"process": {"size": "2048m"},
                   "network": {"min": "384m", "max": "384m"}},
        "network": {"sort-shuffle": {"min-buffers": 64}}})
    config["rest"] = {"address": "127.0.0.1", "bind-address": "127.0.0.1", "port": rest_port}
    config["parallelism"] = {"default": 2}
    config["state"] = {"checkpoints": {"dir": "file://" + os.path.join(instance, "checkpoints")},
                       "savepoints": {"dir": "file://" + os.path.join(instance, "savepoints")},
                       "backend": {"type": state_backend,
                                   "incremental": state_backend == "rocksdb"}}
    conf = os.path.join(instance, "conf")
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(os.path.join(home, "conf"), conf)
    with open(os.path.join(conf, "config.yaml"), "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)


def start(rest_port: Optional[int] = None, taskmanagers: int = 2, slots: int = 2,
          instance: Optional[str] = None, timeout_s: float = 90.0,
          state_backend: str = "hashmap") -> Cluster:
    """Start a JobManager and ``taskmanagers`` TaskManagers; wait until all
    registered. With free ports chosen here, a port taken by someone else in
    the meantime (the JobManager then fails to bind) gets a second try."""
    if state_backend not in STATE_BACKENDS:
        raise FlinkError(f"state backend {state_backend!r}: choose one of {', '.join(STATE_BACKENDS)}")
    args = (taskmanagers, slots, instance, timeout_s, state_backend)
    if rest_port is not None:
        return _start(rest_port, *args)
    try:
        return _start(free_port(), *args)
    except FlinkError:
        return _start(free_port(), *args)


def _start(rest_port: int, taskmanagers: int, slots: int, instance: Optional[str],
           timeout_s: float, state_backend: str) -> Cluster:
    home = flink_home()
    if not os.path.exists(os.path.join(home, "bin", "jobmanager.sh")):
        raise FlinkError(f"{home} is missing: run 'make flink-dist'")
    if shutil.which("java") is None:
        raise FlinkError("no java on PATH: Flink needs Java 11 or 17 (apt-get install openjdk-17-jre)")
    instance = instance or os.path.join(RUN, f"flink-{rest_port}")
    for part in ("log", "pid", "checkpoints", "savepoints"):
        os.makedirs(os.path.join(instance, part), exist_ok=True)
    configure(home, instance, rest_port, slots, state_backend)
    cluster = Cluster(home, instance, rest_port, taskmanagers)
    cluster._script("jobmanager.sh", "start")
    for _ in range(taskmanagers):
        cluster._script("taskmanager.sh", "start")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if len(cluster.get("/taskmanagers")["taskmanagers"]) >= taskmanagers:
                return cluster
        except OSError:
            pass
        time.sleep(0.5)
    cluster.stop()
    raise FlinkError(f"Flink did not come up in {timeout_s:.0f} s; logs in "
                     f"{os.path.join(instance, 'log')}")


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.flink")
    commands = parser.add_subparsers(dest="command", required=True)
    unpack_cmd = commands.add_parser("unpack")
    unpack_cmd.add_argument("--version", default=FLINK_VERSION)
    unpack_cmd.add_argument("--downloads", required=True)
    up = commands.add_parser("up")
    up.add_argument("--port", type=int, default=8081)
    up.add_argument("--taskmanagers", type=int, default=2)
    up.add_argument("--state_backend", choices=STATE_BACKENDS, default="hashmap",
                    help="rocksdb: incremental checkpoints (jobs that set no --state_backend)")
    commands.add_parser("status")
    commands.add_parser("down")
    args = parser.parse_args(argv)
    try:
        if args.command == "unpack":
            print(f"Flink distribution in {unpack(args.version, args.downloads)}")
        elif args.command == "up":
            if os.path.exists(STATE):
                print(f"a cluster is already up ({STATE}): make flink-down first", file=sys.stderr)
                return 1
            cluster = start(args.port, args.taskmanagers, state_backend=args.state_backend)
            with open(STATE, "w") as handle:
                json.dump(dataclasses.asdict(cluster), handle)
            print(f"Flink {FLINK_VERSION}: JobManager + {args.taskmanagers} TaskManagers, "
                  f"web UI {cluster.rest_url}\n  stallwatch run --preset=flink-cluster "
                  f"--flink_master={cluster.master} ...")
        elif args.command in ("status", "down"):
            if not os.path.exists(STATE):
                print("no cluster started by 'make flink-up'")
                return 0
            with open(STATE) as handle:
                cluster = Cluster(**json.load(handle))
            if args.command == "status":
                overview = cluster.get("/overview")
                print(f"{cluster.rest_url}: {overview['taskmanagers']} TaskManagers, "
                      f"{overview['slots-available']}/{overview['slots-total']} slots free, "
                      f"{overview['jobs-running']} jobs running")
            else:
                cluster.stop()
                os.remove(STATE)
                print("Flink cluster stopped")
    except (FlinkError, OSError) as error:
        print(f"tools.flink: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
