"""The stallwatch command: one-line errors, never a traceback."""

import subprocess
import sys

import pytest

from pipeline import cli
from tests import ROOT



def run_cli(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["run"], "stallwatch run: error: --source is required"),
    (["run", "--source=pubsub://projects/p/subscriptions/sub", "--output=/tmp/x"],
     "is a stream: add --streaming"),
    (["run", "--source=kinesis://beacons", "--output=/tmp/x", "--stop_at_latest",
      "--runner=FlinkRunner"], "--stop_at_latest does not work on Flink"),
    (["run", "--min_viewers=lots"], "argument --min_viewers: invalid int value: 'lots'"),
    (["run", "--source=/nope/*.ndjson", "--output=/tmp/x"], "no files match"),
    (["run", "--bogus=1"], "unknown option --bogus"),
    (["run", "--source=/tmp/x", "--output=/tmp/y", "--streaming=yes"],
     "argument --streaming: ignored explicit argument 'yes'"),
    (["run", "--source=/tmp/x", "--output=/tmp/y", "--max_bundle_size=many"],
     "argument --max_bundle_size: invalid int value: 'many'"),
    (["generate"], "the following arguments are required: --out"),
    (["generate", "--out=/tmp/x", "--scenario=nope"], "invalid choice: 'nope'"),
    (["generate", "--out=/tmp/x", "--viewers=3"], "--viewers must be at least 20"),
    (["score", "--output=/tmp", "--truth=/nope.json"], "cannot read --truth"),
])
def test_cli__bad_input_is_one_line_exit_2(capsys, argv, message):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_cli__unknown_command(capsys):
    code, _, err = run_cli(capsys, "launch")
    assert code == 2 and "unknown command 'launch'" in err


def test_cli__help(capsys):
    assert run_cli(capsys, "--help")[0] == 0
    code, out, _ = run_cli(capsys, "run", "--help")
    assert code == 0 and "--source" in out and "--inactivity_s" in out


def test_cli__unexpected_failure_is_one_line(capsys, monkeypatch):
    def boom(argv):
        raise RuntimeError("disk on fire\nsecond line")
    monkeypatch.setitem(cli.COMMANDS, "run", boom)
    code, _, err = run_cli(capsys, "run")
    assert code == 1 and err.count("\n") == 1
    assert "failed: RuntimeError: disk on fire" in err and "Traceback" not in err


def test_cli__a_truth_file_that_is_not_a_workloads_is_one_line(capsys, tmp_path):
    for text, says in (('{"x": 1}', "no 'faults' list"),
                       ('{"faults": [{"kind": "content_fault"}]}', "'expect' must be one of"),
                       ('{"faults": [{"kind": "k", "expect": "content"}]}',
                        "fault 0 (content): missing video_id, start_ms, end_ms, rendition")):
        truth = tmp_path / "truth.json"
        truth.write_text(text)
        code, _, err = run_cli(capsys, "score", f"--output={tmp_path}", f"--truth={truth}")
        assert code == 2 and says in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("source, env, says", [
    ("kinesis://beacons?endpoint=http://127.0.0.1:1", {}, "cannot reach it"),
    ("pubsub://projects/proj/topics/beacons", {"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"},
     "no Pub/Sub emulator answers at PUBSUB_EMULATOR_HOST=127.0.0.1:1"),
    ("pubsub://projects/proj/topics/beacons", {"PUBSUB_EMULATOR_HOST": None,
                                               "GOOGLE_APPLICATION_CREDENTIALS": "/nonexistent"},
     "PUBSUB_EMULATOR_HOST"),
])
def test_cli__an_unreachable_stream_is_one_line_exit_2(capsys, monkeypatch, tmp_path,
                                                      source, env, says):
    for name, value in env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    code, _, err = run_cli(capsys, "run", f"--source={source}", f"--output={tmp_path}",
                           "--streaming")
    assert code == 2 and says in err and len(err.strip().splitlines()) == 1


def test_cli__dataflow_without_its_flags_names_every_missing_one(capsys, tmp_path):
    (tmp_path / "a.ndjson").write_text("{}\n")
    code, _, err = run_cli(capsys, "run", f"--source={tmp_path}", f"--output={tmp_path}/out",
                           "--runner=DataflowRunner")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "Missing required option: project" in err and "region" in err


def _stallwatch(*argv, stdout=subprocess.PIPE):
    return subprocess.run([sys.executable, "-m", "runners.cli", *argv], stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=120, cwd=ROOT)


def test_cli__an_unknown_flag_is_the_only_line_on_stderr():
    done = _stallwatch("run", "--bogus")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "stallwatch run: error: unknown option --bogus (see 'stallwatch run --help')"]


def test_cli__help_into_a_closed_pipe_is_not_an_error():
    shell = subprocess.run(f"{sys.executable} -m runners.cli run --help | head -1",
                           shell=True, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert shell.stdout.startswith("usage: stallwatch run") and "Error" not in shell.stderr


def test_cli__run_help_shows_defaults_and_the_runner_flags():
    text = _stallwatch("run", "--help").stdout
    assert "--inactivity_s INACTIVITY_S" in text and "(default: 3600)" in text
    ours = text[:text.index("Beam StandardOptions:")]
    assert "--runner RUNNER" in ours and "--streaming" in ours and "--project" in ours


def test_cli__streaming_from_files_is_refused_on_dataflow_as_on_every_runner_but_direct(
        capsys, tmp_path):
    (tmp_path / "a.ndjson").write_text("{}\n")
    code, _, err = run_cli(capsys, "run", f"--source={tmp_path}", "--output=gs://b/out",
                           "--streaming", "--runner=DataflowRunner", "--project=p",
                           "--region=r", "--temp_location=gs://b/t")
    assert code == 2 and "replays on the DirectRunner only, not DataflowRunner" in err


def test_cli__a_broken_pipe_that_is_not_stdout_is_a_failure(capsys, monkeypatch):
    def boom(argv):
        raise BrokenPipeError(32, "the job server hung up")
    monkeypatch.setitem(cli.COMMANDS, "run", boom)
    code, _, err = run_cli(capsys, "run")
    assert code == 1 and "failed: BrokenPipeError" in err
