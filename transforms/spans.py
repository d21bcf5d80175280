"""Difference arrays: counting how many spans cover each integer point, mergeably.

A span [first, last] adds +1 at ``first`` and -1 at ``last + 1``; the running
sum at a point is the number of spans covering it. Accumulators of this kind
merge by adding, which is what a CombineFn needs.
"""

from __future__ import annotations

from typing import Iterable


def merge_spans(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of integer spans [first, last]; touching spans (next = last + 1) merge too."""
    out: list[list[int]] = []
    for first, last in sorted(spans):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return [(a, b) for a, b in out]


def add_span(diff: dict[int, int], first: int, last: int) -> None:
    diff[first] = diff.get(first, 0) + 1
    diff[last + 1] = diff.get(last + 1, 0) - 1


def coverage_at(diff: dict[int, int], points: Iterable[int]) -> dict[int, int]:
    """How many spans cover each of ``points``."""
    out: dict[int, int] = {}
    steps = sorted(diff.items())
    running = i = 0
    for point in sorted(set(points)):
        while i < len(steps) and steps[i][0] <= point:
            running += steps[i][1]
            i += 1
        out[point] = running
    return out


def coverage_totals(diff: dict[int, int]) -> tuple[int, int]:
    """(sum of coverage over all points, number of points covered at least once)."""
    total = covered = running = 0
    steps = sorted(diff.items())
    for (point, delta), following in zip(steps, steps[1:]):
        running += delta
        if running > 0:
            length = following[0] - point
            total += running * length
            covered += length
    return total, covered


def runs(cells: Iterable[tuple], max_step: int) -> list[list[tuple]]:
    """Group cells sorted by their first item (an index) into runs whose
    consecutive indexes are at most ``max_step`` apart."""
    out: list[list[tuple]] = []
    for cell in cells:
        if out and cell[0] - out[-1][-1][0] <= max_step:
            out[-1].append(cell)
        else:
            out.append([cell])
    return out


def span_deltas(old: Iterable[tuple[int, int]],
                new: Iterable[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """(first, last, delta): where coverage by the merged spans ``new`` differs
    from coverage by the merged spans ``old`` (delta -1 or +1), in order.
    Moving a span's end by k points costs one run, not k points."""
    events: list[tuple[int, int]] = []
    for first, last in old:
        events += [(first, -1), (last + 1, 1)]
    for first, last in new:
        events += [(first, 1), (last + 1, -1)]
    events.sort()
    out: list[tuple[int, int, int]] = []
    level, previous = 0, None
    for point, delta in events:
        if previous is not None and point > previous and level != 0:
            if out and out[-1][1] == previous - 1 and out[-1][2] == level:
                out[-1] = (out[-1][0], point - 1, level)
            else:
                out.append((previous, point - 1, level))
        level += delta
        previous = point
    return out
