"""The stallwatch command: one-line errors, never a traceback."""

import pytest

from pipeline import cli


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
