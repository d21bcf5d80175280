"""Launch presets, runner prerequisites and version pins (offline)."""

import os
import re

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import workerpool
from pipeline.config import check_flags
from pipeline.errors import ConfigError
from runners import cli, flink, tools
from runners.presets import PRESETS
from tests import ROOT



def test_preset__expands_first_so_flags_given_win():
    argv = cli.expand_preset(["--source=s", "--preset=flink-local", "--parallelism=1"])
    assert argv[:len(flink.LOCAL)] == flink.LOCAL
    assert argv[-2:] == ["--source=s", "--parallelism=1"]
    assert not any(a.startswith("--preset") for a in argv)


def test_preset__streaming_adds_checkpointing_on_flink_only():
    assert "--checkpointing_interval=10000" in cli.expand_preset(["--preset=flink-local",
                                                                  "--streaming"])
    assert cli.expand_preset(["--preset", "direct", "--streaming"]) == [
        "--runner=DirectRunner", "--streaming"]


@pytest.mark.parametrize("argv, ours", [
    (["--preset=flink-cluster", "--streaming"], True),
    (["--preset=flink-local", "--streaming"], True),
    (["--preset=flink-cluster"], False),            # batch: threads in the launcher
    (["--preset=flink-cluster", "--streaming", "--environment_type=EXTERNAL",
      "--environment_config=localhost:50000"], False),   # the user's own pool wins
])
def test_preset__flink_streaming_workers_come_from_stallwatchs_pool(argv, ours):
    options = PipelineOptions(cli.expand_preset(argv))
    assert workerpool.wanted(options) is ours


def test_preset__unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="flink-local"):
        cli.expand_preset(["--preset=spark"])


@pytest.mark.parametrize("argv, says", [
    (["--runner=FlinkRunner"], "make flink-jobserver"),
    (["--runner=FlinkRunner", "--flink_job_server_jar=/nowhere/job-server.jar"],
     "make flink-jobserver"),
    (["--runner=PrismRunner"], "make prism"),
    (["--runner=PrismRunner", "--prism_location=/nowhere/prism"], "make prism"),
])
def test_prerequisites__a_missing_tool_says_what_to_run(argv, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        cli.check_prerequisites(check_flags(argv))


def test_prerequisites__a_flink_cluster_that_does_not_answer(tmp_path):
    jar = tmp_path / "job-server.jar"
    jar.write_bytes(b"")
    with pytest.raises(ConfigError, match="make flink-up"):
        cli.check_prerequisites(check_flags(["--runner=FlinkRunner", f"--flink_job_server_jar={jar}",
                                             "--flink_master=127.0.0.1:9"]))


def test_cli__bad_preset_is_one_line_and_exit_2(capsys):
    assert cli.main(["run", "--preset=nope", "--source=x", "--output=y"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown preset" in err


def test_run_help__groups_our_flags_before_beams(capsys):
    assert cli.main(["run", "--help"]) == 0
    text = capsys.readouterr().out
    order = [text.index(h) for h in ("sources and sinks:", "detection:", "streaming:",
                                     "Flink job server (FlinkRunner only):", "runner:",
                                     "Beam StandardOptions:")]
    assert order == sorted(order)
    assert "--preset NAME" in text and "--help-beam" in text


def test_beam_does_not_read_our_output_flag_as_one_of_its_own():
    # Beam 2.62 would take --output as --output_executable_path (prefix match):
    # the Flink job server then writes a jar over the output directory.
    from apache_beam.options.pipeline_options import PortableOptions
    options = check_flags(["--output=/tmp/out", "--runner=FlinkRunner"])
    assert options.view_as(PortableOptions).output_executable_path is None
    assert options.get_all_options()["output"] == "/tmp/out"


def test_versions__one_beam_version_everywhere():
    version = re.search(r'BEAM_VERSION = "([^"]+)"', open(os.path.join(ROOT, "setup.py")).read())
    assert tools.BEAM_VERSION == version.group(1)
    go_mod = open(os.path.join(ROOT, "tools", "prism", "go.mod")).read()
    assert f"github.com/apache/beam/sdks/v2 v{tools.BEAM_VERSION} " in go_mod
    makefile = open(os.path.join(ROOT, "Makefile")).read()
    assert f"FLINK_MINOR   := {tools.FLINK_MINOR}\n" in makefile
    assert f"FLINK_VERSION := {tools.FLINK_VERSION}\n" in makefile
    import apache_beam
    assert apache_beam.__version__ == tools.BEAM_VERSION
    assert tools.FLINK_MINOR in __import__("apache_beam.options.pipeline_options",
                                           fromlist=["x"]).FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS


def test_presets__every_preset_names_its_runner():
    for name, argv in PRESETS.items():
        assert sum(a.startswith("--runner=") for a in argv) == 1, name
