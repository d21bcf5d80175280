"""run(argv): options -> config -> build -> run, then the run summary."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options import pipeline_options as beam_options
from apache_beam.options.pipeline_options import (DebugOptions, PipelineOptions, StandardOptions,
                                                  TestOptions)

from pipeline.results import accounting, tally
from pipeline.io import directrunner, files, replay
from pipeline import flinkjob
from pipeline.io.streams import feed, read
from pipeline.io.streams.sinks import open_writer
from pipeline.graph import build
from pipeline.config import ConfigError, QoeConfig, to_config
from transforms import workerlogs
from transforms.parse import METRICS_NAMESPACE


def check_flags(argv: Sequence[str]) -> PipelineOptions:
    """Parse argv as Beam + stallwatch options; an unknown flag, or a value
    Beam's parser refuses, is a ConfigError (not argparse's usage dump and exit)."""
    options = PipelineOptions(list(argv))
    with _beam_parse_errors_raise():
        known = options.get_all_options(drop_default=False)
        everything = options.get_all_options(drop_default=False, retain_unknown_options=True)
    unknown = sorted(set(everything) - set(known))
    if unknown:
        raise ConfigError(f"unknown option --{unknown[0]} (see 'stallwatch run --help')")
    _pin_prefixed_options(options, argv)
    return options


@contextlib.contextmanager
def _beam_parse_errors_raise():
    """Beam's option parser reports a bad value (``--streaming=yes``) through
    argparse's ``error``: the whole usage of every Beam option, then exit 2.
    While flags are checked, its error raises a one-line ConfigError instead."""
    parser_class = beam_options._BeamArgumentParser  # pylint: disable=protected-access

    def error(_parser, message: str):
        raise ConfigError(f"{message} (see 'stallwatch run --help')")

    own = parser_class.__dict__.get("error")
    parser_class.error = error
    try:
        yield
    finally:
        if own is None:
            del parser_class.error
        else:
            parser_class.error = own


def _pin_prefixed_options(options: PipelineOptions, argv: Sequence[str]) -> None:
    """Keep Beam from reading our flags as abbreviations of its own.

    Beam 2.62's ``view_as(SomeOptions)`` parses argv with only that class's
    flags and argparse's prefix matching on, so ``--output=DIR`` becomes
    PortableOptions' ``--output_executable_path=DIR`` and the Flink job
    server writes a jar over the output directory instead of running the job.
    Every option named longer than a flag we were given, and not given
    itself, is pinned to its default before any view is taken.
    """
    given = {arg[2:].split("=", 1)[0] for arg in argv if arg.startswith("--")}
    defaults = PipelineOptions([]).get_all_options(drop_default=False)
    for name, default in defaults.items():
        if name not in given and any(name.startswith(flag) for flag in given):
            options._all_options[name] = default  # pylint: disable=protected-access


def counters(result: beam.runners.runner.PipelineResult) -> dict[str, int]:
    """stallwatch's counters from a finished pipeline, summed over steps."""
    totals: dict[str, int] = {}
    query = result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))
    for counter in query["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + int(value or 0)
    return totals


def run_summary(totals: dict[str, int], runner: str, wall_s: float) -> dict:
    by_reason = {name.split(":", 1)[1]: n for name, n in sorted(totals.items())
                 if name.startswith("dead_letter:")}
    alerts = {name.split(":", 1)[1]: n for name, n in sorted(totals.items())
              if name.startswith("alerts:")}
    return {
        "input_records": totals.get("input_records", 0),
        "parsed_events": totals.get("parsed_events", 0),
        "dead_letters": totals.get("dead_letters", 0),
        "dead_letters_by_reason": by_reason,
        "duplicates_dropped": totals.get("duplicates_dropped", 0),
        "late_beacons": totals.get("late_beacons", 0),
        "blank_lines": totals.get("blank_lines", 0),
        "views": totals.get("views", 0),
        "view_updates": totals.get("view_updates", 0),
        "alerts": {cause: alerts.get(cause, 0) for cause in ("content", "delivery", "viewer")},
        "runner": runner,
        "wall_time_s": round(wall_s, 2),
    }


def run(argv: Sequence[str], pipeline_factory=beam.Pipeline) -> dict:
    """Run the pipeline described by argv to completion and return its summary.

    Everything is checked before any output is touched; a local run writes
    into OUTPUT/_partial/ and its files replace the previous run's in OUTPUT
    only once it finished and every record is accounted for.

    Raises:
      ConfigError: a flag is unknown or has a value that cannot work.
      AccountingError: the run lost (or double-counted) records; its outputs
        stay in OUTPUT/_partial/ with the figures in run_summary.json.
    """
    options = check_flags(argv)
    workerlogs.install()      # LOOPBACK's in-process harness: no traceback for a hang-up at the end
    cfg: QoeConfig = to_config(options)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "DirectRunner"
    runner = read.runner_name(standard.runner)
    if runner in read.DIRECT:
        directrunner.install()
    if "use_loopback_process_worker" in (options.view_as(DebugOptions).experiments or []):
        # Beam's worker pool starts the workers as `python` from PATH: this one.
        os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]
    if cfg.source_stream:
        why = read.unsupported(cfg.source_stream, runner, cfg.stop_at_latest)
        if why:
            raise ConfigError(why)
    elif cfg.streaming:
        _check_replay(cfg, runner)
    dry_run = options.view_as(TestOptions).dry_run
    try:
        pipeline = pipeline_factory(options=options)
    except ValueError as exc:            # e.g. an unknown --runner
        raise ConfigError(str(exc).strip().splitlines()[0]) from None
    if runner in read.DATAFLOW:
        return _submit(pipeline, cfg, options, dry_run)
    if cfg.source_stream:
        _check_stream(cfg.source_stream)
    sinks = _sinks(cfg)                  # checks the alert / dead-letter streams exist
    final = cfg.output
    if cfg.local_output:
        cfg = dataclasses.replace(cfg, output=files.start_staging(final))
        sinks = _sinks(cfg, check_streams=False)
    started = time.monotonic()
    extra: dict = {}
    read_count, blank = None, None
    if cfg.source_stream and runner in read.DIRECT and cfg.streaming:
        result, read_count, extra = _run_stream(pipeline, cfg, sinks)
    elif cfg.source_stream:
        stop_file = os.path.join(final, STOP_FILE) if cfg.streaming and cfg.local_output else None
        if stop_file and os.path.exists(stop_file):
            os.remove(stop_file)
        build(pipeline, cfg, _stream_source(cfg, runner, stop_file), sinks)
        result = _wait(pipeline.run(), _flink_cluster(options, runner), stop_file)
        extra["drain_s"] = _drained_s(stop_file)
    elif cfg.streaming:
        source = _file_replay(cfg)
        with replay.ReplayService(source) as endpoint:
            build(pipeline, cfg, files.ReplayBeaconFiles(endpoint), sinks)
            result = pipeline.run()
            result.wait_until_finish()
        read_count, blank = source.records, source.blank_lines
    else:
        build(pipeline, cfg, files.ReadBeaconFiles(cfg.source_pattern), sinks)
        result = _wait(pipeline.run(), _flink_cluster(options, runner))
    totals = counters(result)
    if blank is not None:
        totals["blank_lines"] = blank
    written = tally.totals_from_outputs(cfg.output) if cfg.local_output else None
    if written is not None:            # each alert's final state, not every one ever opened
        for cause in ("content", "delivery", "viewer"):
            totals[f"alerts:{cause}"] = written.get(f"alerts:{cause}", 0)
    summary = run_summary(totals, runner, time.monotonic() - started)
    summary["mode"] = "streaming" if cfg.streaming else "batch"
    summary["source"] = cfg.source_stream or cfg.source_pattern
    summary.update(extra)
    summary["accounting"] = accounting.reconcile(totals, written, read_count)
    summary["output"] = final
    if cfg.local_output:
        with open(os.path.join(cfg.output, files.SUMMARY), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    else:
        logging.info("run summary: %s", json.dumps(summary))
    problem = accounting.verdict(summary["accounting"])
    if problem:
        where = f"; its outputs are in {cfg.output}" if cfg.local_output else ""
        raise accounting.AccountingError(problem + where)
    if cfg.local_output:
        files.finish_staging(cfg.output, final)
    return summary


def _check_stream(uri: str) -> None:
    """A stream source that does not exist or cannot be reached is a flag
    error, found before the run (and before OUTPUT is touched)."""
    try:
        read.open_reader(uri, None).close()
    except (LookupError, ValueError) as exc:
        raise ConfigError(str(exc)) from None
    except Exception as exc:  # the client's own connection errors: one line, not a traceback
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--source {uri}: cannot reach it: {first}") from None


def _stream_source(cfg: QoeConfig, runner: str,
                   stop_file: Optional[str] = None) -> read.ReadBeacons:
    return read.ReadBeacons(cfg.source_stream, runner, checkpoint=cfg.checkpoint,
                            max_lag_ms=cfg.max_lag_s * 1000, stop_at_latest=cfg.stop_at_latest,
                            stop_file=stop_file, drain_ms=_drain_ms(cfg),
                            drain_step_ms=cfg.watermark_step_ms)


# A streaming run from a stream drains when this file appears in OUTPUT: the
# reader stops, and the job finishes by itself once everything is written.
STOP_FILE = "_stop"


def _drained_s(stop_file: Optional[str]) -> Optional[float]:
    """Seconds from the stop request to now (the job's end), if one was made."""
    if stop_file and os.path.exists(stop_file):
        return round(time.time() - os.path.getmtime(stop_file), 1)
    return None


def _wait(result: beam.runners.runner.PipelineResult, flink_master: Optional[str] = None,
          stop_file: Optional[str] = None) -> beam.runners.runner.PipelineResult:
    """Wait for the job. With a ``stop_file`` (a streaming read), the first
    Ctrl-C / SIGTERM creates it: the stream reader stops reading, the
    watermark goes to the end, every view completes and alert closes, the
    files are written and the job finishes, all read records accounted for
    (on a Flink cluster the launcher then stops the drained job with a
    savepoint: pipeline/flinkjob.py). Otherwise, or on a second signal, the
    job is cancelled (a job on a Flink cluster would otherwise go on without
    this process, its LOOPBACK workers gone)."""
    # Ours, not Beam 2.62's: its job-server SIGINT handler has the wrong
    # signature and dies with a TypeError, leaving the job running.
    main_thread = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM)
    job = flinkjob.FlinkJob(flink_master, getattr(result, "_job_id", "") or "") \
        if flink_master else None

    def drain_or_cancel(signum, frame):
        if stop_file and not os.path.exists(stop_file):
            logging.warning("stopping: the reader stops, the job drains and finishes "
                            "(interrupt again to cancel it)")
            with open(stop_file, "w", encoding="utf-8") as marker:
                marker.write(f"stop requested by signal {signum}\n")
            return
        raise KeyboardInterrupt

    previous = ({s: signal.signal(s, drain_or_cancel) for s in signals} if main_thread
                else {})
    if job and stop_file:
        threading.Thread(target=flinkjob.finish_when_drained, args=(job, stop_file),
                         name="finish-when-drained", daemon=True).start()
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        logging.warning("interrupted: cancelling the job")
        try:
            result.cancel()
        except Exception as exc:  # the job may already be gone
            logging.warning("cancel failed: %s", exc)
        if job:
            try:
                job.cancel()
            except OSError as exc:
                logging.warning("could not cancel the job on Flink at %s: %s", flink_master, exc)
        raise
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return result


