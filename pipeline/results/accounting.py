"""Every record in exactly one place: the check each run makes before it reports.

Three counts meet here:
- what the source read, in messages (one line of a file, one Pub/Sub
  message or Kinesis record): counted by the source itself (the file
  reader's and the stream reader's ``source_messages`` counter) or, for
  the DirectRunner's replay and stream feed, by the launcher that fed them;
- what ParseBeacons made of them: ``messages``, then ``input_records`` =
  ``parsed_events`` + ``dead_letters`` (a message may hold several records);
- what the run wrote (counted from its files, pipeline/results/tally.py): dead
  letters, and the events of the final views plus the duplicates they
  dropped plus the late beacons. Derived rows (metric and response cells,
  alerts) are not places a record ends up: a response report is accounted
  through its view like any other beacon.

A run is accounted for when read = parsed messages, records = events + dead
letters, and each written count equals its counter. Anything else is a
loss (or a double count) somewhere between the source and the files, and
the run fails with the figures, whatever it wrote.
"""

from __future__ import annotations

from typing import Optional


class AccountingError(RuntimeError):
    """Records read and records accounted differ; the message has the figures."""


def reconcile(counters: dict[str, int], written: Optional[dict[str, int]],
              read: Optional[int]) -> dict:
    """The accounting section of run_summary.json, with ``ok`` and ``problems``.

    Args:
      counters: the run's counters (pipeline.launch.counters).
      written: totals counted from the output files (None: outputs not local).
      read: messages the source read (None: counted by the source's counter).
    """
    if read is None:
        read = counters.get("source_messages")
    parsed = counters.get("messages", 0)
    records = counters.get("input_records", 0)
    events, dead = counters.get("parsed_events", 0), counters.get("dead_letters", 0)
    out = {"messages_read": read, "messages_parsed": parsed, "records": records,
           "events": events, "dead_letters": dead,
           "duplicates": counters.get("duplicates_dropped", 0),
           "late": counters.get("late_beacons", 0)}
    problems = []
    if read is None:
        problems.append("the source reported no count of what it read")
    elif read != parsed:
        problems.append(f"read {read:,} messages, parsed {parsed:,}")
    if records != events + dead:
        problems.append(f"{records:,} records != {events:,} events + {dead:,} dead letters")
    if written is not None:
        out["written"] = {k: written.get(k, 0) for k in
                          ("events_in_views", "duplicates_dropped", "late_beacons", "dead_letters")}
        landed = written.get("events_in_views", 0) + written.get("duplicates_dropped", 0) + \
            written.get("late_beacons", 0)
        if landed != events:
            problems.append(f"{events:,} events parsed, {landed:,} in the outputs (views "
                            f"{written.get('events_in_views', 0):,} + duplicates "
                            f"{written.get('duplicates_dropped', 0):,} + late "
                            f"{written.get('late_beacons', 0):,})")
        if written.get("dead_letters", 0) != dead:
            problems.append(f"{dead:,} dead letters counted, {written.get('dead_letters', 0):,} "
                            "written")
    out["ok"] = not problems
    out["problems"] = problems
    return out


def verdict(accounting: dict) -> Optional[str]:
    """A one-line error for a run that is not accounted for, else None."""
    if accounting["ok"]:
        return None
    return "records read and records accounted differ: " + "; ".join(accounting["problems"])
