"""The ``stallwatch`` command: run, generate, score, report, collect, receive.

Errors are one line on stderr with a non-zero exit code; set STALLWATCH_DEBUG=1
to see the traceback of an unexpected failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Callable, Optional, Sequence

from pipeline.errors import ConfigError

USAGE = """usage: stallwatch COMMAND [options]

commands:
  run       run the pipeline: --source=SOURCE --output=DIR [--alerts=SINK] [Beam options]
  generate  write a generated workload: --out=DIR [--viewers N] [--seed S] [--scenario NAME]
  score     compare a run's alerts with a workload's truth.json: --output=DIR --truth=FILE
  report    write DIR/report.html (self-contained) from a run's outputs: --output=DIR
  collect   the HTTP collector for players: --listen=127.0.0.1:8080 --sink=file://DIR|pubsub://...|kinesis://...
  receive   a webhook receiver that prints the notifications it gets: --listen=127.0.0.1:8099

'stallwatch COMMAND --help' describes a command's options."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):   # argparse prints usage + exits; we want one line
        raise ConfigError(message)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help that shows each flag's default, when it has one."""

    def _get_help_string(self, action) -> str:
        text = action.help or ""
        shown = not (action.default is None or action.default is False
                     or action.default == argparse.SUPPRESS)
        if shown and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _asks_help(argv: Sequence[str]) -> bool:
    return any(a in ("-h", "--help", "--help-beam") for a in argv)


def _run(argv: Sequence[str], expand: Optional[Callable] = None,
         check: Optional[Callable] = None) -> int:
    if "--help-beam" in argv:
        print(_beam_help(everything=True))
        return 0
    if _asks_help(argv):
        print(_run_help())
        return 0
    if expand is not None:
        argv = expand(argv)
    from pipeline import launch
    launch.quiet_beam_logs()
    result = launch.run(argv, check=check)
    output = result["output"]
    from pipeline.results import outputs, summary
    if os.path.isdir(output):
        print(summary.render(result, output, outputs.alerts(output)))
    else:
        print(json.dumps(result, indent=2))
    return 0


# Beam's option classes shown by `stallwatch run --help` (--help-beam: all).
_COMMON_BEAM = ("StandardOptions", "FlinkRunnerOptions", "PrismRunnerOptions")


class _Group:
    """An argparse group that also takes Beam's value-provider arguments."""

    def __init__(self, group):
        self._group = group

    def add_argument(self, *args, **kwargs):
        return self._group.add_argument(*args, **kwargs)

    add_value_provider_argument = add_argument


def _run_help() -> str:
    from pipeline.options import FlinkJobOptions, QoeOptions
    parser = _Parser(prog="stallwatch run", add_help=False, formatter_class=_DefaultsFormatter,
        usage=("stallwatch run --source=SOURCE --output=DIR [--preset=NAME | --runner=RUNNER] "
               "[--streaming] [options] [Beam options]"), description=(
        "Run the stallwatch pipeline on any Beam runner. stallwatch's own flags come "
        "first, then the Beam flags most runs use; 'stallwatch run --help-beam' lists "
        "every Beam flag."))
    QoeOptions._add_argparse_args(parser)
    FlinkJobOptions._add_argparse_args(parser)
    runner = parser.add_argument_group("runner").add_argument
    runner("--preset", metavar="NAME",
           help="Launch preset: direct, prism, flink-local, flink-cluster "
                "(flags given after it win; see 'python -m runners NAME').")
    runner("--runner", metavar="RUNNER", default="DirectRunner",
           help="DirectRunner, PrismRunner, FlinkRunner or DataflowRunner (docs/runners.md).")
    runner("--streaming", action="store_true",
           help="Run unbounded: a pubsub:// or kinesis:// source, or a paced replay of files "
                "on the DirectRunner; alerts as viewers stall.")
    dataflow = parser.add_argument_group("Dataflow (DataflowRunner only; docs/deploy.md)").add_argument
    dataflow("--project", help="Google Cloud project of the job.")
    dataflow("--region", help="Dataflow region, e.g. us-central1.")
    dataflow("--temp_location", help="gs:// path for temporary files (batch BigQuery loads).")
    dataflow("--dry_run", metavar="True", help="Translate the job without submitting it.")
    return parser.format_help() + "\n" + _beam_help(everything=False)