def _flink_cluster(options: PipelineOptions, runner: str) -> Optional[str]:
    """The REST address of the Flink cluster a FlinkRunner job goes to, if any."""
    if runner != "FlinkRunner":
        return None
    master = options.get_all_options().get("flink_master") or "[auto]"
    return None if master.startswith("[") else master


def _submit(pipeline: beam.Pipeline, cfg: QoeConfig, options: PipelineOptions,
            dry_run: bool) -> dict:
    """Dataflow: translate and submit, do not wait (a Flex Template launcher
    must return; a streaming job never ends). ``--dry_run=True`` translates
    the job without submitting it and reports what Dataflow would get."""
    source = (_stream_source(cfg, "DataflowRunner") if cfg.source_stream
              else files.ReadBeaconFiles(cfg.source_pattern))
    build(pipeline, cfg, source, _sinks(cfg, check_streams=not dry_run))
    result = pipeline.run()
    job = getattr(result, "job", None)
    summary = {"runner": "DataflowRunner", "mode": "streaming" if cfg.streaming else "batch",
               "source": cfg.source_stream or cfg.source_pattern, "output": cfg.output,
               "dry_run": bool(dry_run)}
    if job is not None:
        summary["job_type"] = str(job.proto.type)
        summary.update(translated(job.proto_pipeline))
    if not dry_run:
        summary["job_id"] = result.job_id()
    logging.info("submitted: %s", json.dumps(summary))
    return summary


