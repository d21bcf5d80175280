"""A run's totals counted from the files it wrote: what the accounting check
(pipeline/results/accounting.py) holds against the counters. Every input record
ends up in exactly one output, so the counters follow from the files."""

from __future__ import annotations

import collections

import pyarrow.compute as pc

from pipeline.results import outputs
from transforms import notices


def totals_from_outputs(output: str, blank_lines: int = 0) -> dict[str, int]:
    """The counters a run reports, from its files (final view versions)."""
    totals: collections.Counter = collections.Counter()
    for dead in outputs.dead_letters(output):
        if dead.get("stage") == notices.STAGE:       # a notice given up, not an input record
            continue
        totals["dead_letters"] += 1
        totals[f"dead_letter:{dead['reason']}"] += 1
    totals["late_beacons"] = sum(1 for _ in outputs.late_beacons(output))
    all_versions = outputs.views(output, ["view_key", "version"], latest=False).num_rows
    views = outputs.views(output, ["events", "duplicate_events"])
    totals["views"] = views.num_rows
    totals["view_updates"] = all_versions - views.num_rows
    events = pc.sum(views["events"]).as_py() or 0
    totals["events_in_views"] = events
    totals["duplicates_dropped"] = pc.sum(views["duplicate_events"]).as_py() or 0
    totals["parsed_events"] = events + totals["duplicates_dropped"] + totals["late_beacons"]
    totals["input_records"] = totals["parsed_events"] + totals["dead_letters"]
    totals["blank_lines"] = blank_lines
    for alert in outputs.alerts(output):
        totals[f"alerts:{alert['cause']}"] += 1
    return dict(totals)