def _beam_help(everything: bool) -> str:
    from apache_beam.options import pipeline_options as beam_options
    from pipeline.options import FlinkJobOptions, QoeOptions
    parser = _Parser(prog="stallwatch run", add_help=False, usage=argparse.SUPPRESS)
    classes = [c for c in beam_options.PipelineOptions.__subclasses__()
               if c not in (QoeOptions, FlinkJobOptions)
               and (everything or c.__name__ in _COMMON_BEAM)]
    for cls in sorted(classes, key=lambda c: c.__name__):
        title = f"Beam {cls.__name__}"
        try:
            cls._add_argparse_args(_Group(parser.add_argument_group(title)))
        except argparse.ArgumentError:  # a flag two Beam classes share: shown once
            pass
    return parser.format_help()


def _generate(argv: Sequence[str]) -> int:
    from pipeline.generator import scenario, workload
    parser = _Parser(prog="stallwatch generate", description=(
        "Write a seeded, realistic beacon workload (NDJSON) and truth.json listing the "
        "injected faults."))
    parser.add_argument("--out", default=None,
                        help="Directory to write into (with --publish: where truth.json goes).")
    parser.add_argument("--viewers", type=int, default=None,
                        help="Audience size (default: the scenario's).")
    parser.add_argument("--seed", type=int, default=7, help="Random seed (default 7).")
    parser.add_argument("--scenario", default="demo", choices=sorted(scenario.SCENARIOS),
                        help="demo: faults, hard negatives and mess; clean: no mess; small: quick; "
                             "live-fault, live-outage: a live event with a broken segment or a CDN outage.")
    parser.add_argument("--publish", default=None,
                        help="Publish a live audience (event time = now) to "
                             "pubsub://projects/P/topics/T or kinesis://STREAM instead of files.")
    parser.add_argument("--rate", type=float, default=2.0,
                        help="With --publish: viewers joining per second (default 2).")
    parser.add_argument("--join_s", type=int, default=60,
                        help="With --publish: seconds during which viewers join (default 60).")
    parser.add_argument("--outage", action="store_true",
                        help="With --publish: cdn-b also fails for 2 minutes, a minute after the "
                             "last viewer joined (a delivery alert besides the content one).")
    args = parser.parse_args(list(argv))
    if args.publish:
        return _publish(args)
    if not args.out:
        raise ConfigError("the following arguments are required: --out (or --publish)")
    if args.viewers is not None and args.viewers < 20:
        raise ConfigError("--viewers must be at least 20 (the scenario's hard negatives need an audience)")
    truth = workload.generate(scenario.build(args.scenario, args.viewers), args.seed, args.out)
    print(f"wrote {truth['lines']:,} lines ({truth['input_records']:,} records, {truth['views']:,} views "
          f"by {truth['viewers']:,} viewers) to {args.out}/, faults in {args.out}/truth.json")
    return 0


def _publish(args) -> int:
    from pipeline.config import stream
    from pipeline.generator import live
    if args.rate <= 0 or args.join_s <= 0:
        raise ConfigError("--rate and --join_s must be > 0")
    target = stream("--publish", args.publish, want_topic=True)
    try:
        live.publish_live(target, args.rate, args.join_s, args.seed, args.out, outage=args.outage)
    except (LookupError, ConnectionError) as exc:
        raise ConfigError(str(exc)) from None
    return 0


def _require_run(output: str) -> None:
    """A directory without a run's summary is an error, not an empty run."""
    from pipeline.io import files
    if not os.path.exists(os.path.join(output, files.SUMMARY)):
        raise ConfigError(f"--output {output}: no {files.SUMMARY} there; run 'stallwatch run' first")


