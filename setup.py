"""stallwatch: streaming video QoE analytics on Apache Beam."""

import setuptools

BEAM_VERSION = "2.62.0"  # newest Beam whose Flink runner Maven Central serves (docs/runners.md); keep identical in runners/dataflow/Dockerfile

setuptools.setup(
    name="stallwatch",
    version="0.1.0",
    description="Video QoE analytics on Apache Beam: beacons -> views -> stall clusters",
    python_requires=">=3.10",
    packages=setuptools.find_packages(include=["pipeline", "pipeline.*", "transforms",
                                               "transforms.*", "runners", "runners.*"]),
    install_requires=[
        f"apache-beam[gcp]=={BEAM_VERSION}",
        "google-cloud-pubsub>=2.20",
        "pyarrow>=14",
        "orjson>=3.9",
        "matplotlib>=3.8",
        "boto3>=1.34",
        "objsize>=0.7.1,<0.8",     # transforms/statecache.py passes exclude_modules_globals
        "http-sf>=1.5",            # RFC 9651 structured fields: CMCD v2 reports
        "aiohttp>=3.9",            # the collector (stallwatch collect)
        "ua-parser>=1.0",          # browser / os / device from User-Agent
        "ua-parser-builtins",
    ],
    extras_require={"test": ["pytest>=8", "pytest-timeout>=2.3", "playwright>=1.45",
                             "duckdb>=1.1"]},   # bench/reference.sql: the oracle and the speed reference
    entry_points={"console_scripts": ["stallwatch=runners.cli:main"]},
)
