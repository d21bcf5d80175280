"""The mutation check: break the code on purpose and see which test fails.

    python -m tools.mutate [--only NAME ...] [--list]      (make mutate)

Each mutation replaces one exact snippet of one file in a scratch copy of the
tracked files, then runs the unit tests (``pytest -x -m "not integration"``)
and, if they all pass, the integration tests named for it. It reports the
first test that failed; a mutation no test catches **survived**, and the exit
code is 1. The working tree is never touched.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT_TESTS = ("-m", "not integration", "tests")


@dataclasses.dataclass(frozen=True)
class Mutation:
    name: str
    path: str
    old: str
    new: str
    integration: tuple[str, ...] = ()     # run when no unit test fails


MUTATIONS = (
    Mutation("percentile: lower value instead of linear interpolation", "transforms/metrics.py",
             "return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)",
             "return sorted_values[lo]", ("tests/integration/test_reference.py",)),
    Mutation("EBVS: a failed startup counts as exit before start", "transforms/viewstate.py",
             "exited_before_start=play_requested and not self.first_frame and not self.failure,",
             "exited_before_start=play_requested and not self.first_frame,",
             ("tests/integration/test_reference.py",)),
    Mutation("seeks: waiting during a seek is a stall", "transforms/viewstate.py",
             "if self.state is _S.PLAYING or starved or (",
             "if self.state in (_S.PLAYING, _S.SEEKING) or starved or (",
             ("tests/integration/test_reference.py",)),
    Mutation("dedupe: seq is not a key (content only)", "transforms/viewstate.py",
             "        elif b.seq is not None:\n            key = (\"seq\", b.seq)",
             "        elif False:\n            key = (\"seq\", b.seq)",
             ("tests/integration/test_reference.py",)),
    Mutation("notify: every open version is news", "transforms/notices.py",
             "        return [], dataclasses.replace(seen, closing_since_ms=None)\n"
             "    if alert.status is AlertStatus.CLOSED:",
             "        return [Notice.WORSE], told\n    if alert.status is AlertStatus.CLOSED:"),
    Mutation("notify: replayed versions are not stale", "transforms/notices.py",
             "return last is not None and (_as_of(alert), alert.version) <= (last.as_of_ms, last.version)",
             "return False"),
    Mutation("notify: the ledger is never read", "pipeline/io/notify.py",
             "            last = self._ledger.read(target, alert.alert_id)", "            pass"),
    Mutation("notify: Retry-After ignored", "pipeline/io/notify.py",
             "        wait = retry_after_s(hint, now())", "        wait = None"),
    Mutation("notify: 4xx retried like 5xx", "pipeline/io/notify.py",
             "            if status != 429 and status < 500:", "            if False:"),
    Mutation("retraction: a finding that is gone is never retracted", "transforms/alerting.py",
             "elif previous.status is not AlertStatus.RETRACTED:", "elif False:"),
    Mutation("delivery windows explain no stall", "transforms/alerting.py",
             "    return any(str(dim(dimension)) == value",
             "    return False and any(str(dim(dimension)) == value",
             ("tests/integration/test_end_to_end.py",)),
    Mutation("score: precision 1.0 when nothing was alerted", "pipeline/results/score.py",
             "return _ratio(sum(a[\"alert_id\"] in matched for a in raised), len(raised))",
             "return _ratio(sum(a[\"alert_id\"] in matched for a in raised), len(raised))"
             " if raised else 1.0"),
    Mutation("CMCD: sta=r (rebuffering) read as playing", "transforms/cmcd.py",
             "\"r\": K.WAITING,", "\"r\": K.PLAYING,"),
    Mutation("content: 3 viewers are enough", "transforms/thresholds.py",
             "min_viewers: int = 5", "min_viewers: int = 3", ("tests/integration/test_end_to_end.py",)),
    Mutation("content: no Bonferroni correction over a video's windows", "transforms/content.py",
             "p < t.content_alpha / max(1, counts.covered)", "p < t.content_alpha",
             ("tests/integration/test_end_to_end.py",)),
    Mutation("metrics: bucketed by view start, not end", "transforms/metrics.py",
             "minute = view.end_ms // minute_ms * minute_ms",
             "minute = view.start_ms // minute_ms * minute_ms", ("tests/integration/test_reference.py",)),
    Mutation("exposure: a playhead jump with no seek counts as played", "transforms/viewstate.py",
             "if 0 < moved <= elapsed * _MAX_RATE + _JUMP_SLACK_MS:", "if 0 < moved:",
             ("tests/integration/test_reference.py",)),
    Mutation("live: stalls stay on the playhead timeline", "transforms/facts.py",
             "at = view.program_offset_ms or 0", "at = 0",
             ("tests/integration/test_streaming_replay.py",)),
    Mutation("live: latency added to event time, not subtracted", "transforms/viewstate.py",
             "self.latency_offsets.append(clock(b) - b.live_latency_ms - ph)",
             "self.latency_offsets.append(clock(b) + b.live_latency_ms - ph)"),
    Mutation("delivery: affected viewers over the whole outage", "transforms/delivery.py",
             "affected_viewers=peak.k, exposed_viewers=peak.n,",
             "affected_viewers=len(viewers), exposed_viewers=peak.n,"),
    Mutation("CMCD: starvation on an interval report is not a stall", "transforms/viewstate.py",
             "        if not busy and (b.starved or dur):", "        if False:"),
    Mutation("CMCD: a stall placed to within 30 s is clustered", "transforms/contributions.py",
             "return stall.playhead_ms is not None and 2 * stall.uncertainty_ms < bucket_ms",
             "return stall.playhead_ms is not None"),
    Mutation("ads: break time is watch time", "transforms/viewstate.py",
             "        self.ad_ms += elapsed\n",
             "        self.ad_ms += elapsed\n        self.watch_ms += elapsed\n"),
    Mutation("ads: an ad's stalls are the content's", "transforms/facts.py",
             "for s in view.stalls if s.video_id == video_id)",
             "for s in view.stalls if video_id is None or s.video_id == video_id)"),
)


def _copy_tree(dest: str) -> None:
    """The tracked files (as they are on disk now) into ``dest``; the local
    tools and virtualenv by symlink."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    for name in filter(None, files):
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, name), target)
    for link in (".venv", ".tools"):
        if os.path.exists(os.path.join(ROOT, link)):
            os.symlink(os.path.join(ROOT, link), os.path.join(dest, link))


