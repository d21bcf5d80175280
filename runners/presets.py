"""Named launch presets (``stallwatch run --preset=NAME``): argv lists per runner.

A preset's flags come first, so any flag given on the command line wins.
"""

from __future__ import annotations

from runners import flink, tools

PRESETS = {
    # Batch on this machine. The DirectRunner picks its FnApiRunner engine for
    # this graph; streaming runs use its streaming engine (docs/streaming.md).
    "direct": ["--runner=DirectRunner"],
    # Beam's Go runner, built by `make prism`.
    "prism": ["--runner=PrismRunner", f"--prism_location={tools.PRISM}"],
    "flink-local": flink.LOCAL,
    "flink-cluster": flink.CLUSTER,
}

# Extra flags a preset takes when the run is a streaming one.
STREAMING_EXTRAS = {"flink-local": flink.LOCAL_STREAMING, "flink-cluster": flink.STREAMING}
