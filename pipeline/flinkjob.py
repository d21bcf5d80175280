"""A job on a standalone Flink cluster, seen through the cluster's REST API.

Beam 2.62's job server can run and cancel a job, not end a streaming one
well: its cancel loses the job's metrics and whatever the windows still
held, and a streaming job whose Impulse source stays up (it must, or Flink
stops checkpointing: an idle source subtask that finished blocks every later
checkpoint barrier) never finishes by itself. So the launcher ends a drained
job here: once every operator's input watermark is at the end of time (the
stream read has claimed its end and every timer has fired), it stops the job
with a savepoint. The savepoint's barrier flushes each operator's last bundle
and commits what was read (bundle finalization runs on its completion); the
job then FINISHES, and the job server reports its metrics.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from typing import Optional

# Flink's watermark at the end of time (Long.MAX_VALUE), as its REST API prints it.
END_OF_TIME = 9223372036854775807
_DONE = ("CANCELED", "FINISHED", "FAILED")


def rest(base: str, path: str, method: str = "GET", body: Optional[dict] = None,
         timeout_s: float = 10):
    """One call to Flink's REST API at ``base`` (http://host:port): its JSON answer, or None."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        text = response.read()
    return json.loads(text) if text else None


def cancel(base: str, jid: str) -> None:
    rest(base, f"/jobs/{jid}?mode=cancel", "PATCH")


class FlinkJob:
    """The cluster's job for one Beam job (Flink names it after the first
    part of the Beam job id)."""

    def __init__(self, master: str, beam_job_id: str):
        self.base = master if "://" in master else f"http://{master}"
        self.name = (beam_job_id or "").split("_", 1)[0]

    def _call(self, path: str, method: str = "GET", body: Optional[dict] = None):
        return rest(self.base, path, method, body)

    def jid(self) -> Optional[str]:
        """The id of this job while it runs (None when gone or unnamed)."""
        if not self.name:
            return None
        for job in self._call("/jobs/overview")["jobs"]:
            if job["name"] == self.name and job["state"] not in _DONE:
                return job["jid"]
        return None

    def drained(self, jid: str) -> bool:
        """Every operator with inputs has seen the end of time."""
        plan = self._call(f"/jobs/{jid}/plan")["plan"]["nodes"]
        for node in plan:
            if not node.get("inputs"):
                continue                    # a source: no input watermark
            marks = self._call(f"/jobs/{jid}/vertices/{node['id']}/watermarks")
            if not marks or any(int(float(m["value"])) < END_OF_TIME for m in marks):
                return False
        return True

    def stop_with_savepoint(self, jid: str, timeout_s: float = 300) -> str:
        """Stop the job with a savepoint into a temporary directory on this
        machine (the cluster's TaskManagers run here; the state is drained),
        wait until Flink says it is done, and remove the savepoint."""
        target = tempfile.mkdtemp(prefix="stallwatch-savepoint-")
        try:
            trigger = self._call(f"/jobs/{jid}/stop", "POST",
                                 {"targetDirectory": f"file://{target}", "drain": False})
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                status = self._call(f"/jobs/{jid}/savepoints/{trigger['request-id']}")
                if status["status"]["id"] == "COMPLETED":
                    failure = (status.get("operation") or {}).get("failure-cause")
                    if failure:
                        raise RuntimeError(failure.get("stack-trace", "").splitlines()[0]
                                           if failure.get("stack-trace") else str(failure))
                    return status["operation"].get("location", "")
                time.sleep(1)
            raise TimeoutError(f"the stop-with-savepoint of job {jid} took over {timeout_s:.0f} s")
        finally:
            shutil.rmtree(target, ignore_errors=True)

    def cancel(self) -> None:
        jid = self.jid()
        if jid:
            cancel(self.base, jid)
            logging.warning("cancelled Flink job %s (%s) on %s", jid, self.name, self.base)


def finish_when_drained(job: FlinkJob, stop_file: str, poll_s: float = 2.0) -> None:
    """Run beside the launcher's wait: once ``stop_file`` exists and the job
    has drained, stop it with a savepoint. Errors are logged; the launcher's
    second Ctrl-C still cancels."""
    while not os.path.exists(stop_file):
        time.sleep(poll_s)
    seen = False
    while True:
        try:
            jid = job.jid()
            if jid is None and seen:
                return                          # ended by itself, or cancelled
            seen = seen or jid is not None
            if jid is None:
                time.sleep(poll_s)              # not submitted yet (a Ctrl-C at the start)
                continue
            if job.drained(jid):
                logging.warning("drained: stopping Flink job %s with a savepoint", jid)
                job.stop_with_savepoint(jid)
                return
        except (OSError, KeyError, ValueError, RuntimeError, urllib.error.URLError) as exc:
            logging.warning("finishing the drained job on Flink at %s: %s", job.base, exc)
        time.sleep(poll_s)