def translated(proto) -> dict:
    """What a runner API pipeline holds: primitive transform URNs, the
    splittable DoFns (ParDos with a restriction coder), window functions and
    triggers (for a dry run's summary and its tests)."""
    from apache_beam.portability import common_urns
    from apache_beam.portability.api import beam_runner_api_pb2
    transforms = proto.components.transforms.values()
    strategies = proto.components.windowing_strategies.values()
    splittable = []
    for t in transforms:
        if t.spec.urn == common_urns.primitives.PAR_DO.urn:
            payload = beam_runner_api_pb2.ParDoPayload.FromString(t.spec.payload)
            if payload.restriction_coder_id:
                splittable.append(t.unique_name)
    return {
        "transform_urns": sorted({t.spec.urn for t in transforms if t.spec.urn}),
        "splittable_dofns": sorted(splittable),
        "window_fns": sorted({w.window_fn.urn for w in strategies}),
        "triggers": sorted({w.trigger.WhichOneof("trigger") for w in strategies}),
        "transforms": len(proto.components.transforms),
    }


def _check_replay(cfg: QoeConfig, runner: str) -> None:
    """A streaming run from files is a paced replay on the DirectRunner."""
    if runner not in ("DirectRunner", "BundleBasedDirectRunner"):
        raise ConfigError(f"--streaming from files replays on the DirectRunner only, not {runner}")
    if "://" in cfg.source_pattern or not cfg.local_output:
        raise ConfigError("--streaming replays local files to local files only: "
                          "use local paths or run in batch")


