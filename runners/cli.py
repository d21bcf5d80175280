"""The ``stallwatch`` entry point: pipeline.cli with runner presets and prerequisites.

``stallwatch run --preset=NAME [flags]`` expands NAME (runners/presets.py)
before the flags given, so those win. Before a run starts, what the chosen
runner needs on this machine is checked (the Flink job-server jar and Java,
the Prism binary, a reachable Flink cluster) and a missing piece is one line
saying what to run, not a Java stack trace minutes later.
"""

from __future__ import annotations

import os
import shutil
import sys
import urllib.request
import warnings
from typing import Optional, Sequence

# Google's client libraries warn about Python and grpcio support dates on
# every import; a CLI user cannot act on them.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"google\.")

from pipeline import cli  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402
from runners.presets import PRESETS, STREAMING_EXTRAS  # noqa: E402

LOCAL_MASTERS = ("[local]", "[auto]", "[collection]")


def _preset(argv: Sequence[str]) -> Optional[str]:
    """The last value of --preset=NAME / --preset NAME in argv, or None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith("--preset="):
            value = arg.split("=", 1)[1]
        elif arg == "--preset" and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            value = argv[i + 1]
    return value


def expand_preset(argv: Sequence[str]) -> list[str]:
    """argv with --preset=NAME replaced by the preset's flags, put first."""
    name = _preset(argv)
    rest = [a for i, a in enumerate(argv)
            if not a.startswith("--preset") and not (i > 0 and argv[i - 1] == "--preset")]
    if name is None:
        return rest
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r} (one of: {', '.join(PRESETS)})")
    extras = STREAMING_EXTRAS.get(name, []) if "--streaming" in rest else []
    return [*PRESETS[name], *extras, *rest]


def check_prerequisites(options) -> None:
    """Raise ConfigError when the runner Beam's PipelineOptions ask for cannot
    start here."""
    from pipeline.io.streams.read import runner_name      # Beam is loaded by now
    given = options.get_all_options()
    runner = runner_name(given.get("runner") or "DirectRunner")
    if runner == "FlinkRunner":
        jar = given.get("flink_job_server_jar")
        if jar is None:
            raise ConfigError(
                "FlinkRunner needs --flink_job_server_jar (Beam's own download is not served): "
                "run 'make flink-jobserver' and use --preset=flink-local or --preset=flink-cluster")
        if "://" not in jar and not os.path.exists(jar):
            raise ConfigError(f"Flink job server jar {jar} is missing: run 'make flink-jobserver'")
        if shutil.which("java") is None:
            raise ConfigError("FlinkRunner needs Java 11 or 17 on PATH "
                              "(apt-get install openjdk-17-jre-headless)")
        master = given.get("flink_master") or "[auto]"
        if master not in LOCAL_MASTERS:
            url = master if "://" in master else f"http://{master}"
            try:
                with urllib.request.urlopen(f"{url}/overview", timeout=5):
                    pass
            except OSError:
                raise ConfigError(f"no Flink cluster answers at {master}: start one with "
                                  "'make flink-up' or use --preset=flink-local") from None
    elif runner == "PrismRunner":
        prism = given.get("prism_location")
        if prism is None:
            raise ConfigError("PrismRunner needs --prism_location (Beam's own download "
                              "is not reachable): run 'make prism' and use --preset=prism")
        if "://" not in prism and not os.access(prism, os.X_OK):
            raise ConfigError(f"Prism binary {prism} is missing: run 'make prism'")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return cli.main(sys.argv[1:] if argv is None else argv, expand=expand_preset,
                    check=check_prerequisites)


if __name__ == "__main__":
    sys.exit(main())
