"""Realistic, seeded beacon workloads with injected faults (stallwatch generate)."""