def _sinks(cfg: QoeConfig, check_streams: bool = True) -> files.Sinks:
    """Files (windowed in streaming), plus alerts / dead letters published to
    stream URIs (checked to exist first) and views / metrics to BigQuery."""
    for uri in (cfg.alerts_stream, cfg.dead_letter_stream):
        if uri and check_streams:
            try:
                open_writer(uri).check()
            except LookupError as exc:
                raise ConfigError(str(exc)) from None
    written = (files.window_sinks(cfg.output, cfg.alerts_path, dead_letter_path=cfg.dead_letter_path)
             if cfg.streaming else
             files.file_sinks(cfg.output, cfg.alerts_path, cfg.dead_letter_path))
    return files.with_tables(files.with_streams(written, cfg.alerts_stream, cfg.dead_letter_stream),
                             cfg.views_table, cfg.metrics_table, cfg.streaming)


def _drain_ms(cfg: QoeConfig) -> int:
    # Past the last record, the watermark moves far enough for every view to
    # expire and every alert to close (nothing fires at +infinity here).
    return (2 * cfg.inactivity_s + cfg.close_after_s + 60) * 1000


def _run_stream(pipeline: beam.Pipeline, cfg: QoeConfig,
                sinks: files.Sinks) -> tuple[beam.runners.runner.PipelineResult, int, dict]:
    """A stream on the DirectRunner: a StreamFeed in this process, served to
    the runner over localhost. Ctrl-C (or SIGTERM) stops reading, drains:
    open views complete and alerts close, and the reader's positions are
    committed, so a restart resumes where this run stopped. Returns the
    result, the records the feed delivered, and the reader's figures."""
    try:
        reader = read.open_reader(cfg.source_stream, cfg.checkpoint)
    except (LookupError, ValueError) as exc:   # no such stream; a checkpoint of another one
        raise ConfigError(str(exc)) from None
    stream_feed = feed.StreamFeed(reader, int(cfg.stream_tick_s * 1000), cfg.max_lag_s * 1000,
                                  _drain_ms(cfg), stop_at_latest=cfg.stop_at_latest,
                                  step_ms=cfg.watermark_step_ms)
    previous = _stop_on_signals(stream_feed.stop_requested)
    try:
        with replay.ReplayService(stream_feed) as endpoint:
            build(pipeline, cfg, read.ReadBeacons(cfg.source_stream, "DirectRunner", endpoint), sinks)
            result = pipeline.run()
            result.wait_until_finish()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        reader.close()
    if not stream_feed.finished:
        # The DirectRunner's TestStream reader thread died (its error is in the
        # log above) and the runner ended as if the stream had: not a result.
        raise RuntimeError(
            f"the runner stopped taking the stream after {stream_feed.records:,} records, "
            "before it ended (its TestStream reader failed, see the log above); outputs are "
            "partial. Nothing read after the last delivered bundle was committed: a restart "
            "resumes there")
    return result, stream_feed.records, {"source_stats": dict(reader.stats),
                                         "checkpoint": cfg.checkpoint}


def _stop_on_signals(stop: threading.Event) -> dict:
    """The first SIGINT/SIGTERM asks the feed to stop (the pipeline then
    drains and finishes); a second one aborts. Not a KeyboardInterrupt in
    wait_until_finish: the DirectRunner shuts its workers down on that, and
    what was still in flight would be lost. Returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(_signum, _frame):
        if stop.is_set():
            raise KeyboardInterrupt
        logging.warning("stopping: reading ends, the pipeline drains (interrupt again to abort)")
        stop.set()

    return {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}


def _file_replay(cfg: QoeConfig) -> replay.FileReplay:
    return replay.FileReplay(cfg.source_pattern, cfg.replay_speed, cfg.max_lag_s * 1000,
                             _drain_ms(cfg), cfg.replay_tick_s * 1000,
                             step_ms=cfg.watermark_step_ms)


def quiet_beam_logs(level: Optional[int] = None) -> None:
    """Beam's INFO logs are noise to a user; STALLWATCH_LOG_LEVEL=INFO (or
    DEBUG) brings them back, the Flink job server's output included."""
    if level is None:
        level = getattr(logging, os.environ.get("STALLWATCH_LOG_LEVEL", "WARNING").upper(),
                        logging.WARNING)
    logging.getLogger().setLevel(level)
    for name in ("apache_beam", "root"):
        logging.getLogger(name).setLevel(level)
