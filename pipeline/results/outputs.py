"""The one reader of a run's outputs (OUTPUT/): what summary, score, report
and the accounting read back. A streaming run re-emits a view, metric cell or
alert as it changes (``version`` + 1): readers give the latest version of
each unless asked for every one."""

from __future__ import annotations

import glob
import json
import os
from typing import Iterator, Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.io import files


def summary(output: str) -> dict:
    """run_summary.json of a finished run."""
    with open(os.path.join(output, files.SUMMARY), encoding="utf-8") as f:
        return json.load(f)


def _json_lines(output: str, pattern: str) -> Iterator[dict]:
    for path in sorted(glob.glob(os.path.join(output, pattern))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def dead_letters(output: str) -> Iterator[dict]:
    return _json_lines(output, f"{files.DEAD_LETTERS}-*.jsonl")


def notifications(output: str) -> Iterator[dict]:
    """What the receivers accepted (--notify), in no particular order."""
    return _json_lines(output, f"{files.NOTIFICATIONS}*.jsonl")


def late_beacons(output: str) -> Iterator[dict]:
    return _json_lines(output, f"{files.LATE}-*.jsonl")


def alert_versions(output: str) -> list[dict]:
    """Every alert line of a run, every version (a stream's history)."""
    return list(_json_lines(output, f"{files.ALERTS}*.jsonl"))


def alerts(output: str) -> list[dict]:
    """The current state of every alert of a run: the highest version of each
    alert_id (a stream re-emits alerts as they change), retracted ones dropped."""
    latest: dict[str, dict] = {}
    for alert in alert_versions(output):
        seen = latest.get(alert["alert_id"])
        if seen is None or alert.get("version", 1) > seen.get("version", 1):
            latest[alert["alert_id"]] = alert
    return [a for a in latest.values() if a.get("status") != "retracted"]


def latest_rows(table: pa.Table, key_columns: list[str]) -> pa.Table:
    """One row per key: the highest ``version`` (a stream re-emits updates)."""
    if table.num_rows == 0 or pc.max(table["version"]).as_py() <= 1:
        return table
    keys = list(zip(*(table[c].to_pylist() for c in key_columns)))
    best: dict = {}
    for i, (key, version) in enumerate(zip(keys, table["version"].to_pylist())):
        if key not in best or version > best[key][0]:
            best[key] = (version, i)
    return table.take(sorted(i for _, i in best.values()))


def views(output: str, columns: Optional[list[str]] = None, latest: bool = True) -> pa.Table:
    """The current version of every view of a run (every version: ``latest`` False)."""
    paths = sorted(glob.glob(os.path.join(output, f"{files.VIEWS}-*.parquet")))
    if not paths:
        return files.VIEW_SCHEMA.empty_table() if columns is None else \
            pa.schema([files.VIEW_SCHEMA.field(c) for c in columns]).empty_table()
    if not latest:
        return pq.read_table(paths, columns=columns)
    wanted = None if columns is None else sorted(set(columns) | {"view_key", "version"})
    table = latest_rows(pq.read_table(paths, columns=wanted), ["view_key"])
    return table if columns is None else table.select(columns)


def metrics(output: str) -> list[dict]:
    """The current version of every metric cell of a run."""
    paths = sorted(glob.glob(os.path.join(output, f"{files.METRICS}-*.parquet")))
    if not paths:
        return []
    table = latest_rows(pq.read_table(paths), ["minute_ms", "dimension", "value"])
    return [row for row in table.to_pylist() if row["views"]]
