"""`make bench`: throughput of the pipeline against an independent DuckDB reference (docs/benchmarks.md)."""
