"""Run ``stallwatch run`` as a user does (its own process) and read what it wrote."""

from __future__ import annotations

import glob
import json
import os
import re
import subprocess
import sys
import time

import pyarrow.parquet as pq

from tests import ROOT

FIGURES = os.path.join(ROOT, "out", "runner-test-figures.json")


def start(*flags: str) -> subprocess.Popen:
    """``stallwatch run FLAGS`` in a new process, output captured as text."""
    return subprocess.Popen([sys.executable, "-m", "runners.cli", "run", *flags], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill(process: subprocess.Popen) -> str:
    """Kill a run started by ``start`` and everything it started (job
    server, Python workers: they hold its output pipe open); returns what it
    printed."""
    def descendants(pid: int) -> list[int]:
        children = []
        for task in glob.glob(f"/proc/{pid}/task/*/children"):   # any thread's children
            try:
                with open(task) as f:
                    children += [int(c) for c in f.read().split()]
            except OSError:
                pass
        return [d for c in children for d in (c, *descendants(c))]

    for pid in (*descendants(process.pid), process.pid):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    return process.communicate()[0]


def stallwatch(*flags: str, timeout_s: float = 1200) -> tuple[dict, float]:
    """(run summary, wall seconds) of ``stallwatch run FLAGS`` in a new process."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "runners.cli", "run", *flags], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout_s)
    wall = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Traceback" not in done.stdout, done.stdout[-4000:]
    output = next(f.split("=", 1)[1] for f in flags if f.startswith("--output="))
    result = summary(output)
    assert result["accounting"]["ok"], result["accounting"]      # read = accounted
    return result, wall


def summary(output: str) -> dict:
    with open(os.path.join(output, "run_summary.json")) as f:
        return json.load(f)


def _parquet(output: str, name: str) -> list[dict]:
    return pq.read_table(sorted(glob.glob(os.path.join(output, f"{name}-*.parquet")))).to_pylist()


def views(output: str) -> list[dict]:
    return sorted(_parquet(output, "views"), key=lambda r: r["view_key"])


def metrics(output: str) -> list[dict]:
    """A batch run's metric rows (one version of each cell)."""
    return _parquet(output, "metrics")


def alerts(output: str) -> list[str]:
    with open(os.path.join(output, "alerts.jsonl")) as f:
        return sorted(f.read().splitlines())


COUNTS = ("input_records", "parsed_events", "dead_letters", "dead_letters_by_reason",
          "duplicates_dropped", "late_beacons", "views", "alerts")


def assert_same_results(expected: str, actual: str) -> None:
    """Two runs' outputs agree: every view field for field, every alert, every count."""
    want, got = summary(expected), summary(actual)
    for key in COUNTS:
        assert got[key] == want[key], key
    assert views(actual) == views(expected)
    assert alerts(actual) == alerts(expected)


def record(name: str, figures: dict, path: str = FIGURES) -> None:
    """Keep a test's measured figures under ``name`` in the JSON file ``path``."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stored = json.load(open(path)) if os.path.exists(path) else {}
    stored[name] = figures
    with open(path, "w") as f:
        json.dump(stored, f, indent=2)


def start_collector(sink: str, *flags: str) -> tuple[subprocess.Popen, str]:
    """``stallwatch collect --sink=SINK`` on a free loopback port: (process, base URL)."""
    process = subprocess.Popen([sys.executable, "-m", "runners.cli", "collect",
                                "--listen=127.0.0.1:0", f"--sink={sink}", *flags], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    assert match, line + process.stdout.read()
    return process, match.group(1)
