"""Charts as inline SVG strings (matplotlib, no network, text kept as text)."""

from __future__ import annotations

import datetime
import io as _io
import math
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
SHADE = "#D55E00"

matplotlib.rcParams.update({
    "svg.fonttype": "none",          # real <text>: selectable, small, scales
    "svg.hashsalt": "stallwatch",    # stable ids: the same data gives the same file
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
})


def _svg(fig) -> str:
    buf = _io.StringIO()
    # No Date metadata: with the fixed hashsalt, the same data gives the same bytes.
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]           # drop the XML prolog and doctype


def _when(ms_values: Sequence[int]) -> list[datetime.datetime]:
    return [datetime.datetime.fromtimestamp(m / 1000, datetime.timezone.utc) for m in ms_values]


def _time_axis(ax) -> None:
    locator = mdates.AutoDateLocator(tz=datetime.timezone.utc, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=datetime.timezone.utc))
    ax.set_xlabel("wall-clock time (UTC, event time)")


def lines_over_time(minutes_ms: Sequence[int], series: dict[str, Sequence[Optional[float]]],
                    ylabel: str, title: str) -> str:
    """One line per series over event-time minutes."""
    fig, ax = plt.subplots(figsize=(10, 2.4))
    when = _when(minutes_ms)
    for color, (name, values) in zip(PALETTE, series.items()):
        # NaN breaks the line: a minute with no data is a gap, not a slope.
        ax.plot(when, [math.nan if v is None else v for v in values], label=name, color=color,
                linewidth=1.2)
    _time_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    if len(series) > 1:
        ax.legend(loc="upper left", fontsize=8, ncols=min(4, len(series)), frameon=False)
    return _svg(fig)


def playhead_profile(bucket_starts_ms: Sequence[int], stalls: Sequence[int], exposure: Sequence[int],
                     shade: tuple[int, int], title: str, program: bool = False) -> str:
    """Stall starts per position bucket (bars) and viewers exposed (line),
    flagged interval shaded. Positions are playhead ms, or with ``program``
    program time (epoch ms, a live stream), drawn on a wall-clock axis."""
    fig, ax = plt.subplots(figsize=(10, 2.6))
    if program:
        x = _when(bucket_starts_ms)
        width = (x[1] - x[0]) if len(x) > 1 else datetime.timedelta(seconds=5)
        lo, hi = _when([shade[0], max(shade[1], shade[0] + 1000)])
    else:
        x = [b / 60_000 for b in bucket_starts_ms]
        width = (x[1] - x[0]) if len(x) > 1 else 0.1
        lo, hi = shade[0] / 60_000, max(shade[1], shade[0] + 1000) / 60_000
    ax.bar(x, stalls, width=width, align="edge", color=PALETTE[0], label="viewers stalling")
    ax.axvspan(lo, hi, color=SHADE, alpha=0.25, label="flagged interval")
    if program:
        _time_axis(ax)
        ax.set_xlabel("program time (UTC, the live stream's own clock)")
    else:
        ax.set_xlabel("playhead (minutes)")
    ax.set_ylabel("viewers stalling")
    ax2 = ax.twinx()
    ax2.plot(x, exposure, color=PALETTE[1], linewidth=1.2, label="viewers exposed")
    ax2.set_ylabel("viewers exposed")
    ax2.grid(False)
    ax2.spines["right"].set_visible(True)
    ax2.set_ylim(0, max(1, max(exposure, default=0)) * 1.45)     # headroom for the legend
    ax.set_ylim(0, max(1, max(stalls, default=0)) * 1.45)
    handles = ax.get_legend_handles_labels()
    extra = ax2.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper right", fontsize=8, frameon=False)
    ax.set_title(title, loc="left")
    return _svg(fig)


def stacked_over_time(minutes_ms: Sequence[int], series: dict[str, Sequence[int]],
                      shade: tuple[int, int], ylabel: str, title: str) -> str:
    """Counts per minute stacked by value, with a shaded wall-clock window."""
    fig, ax = plt.subplots(figsize=(10, 2.6))
    when = _when(minutes_ms)
    bottom = [0] * len(when)
    width = 1 / 1440 * 0.9                     # a minute, in days
    for color, (name, values) in zip(PALETTE, series.items()):
        ax.bar(when, values, width=width, bottom=bottom, color=color, label=name, align="edge")
        bottom = [b + v for b, v in zip(bottom, values)]
    start, end = _when(shade)
    ax.axvspan(start, end, color=SHADE, alpha=0.2, label="flagged window")
    _time_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title, loc="left")
    ax.legend(loc="upper left", fontsize=8, ncols=4, frameon=False)
    return _svg(fig)


def bars(labels: Sequence[str], values: Sequence[float], xlabel: str, title: str) -> str:
    """Horizontal bars, largest first (labels are shown as given)."""
    fig, ax = plt.subplots(figsize=(10, 0.45 + 0.22 * max(1, len(labels))))
    ax.barh(list(range(len(labels)))[::-1], values, color=PALETTE[0])
    ax.set_yticks(list(range(len(labels)))[::-1], labels)
    ax.set_xlabel(xlabel)
    ax.set_title(title, loc="left")
    return _svg(fig)
