"""A run's totals counted from the files it wrote: what the accounting check
(pipeline/results/accounting.py) holds against the counters. Every input record
ends up in exactly one output, so the counters follow from the files."""

from __future__ import annotations

import collections
import glob
import json
import os

import pyarrow.compute as pc

from pipeline.io import files
from pipeline.results import report_data, score


def _json_lines(output: str, name: str):
    for path in sorted(glob.glob(os.path.join(output, f"{name}-*.jsonl"))):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def totals_from_outputs(output: str, blank_lines: int = 0) -> dict[str, int]:
    """The counters a run reports, from its files (final view versions)."""
    totals: collections.Counter = collections.Counter()
    for dead in _json_lines(output, files.DEAD_LETTERS):
        totals["dead_letters"] += 1
        totals[f"dead_letter:{dead['reason']}"] += 1
    totals["late_beacons"] = sum(1 for _ in _json_lines(output, files.LATE))
    all_versions = report_data.read_views(output, ["view_key", "version"], latest=False).num_rows
    views = report_data.read_views(output, ["events", "duplicate_events"])
    totals["views"] = views.num_rows
    totals["view_updates"] = all_versions - views.num_rows
    events = pc.sum(views["events"]).as_py() or 0
    totals["events_in_views"] = events
    totals["duplicates_dropped"] = pc.sum(views["duplicate_events"]).as_py() or 0
    totals["parsed_events"] = events + totals["duplicates_dropped"] + totals["late_beacons"]
    totals["input_records"] = totals["parsed_events"] + totals["dead_letters"]
    totals["blank_lines"] = blank_lines
    for alert in score.read_alerts(output):
        totals[f"alerts:{alert['cause']}"] += 1
    return dict(totals)
