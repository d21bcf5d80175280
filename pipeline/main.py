"""run(argv): options -> config -> build -> run, then the run summary."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import io, replay, tally
from pipeline.build import build
from pipeline.config import ConfigError, QoeConfig, to_config
from transforms.parse import METRICS_NAMESPACE


def check_flags(argv: Sequence[str]) -> PipelineOptions:
    """Parse argv as Beam + stallwatch options; an unknown flag is a ConfigError."""
    options = PipelineOptions(list(argv))
    known = options.get_all_options(drop_default=False)
    everything = options.get_all_options(drop_default=False, retain_unknown_options=True)
    unknown = sorted(set(everything) - set(known))
    if unknown:
        raise ConfigError(f"unknown option --{unknown[0]} (see 'stallwatch run --help')")
    return options


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

    Raises:
      ConfigError: a flag is unknown or has a value that cannot work.
    """
    options = check_flags(argv)
    cfg: QoeConfig = to_config(options)
    standard = options.view_as(StandardOptions)
    if standard.runner is None:
        standard.runner = "DirectRunner"
    if cfg.streaming:
        _check_replay(cfg, standard.runner)
    if cfg.local_output:
        io.clear_outputs(cfg.output)
    started = time.monotonic()
    pipeline = pipeline_factory(options=options)
    if cfg.streaming:
        source = _file_replay(cfg)
        with replay.ReplayService(source) as endpoint:
            build(pipeline, cfg, io.ReplayBeaconFiles(endpoint),
                  io.window_sinks(cfg.output, cfg.alerts_path))
            pipeline.run().wait_until_finish()
        totals = tally.totals_from_outputs(cfg.output, source.blank_lines)
    else:
        build(pipeline, cfg, io.ReadBeaconFiles(cfg.source_pattern),
              io.file_sinks(cfg.output, cfg.alerts_path))
        result = pipeline.run()
        result.wait_until_finish()
        totals = counters(result)
    summary = run_summary(totals, standard.runner, time.monotonic() - started)
    summary["mode"] = "streaming" if cfg.streaming else "batch"
    summary["source"] = cfg.source_pattern
    summary["output"] = cfg.output
    if cfg.local_output:
        with open(os.path.join(cfg.output, io.SUMMARY), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
    else:
        logging.info("run summary: %s", json.dumps(summary))
    return summary


def _check_replay(cfg: QoeConfig, runner: str) -> None:
    """A streaming run from files is a paced replay on the DirectRunner."""
    if runner not in ("DirectRunner", "BundleBasedDirectRunner"):
        raise ConfigError(f"--streaming from files replays on the DirectRunner only, not {runner}")
    if "://" in cfg.source_pattern or not cfg.local_output:
        raise ConfigError("--streaming replays local files to local files only: "
                          "use local paths or run in batch")


def _file_replay(cfg: QoeConfig) -> replay.FileReplay:
    # Past the last line, the watermark moves far enough for every view to
    # expire and every alert to close (nothing fires at +infinity here).
    drain_ms = (2 * cfg.inactivity_s + cfg.close_after_s + 60) * 1000
    return replay.FileReplay(cfg.source_pattern, cfg.replay_speed, cfg.max_lag_s * 1000,
                             drain_ms, cfg.replay_tick_s * 1000)


def quiet_beam_logs(level: Optional[int] = logging.WARNING) -> None:
    logging.getLogger().setLevel(level)
    for name in ("apache_beam", "root"):
        logging.getLogger(name).setLevel(level)
