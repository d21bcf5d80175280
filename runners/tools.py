"""Where `make prism` / `make flink` put the runner tools, and the versions.

STALLWATCH_TOOLS overrides the directory (default: .tools/ at the repo root,
next to this package in an editable install).
"""

from __future__ import annotations

import os

BEAM_VERSION = "2.62.0"      # = setup.py's pin (tests/unit/test_runner_presets.py checks)
FLINK_MINOR = "1.19"         # the only Flink minor with a Beam 2.62 runner on Maven Central
FLINK_VERSION = "1.19.3"     # the PyPI apache-flink release the standalone cluster runs

TOOLS = os.environ.get("STALLWATCH_TOOLS") or os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".tools")
PRISM = os.path.join(TOOLS, "bin", "prism")
FLINK_JOB_SERVER_JAR = os.path.join(
    TOOLS, "jars", f"beam-runners-flink-{FLINK_MINOR}-job-server-{BEAM_VERSION}.jar")