def _first_failure(output: str) -> str:
    found = re.search(r"^(?:FAILED|ERROR) (\S+)", output, re.MULTILINE)
    last = output.strip().splitlines()[-1:] or ["no output"]
    return found.group(1) if found else f"(pytest failed: {last[0]})"


def _pytest(tree: str, *args: str) -> tuple[bool, str]:
    """(passed, output) of pytest in ``tree``."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:warnings", *args],
                          cwd=tree, capture_output=True, text=True,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    return done.returncode == 0, done.stdout + done.stderr


def check(mutation: Mutation, tree: str) -> dict:
    path = os.path.join(tree, mutation.path)
    with open(path, encoding="utf-8") as f:
        original = f.read()
    if original.count(mutation.old) != 1:
        raise SystemExit(f"mutate: {mutation.name!r}: the snippet occurs "
                         f"{original.count(mutation.old)} times in {mutation.path}, not once")
    started = time.monotonic()
    with open(path, "w", encoding="utf-8") as f:
        f.write(original.replace(mutation.old, mutation.new))
    try:
        caught_by = None
        for suite in (UNIT_TESTS, mutation.integration):
            if suite and caught_by is None:
                passed, output = _pytest(tree, *suite)
                caught_by = None if passed else _first_failure(output)
    finally:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
    return {"mutation": mutation.name, "file": mutation.path, "caught_by": caught_by,
            "seconds": round(time.monotonic() - started)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help="run only the mutations whose name contains one of these words")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS
              if not args.only or any(word in m.name for word in args.only)]
    if args.list or not chosen:
        for m in MUTATIONS:
            print(f"{m.name}  ({m.path})")
        return 0 if chosen else 2
    results = []
    with tempfile.TemporaryDirectory(prefix="stallwatch-mutate-") as tree:
        _copy_tree(tree)
        passed, output = _pytest(tree, *UNIT_TESTS)
        if not passed:
            print(f"mutate: the unmutated unit tests fail ({_first_failure(output)}); "
                  "fix that first")
            return 2
        for mutation in chosen:
            result = check(mutation, tree)
            results.append(result)
            verdict = f"caught by {result['caught_by']}" if result["caught_by"] else "SURVIVED"
            print(f"{result['seconds']:>4} s  {mutation.name}: {verdict}", flush=True)
    survived = [r for r in results if not r["caught_by"]]
    print(f"{len(results) - len(survived)} of {len(results)} mutations caught")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
