"""`make bench`: the pipeline's batch throughput against the DuckDB reference, same files, same run.

    python -m bench.run [--sizes=100k,1m] [--runners=direct-1,direct-2,flink-1,flink-2,prism]
                        [--write-doc]

For each workload size (generated once, seed 7, scenario ``clean``, cached in
out/bench/) it runs, each in its own process:

- the reference (bench/reference.sql in DuckDB) with 1 thread and with every core;
- ``stallwatch run`` (parse → sessionize → metrics → detect → write) on each runner;

and prints events/s, µs/event, wall time and peak RSS (the process and its
children, sampled every 0.2 s), each as a ratio to single-thread DuckDB
measured in the same run. ``--write-doc`` replaces the generated section of
docs/benchmarks.md. Results also go to out/bench/results.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from typing import Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "out", "bench")
DOC = os.path.join(ROOT, "docs", "benchmarks.md")
EVENTS_PER_VIEWER = 232          # the clean scenario at seed 7 (93 k events from 400 viewers)
SIZES = {"10k": 10_000, "100k": 100_000, "1m": 1_000_000, "5m": 5_000_000}   # 10k: a smoke run
CORES = os.cpu_count() or 1

# name -> (label, stallwatch run flags)
RUNNERS = {
    "direct-1": ("DirectRunner, 1 worker", ["--direct_num_workers=1"]),
    "direct-2": (f"DirectRunner, {CORES} workers (multi_processing)",
                 [f"--direct_num_workers={CORES}", "--direct_running_mode=multi_processing"]),
    "prism": ("Prism", ["--preset=prism"]),
    "flink-1": ("Flink [local], parallelism 1", ["--preset=flink-local", "--parallelism=1"]),
    "flink-2": ("Flink [local], parallelism 2", ["--preset=flink-local", "--parallelism=2"]),
}
DEFAULT_RUNNERS = {"10k": ["direct-1"], "100k": ["direct-1", "direct-2", "prism", "flink-1", "flink-2"],
                   "1m": ["direct-1"], "5m": ["direct-1"]}


def _tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants, in KiB (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        rss[int(entry)] = int(fields[21]) * (os.sysconf("SC_PAGE_SIZE") // 1024)
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        total += rss.get(p, 0)
        stack.extend(children.get(p, []))
    return total


def measure(cmd: list[str], timeout_s: float = 7200) -> dict:
    """Run ``cmd``; its wall time, peak tree RSS, exit code and last output lines."""
    started = time.perf_counter()
    process = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    peak = [0]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _tree_rss_kb(process.pid))
            done.wait(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        output, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    done.set()
    sampler.join()
    return {"wall_s": time.perf_counter() - started, "peak_rss_mb": peak[0] / 1024,
            "rc": process.returncode, "tail": output.strip().splitlines()[-3:]}


def workload(size: str) -> tuple[str, int]:
    """The cached workload of a size: (directory, records)."""
    path = os.path.join(OUT, f"workload-{size}")
    truth = os.path.join(path, "truth.json")
    if not os.path.exists(truth):
        viewers = max(20, SIZES[size] // EVENTS_PER_VIEWER)
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "runners.cli", "generate", f"--out={path}",
                        "--scenario=clean", f"--viewers={viewers}", "--seed=7"], cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
    with open(truth) as f:
        return path, json.load(f)["input_records"]


def bench_size(size: str, runners: list[str]) -> list[dict]:
    source, events = workload(size)
    rows = []
    for threads in sorted({1, CORES}):
        m = measure([sys.executable, "-m", "bench.reference", f"--source={source}",
                     f"--threads={threads}"])
        sql = re.search(r"in ([\d.]+) s", " ".join(m["tail"]))
        rows.append({"size": size, "events": events, "what": f"DuckDB reference, {threads} thread(s)",
                     "key": f"duckdb-{threads}", **m,
                     "inner_s": float(sql.group(1)) if sql else None})
        print(_line(rows[-1], rows[0]), flush=True)
    for name in runners:
        label, flags = RUNNERS[name]
        output = os.path.join(OUT, f"run-{size}-{name}")
        shutil.rmtree(output, ignore_errors=True)
        m = measure([sys.executable, "-m", "runners.cli", "run", f"--source={source}",
                     f"--output={output}", *flags])
        row = {"size": size, "events": events, "what": label, "key": name, **m}
        summary = os.path.join(output, "run_summary.json")
        if m["rc"] == 0 and os.path.exists(summary):
            with open(summary) as f:
                row["pipeline_s"] = json.load(f).get("wall_time_s")
        rows.append(row)
        print(_line(row, rows[0]), flush=True)
    return rows


def _line(row: dict, reference: dict) -> str:
    if row["rc"] != 0:
        return f"{row['size']:>5}  {row['what']:<44} FAILED rc={row['rc']}: {' | '.join(row['tail'])[:200]}"
    rate = row["events"] / row["wall_s"]
    ratio = row["wall_s"] / reference["wall_s"]
    return (f"{row['size']:>5}  {row['what']:<44} {row['wall_s']:8.1f} s  {rate:10,.0f} ev/s  "
            f"{1e6 / rate:8.1f} µs/ev  {row['peak_rss_mb']:7,.0f} MB  {ratio:6.1f}x DuckDB-1")


def table(rows: list[dict]) -> str:
    lines = ["| size | events | what | wall (s) | events/s | µs/event | peak RSS (MB) | × DuckDB 1 thread |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    reference = {}
    for row in rows:
        if row["key"] == "duckdb-1":
            reference[row["size"]] = row
        ref = reference.get(row["size"])
        if row["rc"] != 0:
            lines.append(f"| {row['size']} | {row['events']:,} | {row['what']} | failed | | | | "
                         f"{' '.join(row['tail'])[-120:].replace('|', '/')} |")
            continue
        rate = row["events"] / row["wall_s"]
        lines.append(f"| {row['size']} | {row['events']:,} | {row['what']} | {row['wall_s']:.1f} | "
                     f"{rate:,.0f} | {1e6 / rate:.1f} | {row['peak_rss_mb']:,.0f} | "
                     f"{row['wall_s'] / ref['wall_s']:.1f} |")
    return "\n".join(lines)


def growth(rows: list[dict]) -> str:
    """How each runner's time and memory grow with the workload, against its
    own smallest size in this run (the target: 5 M within 55× of 100 k)."""
    lines = ["| what | size | events | wall (s) | × its smallest size's wall | events × | peak RSS (MB) |",
             "|---|---|---:|---:|---:|---:|---:|"]
    first: dict[str, dict] = {}
    for row in rows:
        if row["rc"] != 0 or sum(r["key"] == row["key"] and r["rc"] == 0 for r in rows) < 2:
            continue
        base = first.setdefault(row["key"], row)
        lines.append(f"| {row['what']} | {row['size']} | {row['events']:,} | {row['wall_s']:.1f} | "
                     f"{row['wall_s'] / base['wall_s']:.1f} | {row['events'] / base['events']:.1f} | "
                     f"{row['peak_rss_mb']:,.0f} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def write_doc(rows: list[dict], started: str) -> None:
    with open(DOC, encoding="utf-8") as f:
        doc = f.read()
    machine = f"{platform.machine()}, {CORES} cores, Python {platform.python_version()}"
    block = (f"<!-- bench:start (generated by `make bench`; do not edit) -->\n"
             f"Run {started} on {machine}; each row one process, wall time including its start.\n\n"
             f"{table(rows)}\n"
             + (f"\nGrowth with the workload:\n\n{growth(rows)}\n" if growth(rows) else "")
             + "<!-- bench:end -->")
    doc = re.sub(r"<!-- bench:start.*?<!-- bench:end -->", lambda _: block, doc, flags=re.S)
    with open(DOC, "w", encoding="utf-8") as f:
        f.write(doc)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("BENCH_SIZE", "100k,1m"))
    parser.add_argument("--runners", default=None, help="Comma-separated; default per size.")
    parser.add_argument("--write-doc", action="store_true")
    parser.add_argument("--merge", action="store_true",
                        help="Keep the other sizes' rows of out/bench/results.json.")
    parser.add_argument("--doc-only", action="store_true",
                        help="Rewrite docs/benchmarks.md from out/bench/results.json; run nothing.")
    args = parser.parse_args(argv)
    if args.doc_only:
        with open(os.path.join(OUT, "results.json")) as f:
            saved = json.load(f)
        write_doc(saved["rows"], saved["started"])
        return 0
    sizes = [s.strip().lower() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        print(f"bench: unknown size {unknown[0]!r}; choose from {', '.join(SIZES)}", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    os.makedirs(OUT, exist_ok=True)
    rows = []
    for size in sizes:
        runners = args.runners.split(",") if args.runners else DEFAULT_RUNNERS[size]
        rows += bench_size(size, runners)
    saved_path = os.path.join(OUT, "results.json")
    if args.merge and os.path.exists(saved_path):
        # keep the other sizes of the last run; note when each size was measured
        with open(saved_path) as f:
            saved = json.load(f)
        for row in rows:
            row["measured"] = started
        kept = [dict(r, measured=r.get("measured", saved["started"]))
                for r in saved["rows"] if r["size"] not in sizes]
        rows = sorted(kept + rows, key=lambda r: SIZES[r["size"]])
        started = f"{saved['started']} (sizes {', '.join(sizes)} re-run {started})"
    with open(saved_path, "w") as f:
        json.dump({"started": started, "rows": rows}, f, indent=1)
    print("\n" + table(rows))
    if args.write_doc:
        write_doc(rows, started)
        print(f"\nwrote {os.path.relpath(DOC, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
