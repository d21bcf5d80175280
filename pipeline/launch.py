"""run(argv): config -> one launcher -> build() -> the run's summary.

A launcher is one way to run: batch from files, a paced replay of files, a
stream on the DirectRunner, a stream on any other runner, or a Dataflow
submission. Each gives the source ``build()`` reads and waits for the job
its own way; ``launch()`` builds the graph once, around whichever it is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import threading
import time
from typing import Callable, Iterator, Optional, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipeline import flinkjob, workerpool
from pipeline.config import ConfigError, QoeConfig, parse
from pipeline.graph import build
from pipeline.io import directrunner, files, notify, replay
from pipeline.io.streams import feed, pubsub, read
from pipeline.io.streams.sinks import open_writer
from pipeline.io.streams.uri import PubSubUri
from pipeline.results import accounting, tally
from transforms import workerlogs
from transforms.parse import METRICS_NAMESPACE

# A streaming ReadStream run drains when this file appears in OUTPUT: the
# reader stops and the watermark walks to the end; the job then finishes (on a
# Flink cluster the launcher stops it with a savepoint: pipeline/flinkjob.py).
STOP_FILE = "_stop"


def run(argv: Sequence[str], pipeline_factory=beam.Pipeline,
        check: Optional[Callable[[PipelineOptions], None]] = None) -> dict:
    """Run the pipeline argv describes to completion and return its summary.

    ``check(options)`` may refuse the run before anything starts (the
    runner's prerequisites on this machine: runners/cli.py).

    Raises:
      ConfigError: a flag is unknown or has a value that cannot work.
      AccountingError: the run lost (or double-counted) records; its outputs
        stay in OUTPUT/_partial/ with the figures in run_summary.json.
    """
    options, cfg = parse(argv)
    if check is not None:
        check(options)
    return launch(options, cfg, pipeline_factory)


def launch(options: PipelineOptions, cfg: QoeConfig, pipeline_factory=beam.Pipeline) -> dict:
    """Run ``cfg``: everything is checked before any output is touched; a
    local run writes into OUTPUT/_partial/ and its files replace the previous
    run's in OUTPUT only once it finished and every record is accounted for."""
    workerlogs.install()      # LOOPBACK's in-process harness: no traceback for a hang-up at the end
    _prepare_runner(options, cfg)
    launcher = _launcher(cfg)
    launcher.check()
    with contextlib.ExitStack() as stack:
        if workerpool.wanted(options):
            stack.callback(workerpool.start(options))
        return _launch(options, cfg, launcher, pipeline_factory)


def _launch(options: PipelineOptions, cfg: QoeConfig, launcher: "_Launcher",
            pipeline_factory) -> dict:
    try:
        pipeline = pipeline_factory(options=options)
    except ValueError as exc:            # an unknown --runner; Dataflow's missing --project
        raise ConfigError(" ".join(line.strip() for line in str(exc).splitlines()
                                   if line.strip())) from None
    if not (launcher.submits and cfg.dry_run):
        _check_sink_streams(cfg)
    final, local = cfg.output, cfg.local_output and not launcher.submits
    if local:
        cfg = dataclasses.replace(cfg, output=files.start_staging(final))
        launcher.cfg = cfg
    sinks = _sinks(cfg)
    started = time.monotonic()
    with launcher.source() as source:
        build(pipeline, cfg, source, sinks)
        result = launcher.wait(pipeline.run())
    if launcher.submits:
        return launcher.submitted(result)
    written = tally.totals_from_outputs(cfg.output) if local else None
    summary = _summary(cfg, launcher, result, written, time.monotonic() - started)
    summary["output"] = final
    if local:
        with open(os.path.join(cfg.output, files.SUMMARY), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    else:
        logging.info("run summary: %s", json.dumps(summary))
    problem = accounting.verdict(summary["accounting"])
    if problem:
        where = f"; its outputs are in {cfg.output}" if local else ""
        raise accounting.AccountingError(problem + where)
    if local:
        files.finish_staging(cfg.output, final)
    return summary


def _prepare_runner(options: PipelineOptions, cfg: QoeConfig) -> None:
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "DirectRunner"
    if cfg.runner in read.DIRECT:
        directrunner.install()


def _launcher(cfg: QoeConfig) -> "_Launcher":
    """The launcher for cfg's source, mode and runner; ConfigError if none."""
    if cfg.source_stream:
        why = read.unsupported(cfg.runner, cfg.stop_at_latest)
        if why:
            raise ConfigError(why)
    if cfg.streaming and not cfg.source_stream:
        return _FileReplay(cfg)          # refuses every runner but the DirectRunner
    if cfg.runner in read.DATAFLOW:
        return _Dataflow(cfg)
    if cfg.source_stream and cfg.runner in read.DIRECT and cfg.streaming:
        return _DirectStream(cfg)
    if cfg.source_stream:
        return _Stream(cfg)
    return _Batch(cfg)


def counters(result: PipelineResult) -> dict[str, int]:
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
        **_notifications(totals),
        "runner": runner,
        "wall_time_s": round(wall_s, 2),
    }


def _notifications(totals: dict[str, int]) -> dict:
    """The notifications section of a run's summary (none without --notify)."""
    if "notify_versions" not in totals:
        return {}
    sent = {name.split(":", 1)[1]: n for name, n in sorted(totals.items())
            if name.startswith("notifications:")}
    return {"notifications": {"alert_versions": totals["notify_versions"],
                              "sent": sum(sent.values()), "by_notice": sent,
                              "retries": totals.get("notify_retries", 0),
                              "dead_letters": totals.get("notify_dead_letters", 0)}}


def _summary(cfg: QoeConfig, launcher: "_Launcher", result: PipelineResult,
             written: Optional[dict[str, int]], wall_s: float) -> dict:
    """The run's summary: its counters, each alert's final state counted from
    the files ``written`` (None: not local), and the accounting of every
    record read."""
    totals = counters(result)
    if launcher.blank_lines is not None:
        totals["blank_lines"] = launcher.blank_lines
    if written is not None:            # each alert's final state, not every one ever opened
        for cause in ("content", "delivery", "viewer"):
            totals[f"alerts:{cause}"] = written.get(f"alerts:{cause}", 0)
    summary = run_summary(totals, cfg.runner, wall_s)
    summary["mode"] = "streaming" if cfg.streaming else "batch"
    summary["source"] = cfg.source
    summary.update(launcher.extra)
    summary["accounting"] = accounting.reconcile(totals, written, launcher.records_read)
    return summary


def _check_sink_streams(cfg: QoeConfig) -> None:
    """The topics / streams alerts and dead letters go to exist and answer."""
    for stream in (cfg.alerts_stream, cfg.dead_letter_stream):
        if stream:
            _reachable(stream, lambda s=stream: open_writer(s).check())


def _sinks(cfg: QoeConfig) -> files.Sinks:
    """Files (windowed in streaming), plus alerts / dead letters published to
    streams, views / metrics to BigQuery and alert notices to webhooks."""
    written = (files.window_sinks(cfg.output, cfg.alerts_path, dead_letter_path=cfg.dead_letter_path)
               if cfg.streaming else
               files.file_sinks(cfg.output, cfg.alerts_path, cfg.dead_letter_path))
    sinks = files.with_tables(files.with_streams(written, cfg.alerts_stream, cfg.dead_letter_stream),
                              cfg.views_table, cfg.metrics_table, cfg.streaming)
    if not cfg.notify:
        return sinks
    return sinks._replace(notify=notify.Notify(
        cfg.notify, cfg.notify_ledger, cfg.notify_secret, cfg.notify_delivery, cfg.notify_causes,
        cfg.notify_pending_ms // 1000, cfg.notify_resolve_ms // 1000))


def _reachable(stream, probe: Callable[[], object]) -> None:
    """Run ``probe`` against a stream before the run: a stream that does not
    exist or cannot be reached is a flag error (one line, before OUTPUT is
    touched), not a client traceback."""
    try:
        probe()
    except (LookupError, ValueError, ConnectionError) as exc:
        raise ConfigError(f"{stream}: {exc}" if isinstance(exc, ConnectionError)
                          else str(exc)) from None
    except Exception as exc:  # the client's own connection errors
        raise ConfigError(f"{stream}: cannot reach it: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _Launcher:
    """One way to run. ``source()`` gives what build() reads (and whatever
    serves it, for as long as the job runs); ``wait()`` sees the job to its
    end. After the run: the records the launcher itself read (None: the
    pipeline's counters tell), blank lines skipped, and extra summary fields."""

    submits = False          # True: the job is submitted, not waited for

    def __init__(self, cfg: QoeConfig) -> None:
        self.cfg = cfg
        self.output = cfg.output             # OUTPUT itself, not its _partial/ staging
        self.records_read: Optional[int] = None
        self.blank_lines: Optional[int] = None
        self.extra: dict = {}

    def check(self) -> None:
        """Refuse the run before any output is touched."""

    @contextlib.contextmanager
    def source(self) -> Iterator[beam.PTransform]:
        raise NotImplementedError
        yield  # pragma: no cover

    def wait(self, result: PipelineResult) -> PipelineResult:
        result.wait_until_finish()
        return result

    def submitted(self, result: PipelineResult) -> dict:
        raise NotImplementedError


class _Batch(_Launcher):
    """Files, read once, on any runner."""

    def wait(self, result: PipelineResult) -> PipelineResult:
        return _wait(result, self.cfg.flink_master)

    @contextlib.contextmanager
    def source(self) -> Iterator[beam.PTransform]:
        yield files.ReadBeaconFiles(self.cfg.source_pattern)


class _FileReplay(_Launcher):
    """--streaming from files: a paced replay served to the DirectRunner."""

    def check(self) -> None:
        if self.cfg.runner not in read.DIRECT:
            raise ConfigError("--streaming from files replays on the DirectRunner only, "
                              f"not {self.cfg.runner}")
        if "://" in self.cfg.source_pattern or not self.cfg.local_output:
            raise ConfigError("--streaming replays local files to local files only: "
                              "use local paths or run in batch")

    @contextlib.contextmanager
    def source(self) -> Iterator[beam.PTransform]:
        cfg = self.cfg
        recording = replay.FileReplay(cfg.source_pattern, cfg.replay_speed, cfg.max_lag_ms,
                                      cfg.drain_ms, cfg.replay_tick_ms,
                                      step_ms=cfg.watermark_step_ms)
        with replay.ReplayService(recording) as endpoint:
            yield files.ReplayBeaconFiles(endpoint)
        self.records_read, self.blank_lines = recording.records, recording.blank_lines


class _FromStream(_Launcher):
    """A launcher whose source is a stream: it must exist and answer."""

    def check(self) -> None:
        stream = self.cfg.source_stream

        def probe() -> None:
            if isinstance(stream, PubSubUri):
                pubsub.check_service()       # else the client retries for a minute first
            read.open_reader(stream, None).close()

        _reachable(stream, probe)


class _Stream(_FromStream):
    """A stream read by ReadStream (Flink, Prism, the DirectRunner bounded).
    In streaming, the first Ctrl-C drains through OUTPUT/_stop."""

    @property
    def _stop_file(self) -> Optional[str]:
        if not (self.cfg.streaming and self.cfg.local_output):
            return None
        return os.path.join(self.output, STOP_FILE)

    @contextlib.contextmanager
    def source(self) -> Iterator[beam.PTransform]:
        stop_file = self._stop_file
        if stop_file and os.path.exists(stop_file):
            os.remove(stop_file)
        yield _read_stream(self.cfg, self.cfg.runner, stop_file=stop_file)
        self.extra["drain_s"] = _drained_s(stop_file)

    def wait(self, result: PipelineResult) -> PipelineResult:
        return _wait(result, self.cfg.flink_master, self._stop_file)


class _DirectStream(_FromStream):
    """A stream on the DirectRunner: a StreamFeed in this process, served to
    the runner over localhost. Ctrl-C (or SIGTERM) stops reading and drains:
    open views complete and alerts close, and the reader's positions are
    committed, so a restart resumes where this run stopped."""

    @contextlib.contextmanager
    def source(self) -> Iterator[beam.PTransform]:
        cfg = self.cfg
        try:
            reader = read.open_reader(cfg.source_stream, cfg.checkpoint)
        except (LookupError, ValueError) as exc:   # no such stream; a checkpoint of another one
            raise ConfigError(str(exc)) from None
        stream_feed = feed.StreamFeed(reader, cfg.stream_tick_ms, cfg.max_lag_ms, cfg.drain_ms,
                                      stop_at_latest=cfg.stop_at_latest,
                                      step_ms=cfg.watermark_step_ms)
        previous = _stop_on_signals(stream_feed.stop_requested)
        try:
            with replay.ReplayService(stream_feed) as endpoint:
                yield read.ReadBeacons(cfg.source_stream, "DirectRunner", endpoint)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            reader.close()
        if not stream_feed.finished:
            # The DirectRunner's TestStream reader thread died (its error is in
            # the log above) and the runner ended as if the stream had.
            raise RuntimeError(
                f"the runner stopped taking the stream after {stream_feed.records:,} records, "
                "before it ended (its TestStream reader failed, see the log above); outputs are "
                "partial. Nothing read after the last delivered bundle was committed: a restart "
                "resumes there")
        self.records_read = stream_feed.records
        self.extra.update(source_stats=dict(reader.stats), checkpoint=cfg.checkpoint)


class _Dataflow(_Launcher):
    """Dataflow: translate and submit, do not wait (a Flex Template launcher
    must return; a streaming job never ends). ``--dry_run=True`` translates
    the job without submitting it and reports what Dataflow would get."""

    submits = True

    @contextlib.contextmanager
    def source(self) -> Iterator[beam.PTransform]:
        yield (_read_stream(self.cfg, "DataflowRunner") if self.cfg.source_stream
               else files.ReadBeaconFiles(self.cfg.source_pattern))

    def wait(self, result: PipelineResult) -> PipelineResult:
        return result

    def submitted(self, result: PipelineResult) -> dict:
        cfg = self.cfg
        job = getattr(result, "job", None)
        summary = {"runner": "DataflowRunner", "mode": "streaming" if cfg.streaming else "batch",
                   "source": cfg.source, "output": cfg.output, "dry_run": cfg.dry_run}
        if job is not None:
            summary["job_type"] = str(job.proto.type)
            summary.update(translated(job.proto_pipeline))
        if not cfg.dry_run:
            summary["job_id"] = result.job_id()
        logging.info("submitted: %s", json.dumps(summary))
        return summary


def _read_stream(cfg: QoeConfig, runner: str, stop_file: Optional[str] = None) -> read.ReadBeacons:
    return read.ReadBeacons(cfg.source_stream, runner, checkpoint=cfg.checkpoint,
                            max_lag_ms=cfg.max_lag_ms, stop_at_latest=cfg.stop_at_latest,
                            stop_file=stop_file, drain_ms=cfg.drain_ms,
                            drain_step_ms=cfg.watermark_step_ms)


def _drained_s(stop_file: Optional[str]) -> Optional[float]:
    """Seconds from the stop request to now (the job's end), if one was made."""
    if stop_file and os.path.exists(stop_file):
        return round(time.time() - os.path.getmtime(stop_file), 1)
    return None


def _wait(result: PipelineResult, flink_master: Optional[str] = None,
          stop_file: Optional[str] = None) -> PipelineResult:
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


def quiet_beam_logs(level: Optional[int] = None) -> None:
    """Beam's INFO logs are noise to a user; STALLWATCH_LOG_LEVEL=INFO (or
    DEBUG) brings them back, the Flink job server's output included."""
    if level is None:
        level = getattr(logging, os.environ.get("STALLWATCH_LOG_LEVEL", "WARNING").upper(),
                        logging.WARNING)
    logging.getLogger().setLevel(level)
    for name in ("apache_beam", "root"):
        logging.getLogger(name).setLevel(level)
