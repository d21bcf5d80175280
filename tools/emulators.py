"""Local protocol peers for stallwatch's stream tests and demos, on loopback.

  pubsub   Google's pstest fake, built from tools/pstest by `make emulators`
  kinesis  kinesis-mock (npm kinesis-local), installed by `make emulators`

    python -m tools.emulators up [pubsub|kinesis ...]   start, print the env to use
    python -m tools.emulators env                       print it again
    python -m tools.emulators down                      stop what `up` started

Each emulator gets a free port; its PID and port are kept in .tools/run/ so
`down` stops exactly what `up` started. Tests use ``start()`` directly
(tests/conftest.py) and always stop what they started.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.path.join(ROOT, ".tools")
RUN = os.path.join(TOOLS, "run")
PSTEST = os.path.join(TOOLS, "bin", "pstest")
KINESIS_MOCK = os.path.join(TOOLS, "node_modules", "kinesis-local")


class EmulatorError(RuntimeError):
    """An emulator is missing or did not come up; says what to run."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class Running:
    name: str
    port: int
    process: Optional[subprocess.Popen]
    pid: int
    log: str

    @property
    def env(self) -> dict[str, str]:
        if self.name == "pubsub":
            return {"PUBSUB_EMULATOR_HOST": f"127.0.0.1:{self.port}"}
        return {"KINESIS_ENDPOINT": f"http://127.0.0.1:{self.port}"}

    def stop(self) -> None:
        _terminate(self.pid, self.process)


def _command(name: str, port: int) -> tuple[list[str], Optional[str], dict]:
    env = dict(os.environ)
    if name == "pubsub":
        if not os.access(PSTEST, os.X_OK):
            raise EmulatorError(f"{PSTEST} is missing: run 'make emulators'")
        return [PSTEST, f"--port={port}"], None, env
    if name == "kinesis":
        if not os.path.exists(os.path.join(KINESIS_MOCK, "main.js")):
            raise EmulatorError(f"{KINESIS_MOCK} is missing: run 'make emulators'")
        # kinesis-mock reads server.json (its TLS certificate) from its working directory.
        env.update(KINESIS_MOCK_PLAIN_PORT=str(port), KINESIS_MOCK_TLS_PORT=str(free_port()),
                   LOG_LEVEL="WARN", SHOULD_PERSIST_DATA="false",
                   CREATE_STREAM_DURATION="0ms", DELETE_STREAM_DURATION="0ms",
                   UPDATE_SHARD_COUNT_DURATION="0ms", SHARD_LIMIT="100")
        return ["node", "main.js"], KINESIS_MOCK, env
    raise EmulatorError(f"unknown emulator {name!r} (pubsub, kinesis)")


def _ready(name: str, port: int) -> bool:
    """The emulator answers its protocol (not just an open port)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            pass
    except OSError:
        return False
    if name == "kinesis":
        import urllib.request
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/", data=b"{}", method="POST",
            headers={"Content-Type": "application/x-amz-json-1.1",
                     "X-Amz-Target": "Kinesis_20131202.ListStreams",
                     "X-Amz-Date": "20260101T000000Z",
                     "Authorization": "AWS4-HMAC-SHA256 Credential=local/20260101/us-east-1/"
                                      "kinesis/aws4_request, SignedHeaders=host, Signature=x"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                return response.status == 200
        except Exception:
            return False
    return True


def start(name: str, port: Optional[int] = None, timeout_s: float = 60.0,
          log_dir: Optional[str] = None) -> Running:
    """Start one emulator on ``port`` (default: a free one) and wait until it answers."""
    port = port or free_port()
    command, cwd, env = _command(name, port)
    os.makedirs(log_dir or RUN, exist_ok=True)
    log = os.path.join(log_dir or RUN, f"{name}.log")
    with open(log, "ab") as handle:
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmulatorError(f"{name} emulator exited with {process.returncode}; see {log}")
        if _ready(name, port):
            return Running(name, port, process, process.pid, log)
        time.sleep(0.2)
    _terminate(process.pid, process)
    raise EmulatorError(f"{name} emulator did not answer on 127.0.0.1:{port} "
                        f"within {timeout_s:.0f} s; see {log}")


def _terminate(pid: int, process: Optional[subprocess.Popen] = None) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if process is None:     # not our child: nothing reaps it, poll its state
            try:
                with open(f"/proc/{pid}/stat") as stat:
                    if stat.read().split()[2] == "Z":
                        return
            except OSError:
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _state(name: str) -> str:
    return os.path.join(RUN, f"{name}.pid")


def _recorded() -> list[tuple[str, int, int]]:
    out = []
    for name in ("pubsub", "kinesis"):
        try:
            with open(_state(name)) as f:
                pid, port = (int(x) for x in f.read().split())
            os.kill(pid, 0)
            out.append((name, pid, port))
        except (OSError, ValueError):
            continue
    return out


def _env_lines(running: list[tuple[str, int, int]]) -> str:
    lines = []
    for name, _pid, port in running:
        for key, value in Running(name, port, None, 0, "").env.items():
            lines.append(f"export {key}={value}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "env"
    names = argv[1:] or ["pubsub", "kinesis"]
    try:
        if command == "up":
            up = {name for name, _, _ in _recorded()}
            for name in names:
                if name in up:
                    continue
                running = start(name)
                with open(_state(name), "w") as f:
                    f.write(f"{running.pid} {running.port}\n")
                print(f"{name}: 127.0.0.1:{running.port} (pid {running.pid}, log {running.log})",
                      file=sys.stderr)
            print(_env_lines(_recorded()))
            return 0
        if command == "env":
            print(_env_lines(_recorded()))
            return 0
        if command == "down":
            for name, pid, port in _recorded():
                _terminate(pid)
                print(f"{name}: stopped (pid {pid}, port {port})", file=sys.stderr)
            for name in ("pubsub", "kinesis"):
                if os.path.exists(_state(name)):
                    os.remove(_state(name))
            return 0
    except EmulatorError as exc:
        print(f"emulators: {exc}", file=sys.stderr)
        return 1
    print("usage: python -m tools.emulators up|env|down [pubsub|kinesis ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