def _score(argv: Sequence[str]) -> int:
    from pipeline.results import outputs, score, summary
    parser = _Parser(prog="stallwatch score", description=(
        "Compare the alerts of a run with the truth.json of its generated workload."))
    parser.add_argument("--output", required=True, help="The run's output directory.")
    parser.add_argument("--truth", required=True, help="truth.json of the workload.")
    parser.add_argument("--strict", action="store_true",
                        help="Exit 1 unless every injected fault was handled as expected.")
    args = parser.parse_args(list(argv))
    try:
        with open(args.truth, encoding="utf-8") as f:
            truth = json.load(f)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read --truth {args.truth}: {exc}") from None
    try:
        score.check_truth(truth)
    except ValueError as exc:
        raise ConfigError(f"--truth {args.truth}: {exc}") from None
    _require_run(args.output)
    result = score.score(outputs.alerts(args.output), truth)
    if outputs.summary(args.output).get("mode") == "streaming":
        views = outputs.views(args.output, ["video_id", "viewer_id", "stalls",
                                                        "program_offset_ms"]).to_pylist()
        result["latency"] = score.detection_latency(outputs.alert_versions(args.output),
                                                    views, truth)
    with open(os.path.join(args.output, "score.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    print(summary.render_score(result))
    return 1 if args.strict and not result["all_ok"] else 0


def _report(argv: Sequence[str]) -> int:
    from pipeline.results import report
    parser = _Parser(prog="stallwatch report", description=(
        "Write OUTPUT/report.html: one self-contained HTML file (inline SVG charts, no "
        "scripts, no network) with QoE, time series, alerts and dead letters of a run."))
    parser.add_argument("--output", required=True, help="The run's output directory.")
    args = parser.parse_args(list(argv))
    _require_run(args.output)
    print(f"report: {os.path.abspath(report.write_report(args.output))}")
    return 0


def _listen(value: str) -> tuple[str, int]:
    """--listen's HOST:PORT (port 0: any free one); ConfigError otherwise."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"--listen must be HOST:PORT, got {value!r}")
    return host, int(port)


def _collect(argv: Sequence[str]) -> int:
    from pipeline.collector import server
    from pipeline.config import stream
    from pipeline.io.streams import uri as stream_uri
    parser = _Parser(prog="stallwatch collect", description=(
        "HTTP collector: POST /v1/beacons (beacon v1 JSON), POST /v1/cmcd (CMCD v2 event "
        "reports), GET /healthz. Writes one record per request to the sink; "
        "'stallwatch run --source=' reads them. SIGTERM/Ctrl-C drain and exit. docs/collector.md"))
    parser.add_argument("--listen", default="127.0.0.1:8080", help="HOST:PORT (default 127.0.0.1:8080; port 0: any free port).")
    parser.add_argument("--sink", required=True,
                        help="file://DIR (NDJSON files), pubsub://projects/P/topics/T or kinesis://STREAM.")
    parser.add_argument("--max_body_kb", type=int, default=256, help="Largest request body (default 256 KiB): 413 above.")
    parser.add_argument("--max_pending", type=int, default=20_000,
                        help="Records waiting for the sink before requests get 503 + Retry-After (default 20000).")
    parser.add_argument("--flush_ms", type=int, default=100, help="Group-commit interval (default 100 ms).")
    parser.add_argument("--cors_origins", default="*",
                        help="Comma-separated origins allowed to POST from a browser (default *).")
    parser.add_argument("--trust_forwarded", action="store_true",
                        help="Take the client address from X-Forwarded-For (behind a load balancer).")
    parser.add_argument("--viewer_salt", default=os.environ.get("STALLWATCH_VIEWER_SALT", "stallwatch"),
                        help="Salt of the hashed address + user agent viewer id of CMCD clients "
                             "(default $STALLWATCH_VIEWER_SALT or 'stallwatch').")
    args = parser.parse_args(list(argv))
    host, port = _listen(args.listen)
    for flag, value in (("--max_body_kb", args.max_body_kb), ("--max_pending", args.max_pending),
                        ("--flush_ms", args.flush_ms)):
        if value <= 0:
            raise ConfigError(f"{flag} must be > 0, got {value}")
    if stream_uri.is_stream(args.sink):
        sink = stream("--sink", args.sink, want_topic=True)
    elif "://" in args.sink and not args.sink.startswith("file://"):
        raise ConfigError(f"--sink must be file://DIR, pubsub://... or kinesis://..., got {args.sink!r}")
    else:
        sink = args.sink[len("file://"):] if args.sink.startswith("file://") else args.sink
    config = server.CollectorConfig(
        host=host.strip("[]"), port=port, sink=sink, max_body_bytes=args.max_body_kb * 1024,
        max_pending=args.max_pending, flush_ms=args.flush_ms,
        cors_origins=tuple(o.strip() for o in args.cors_origins.split(",") if o.strip()),
        trust_forwarded=args.trust_forwarded, viewer_salt=args.viewer_salt)
    try:
        return server.main(config)
    except (LookupError, ConnectionError) as exc:
        raise ConfigError(f"--sink {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.listen} or write the sink: {exc}") from None


def _receive(argv: Sequence[str]) -> int:
    import signal
    import threading
    from pipeline.io import notify, webhook
    parser = _Parser(prog="stallwatch receive", description=(
        "A webhook receiver on loopback for trying --notify: prints one line per request "
        "(and appends its body to --out), checks the signature when a secret is set "
        "(401 when it does not verify), answers 202. Ctrl-C stops it. docs/alerts.md"))
    parser.add_argument("--listen", default="127.0.0.1:8099",
                        help="HOST:PORT (default 127.0.0.1:8099).")
    parser.add_argument("--secret", default=os.environ.get(notify.SECRET_ENV),
                        help="Signature key (default $STALLWATCH_NOTIFY_SECRET; none: not checked).")
    parser.add_argument("--out", default=None, help="Append each request as a JSON line here.")
    args = parser.parse_args(list(argv))
    host, port = _listen(args.listen)

    def show(got: "webhook.Received") -> None:
        print(webhook.describe(got), flush=True)
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps({"at_s": got.at_s, "path": got.path, "status": got.status,
                                    "signed": got.signed, "body": got.body.decode("utf-8", "replace")})
                        + "\n")

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = webhook.WebhookServer(port, args.secret, webhook.always(202), show,
                                       host=host.strip("[]"))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.listen}: {exc}") from None
    with server:
        print(f"receiving on http://{host}:{server.port}/ "
              f"({'signatures checked' if args.secret else 'signatures not checked'})", flush=True)
        stop.wait()
    print(f"received {len(server.received)} requests", flush=True)
    return 0


COMMANDS = {"run": _run, "generate": _generate, "score": _score, "report": _report,
            "collect": _collect, "receive": _receive}


def main(argv: Optional[Sequence[str]] = None, expand: Optional[Callable] = None,
         check: Optional[Callable] = None) -> int:
    """The stallwatch command. For ``run``, ``expand(argv)`` rewrites argv
    first (runner presets) and ``check(options)`` may refuse the runner
    (its prerequisites on this machine): runners/cli.py gives both."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"stallwatch: unknown command {command!r}\n{USAGE}", file=sys.stderr)
        return 2
    from pipeline.results.accounting import AccountingError
    hooks = {"expand": expand, "check": check} if command == "run" and (expand or check) else {}
    try:
        return COMMANDS[command](rest, **hooks)
    except BrokenPipeError as exc:
        if _stdout_gone():           # `stallwatch run --help | head -1`: the reader left
            return 141
        return _failed(command, exc)
    except ConfigError as exc:
        print(f"stallwatch {command}: error: {exc}", file=sys.stderr)
        return 2
    except AccountingError as exc:
        print(f"stallwatch {command}: failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"stallwatch {command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the CLI's last line of defence: one line, not a traceback
        return _failed(command, exc)


def _failed(command: str, exc: Exception) -> int:
    if os.environ.get("STALLWATCH_DEBUG"):
        traceback.print_exc()
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    print(f"stallwatch {command}: failed: {type(exc).__name__}: {first[:300]} "
          "(set STALLWATCH_DEBUG=1 for the traceback)", file=sys.stderr)
    return 1


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader left; if so it now goes to
    /dev/null, so the interpreter's last flush at exit does not fail too."""
    try:
        sys.stdout.flush()
        return False
    except BrokenPipeError:
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return True


if __name__ == "__main__":
    sys.exit(main())
