"""Run bench/reference.sql with DuckDB: the speed reference and the correctness oracle.

    python -m bench.reference --source=DIR [--threads=N]    prints per-view metric totals
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import duckdb
import pyarrow as pa

SQL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.sql")
TABLES = ("ref_views", "ref_stalls", "ref_exposure", "ref_metrics")


@dataclasses.dataclass
class Reference:
    views: pa.Table          # one row per view_id (see reference.sql, step 4)
    stalls: pa.Table         # (video_id, bucket, stalled_viewers)
    exposure: pa.Table       # (video_id, bucket, exposed_viewers)
    metrics: pa.Table        # one row per (minute_ms, dimension, value), as the metrics output
    events: int              # valid, de-duplicated events
    seconds: float           # wall time of the SQL, reading the files included


def source_glob(source: str) -> str:
    return os.path.join(source, "*.ndjson") if os.path.isdir(source) else source


def run(source: str, threads: int = 1, bucket_ms: int = 5_000, minute_ms: int = 60_000,
        max_lag_ms: int = 300_000, max_lead_ms: int = 60_000,
        memory_limit: str = "8GB") -> Reference:
    """Compute the reference over NDJSON ``source`` (file, directory or glob)."""
    with open(SQL, encoding="utf-8") as f:
        script = f.read().replace("{source}", source_glob(source).replace("'", "''"))
    for name, value in {"bucket_ms": bucket_ms, "minute_ms": minute_ms,
                        "max_lag_ms": max_lag_ms, "max_lead_ms": max_lead_ms}.items():
        script = script.replace("{" + name + "}", str(int(value)))
    con = duckdb.connect(config={"threads": threads, "memory_limit": memory_limit})
    try:
        started = time.perf_counter()
        con.execute(script)
        views, stalls, exposure, metrics = (con.sql(f"SELECT * FROM {t}").to_arrow_table()
                                            for t in TABLES)
        seconds = time.perf_counter() - started
        events = con.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        con.close()
    return Reference(views, stalls, exposure, metrics, events, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    ref = run(args.source, args.threads)
    print(f"{ref.events:,} events, {ref.views.num_rows:,} views in {ref.seconds:.2f} s "
          f"({ref.events / ref.seconds:,.0f} events/s, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
