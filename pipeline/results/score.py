"""Score a run's alerts against a generated workload's truth.json."""

from __future__ import annotations

from typing import Iterable, Optional

# A content alert matches a fault when its interval overlaps the faulty
# segment (with this slack) and is no wider than MAX_WIDTH_MS.
SLACK_MS = 5_000
MAX_WIDTH_MS = 30_000


def detection_latency(versions: list[dict], views: list[dict], truth: dict,
                      nth: int = 5) -> list[dict]:
    """Per injected content fault: the event time of the ``nth`` affected
    viewer's first stall in it (from the run's final views), the ``as_of`` of
    the first alert version that matched it, and the difference."""
    rows = []
    for fault in truth["faults"]:
        if fault["expect"] != "content":
            continue
        first_stall: dict[str, int] = {}
        for view in views:
            if view["video_id"] != fault["video_id"]:
                continue
            at = view.get("program_offset_ms") or 0       # a live view: onto program time
            for stall in view["stalls"]:
                if (stall["playhead_ms"] is not None and stall.get("video_id") is None
                        and fault["start_ms"] - SLACK_MS <= stall["playhead_ms"] + at
                        <= fault["end_ms"] + SLACK_MS
                        and (fault["rendition"] is None or stall["rendition"] == fault["rendition"])):
                    seen = first_stall.get(view["viewer_id"])
                    first_stall[view["viewer_id"]] = min(seen or stall["start_ms"], stall["start_ms"])
        stalls = sorted(first_stall.values())
        hits = [a["as_of_ms"] for a in versions
                if a.get("as_of_ms") is not None and _content_match(a, fault)]
        nth_ms = stalls[nth - 1] if len(stalls) >= nth else None
        first = min(hits) if hits else None
        rows.append({"video_id": fault["video_id"], "rendition": fault["rendition"],
                     "nth_stall_ms": nth_ms, "first_alert_as_of_ms": first,
                     "latency_s": (first - nth_ms) / 1000 if first and nth_ms else None})
    return rows


def _content_match(alert: dict, fault: dict) -> bool:
    return (alert["cause"] == "content" and alert["video_id"] == fault["video_id"]
            and alert["start_ms"] <= fault["end_ms"] + SLACK_MS
            and alert["end_ms"] >= fault["start_ms"] - SLACK_MS
            and alert["end_ms"] - alert["start_ms"] <= MAX_WIDTH_MS)


def _in_negative(alert: dict, fault: dict) -> bool:
    if alert["cause"] != "content" or alert["video_id"] != fault["video_id"]:
        return False
    if "start_ms" in fault:
        return (alert["start_ms"] <= fault["end_ms"] + SLACK_MS
                and alert["end_ms"] >= fault["start_ms"] - SLACK_MS)
    return True


def _ratio(hits: int, total: int) -> Optional[float]:
    """hits / total, or None when total is 0: a precision with no alerts (or a
    recall with nothing to find) is undefined, not perfect."""
    return hits / total if total else None


def _delivery_match(alert: dict, fault: dict) -> bool:
    return (alert["cause"] == "delivery" and alert["dimension"] == fault["dimension"]
            and alert["value"] == fault["value"]
            and alert["start_ts"] <= fault["end_ts"] and alert["end_ts"] >= fault["start_ts"])


# The viewer fault (a handful of viewers on bad wifi, truth's ``viewer_ids``)
# is handled when at least this share of them is flagged and at least this
# share of the flagged viewers are among them.
VIEWER_SHARE = 0.8


_FAULT_KEYS = {"content": ("video_id", "start_ms", "end_ms", "rendition"),
               "delivery": ("dimension", "value", "start_ts", "end_ts"),
               "no_content": ("video_id",),
               "viewer": ("viewer_ids",)}


def check_truth(truth) -> None:
    """ValueError, one line, unless ``truth`` is a workload's truth.json: a
    ``faults`` list, each with ``kind``, ``expect`` and what its expect needs."""
    faults = truth.get("faults") if isinstance(truth, dict) else None
    if not isinstance(faults, list):
        raise ValueError("no 'faults' list (a truth.json written by 'stallwatch generate')")
    for i, fault in enumerate(faults):
        expect = fault.get("expect") if isinstance(fault, dict) else None
        if expect not in _FAULT_KEYS:
            raise ValueError(f"fault {i}: 'expect' must be one of {', '.join(_FAULT_KEYS)}, "
                             f"got {expect!r}")
        missing = [k for k in ("kind", *_FAULT_KEYS[expect]) if k not in fault]
        if missing:
            raise ValueError(f"fault {i} ({expect}): missing {', '.join(missing)}")


def score(alerts: Iterable[dict], truth: dict) -> dict:
    """Precision/recall per cause and the verdict on every injected fault.

    Precision is None when there were no alerts of that cause, recall is None
    when the truth expects none: both are undefined then, and ``all_ok`` is
    False if an expected cause has no alerts at all."""
    alerts = list(alerts)
    content = [a for a in alerts if a["cause"] == "content"]
    delivery = [a for a in alerts if a["cause"] == "delivery"]
    viewer_flags = {a["viewer_id"] for a in alerts if a["cause"] == "viewer"}
    rows, matched = [], set()
    for fault in truth["faults"]:
        expect = fault["expect"]
        hits: list[dict] = []          # the alerts that found this fault
        if expect == "content":
            hits = [a for a in content if _content_match(a, fault)]
            ok = bool(hits) and (fault["rendition"] is None
                                 or any(a["rendition"] == fault["rendition"] for a in hits))
            found = ", ".join(f"{a['start_ms']}-{a['end_ms']} ms rendition={a['rendition']}"
                              for a in hits) or "missed"
        elif expect == "delivery":
            hits = [a for a in delivery if _delivery_match(a, fault)]
            ok = bool(hits)
            found = f"{len(hits)} delivery alert(s)" if hits else "missed"
        elif expect == "no_content":
            bad = [a for a in content if _in_negative(a, fault)]
            ok = not bad
            found = "silent" if ok else f"{len(bad)} false content alert(s)"
        else:  # viewer
            truth_ids = set(fault["viewer_ids"])
            caught = len(viewer_flags & truth_ids)
            ok = (bool(truth_ids) and caught >= VIEWER_SHARE * len(truth_ids)
                  and caught >= VIEWER_SHARE * len(viewer_flags))
            found = f"{caught}/{len(truth_ids)} flagged, {len(viewer_flags - truth_ids)} other"
        matched.update(a["alert_id"] for a in hits)
        rows.append({"kind": fault["kind"], "expect": expect, "ok": ok, "found": found,
                     "what": fault.get("video_id") or fault.get("value") or "viewers"})

    def precision(raised: list[dict]) -> Optional[float]:
        return _ratio(sum(a["alert_id"] in matched for a in raised), len(raised))

    def recall(cause: str) -> Optional[float]:
        expected = [r for r in rows if r["expect"] == cause]
        return _ratio(sum(r["ok"] for r in expected), len(expected))

    viewer_truth = set().union(*(f["viewer_ids"] for f in truth["faults"]
                                 if f["expect"] == "viewer"))
    return {
        "content_precision": precision(content),
        "content_recall": recall("content"),
        "delivery_precision": precision(delivery),
        "delivery_recall": recall("delivery"),
        "viewer_precision": _ratio(len(viewer_flags & viewer_truth), len(viewer_flags)),
        "viewer_recall": _ratio(len(viewer_flags & viewer_truth), len(viewer_truth)),
        "faults": rows,
        "all_ok": all(r["ok"] for r in rows),
    }
