"""DetectStallClusters: delivery, then viewer, then content attribution of stalls,
sharded by key and incremental, evaluated early and refined as views arrive
(batch and streaming alike). ``detect`` is the same statistics over a set of
views at once: the definition the stages must reproduce (tests hold them to it)."""

from __future__ import annotations

from typing import Iterable, Optional

import apache_beam as beam

from transforms.alerting import Lifecycle, delivery_windows
from transforms.broadcast import to_shards
from transforms.content import content_alerts
from transforms.contentstate import PRIOR, SUMMARIES, ContentProfiles, ContentTest, SumShards
from transforms.contributions import CONTENT, DELIVERY, VIEWER, ViewerViews
from transforms.delivery import WINDOWS, DeliveryCells, DeliveryTest, delivery_alerts
from transforms.facts import Withdrawn, view_facts
from transforms.model import Alert, View
from transforms.rolling import Member, RollingEvaluate
from transforms.thresholds import Thresholds
from transforms.viewers import CANDIDATES, FLAGS, PARTIAL, ViewerStats, ViewerTest, viewer_alerts

DEFAULT_SHARDS = 16
# The delivery test settles a second after its newest input; the stages
# after it settle at once, so every alert's settled evaluation is at the
# newest view + 1 s, as with one detection key.
SETTLE_MS = 1_000
# A new stall is evaluated at once if its key has not evaluated for this
# long, whatever every_s says: it is what alerts wait for. Within it, and
# for other news (exposure growing), the next evaluation comes with the
# next arrival after every_s, or when the key settles.
URGENT_MS = 1_000
_DAY_MS = 24 * 3_600_000


def detect(views: Iterable[View], t: Thresholds) -> list[Alert]:
    """All alerts in a set of views, in causal order.

    Delivery problems are found first (they need no other input); stalls
    inside a delivery window are then explained and held against neither the
    viewer nor the video; viewers who still stall everywhere are flagged, and
    their stalls do not count toward content alerts. What remains, clustered
    at one playhead across many viewers, is the content.
    """
    views = list(views)
    delivery = delivery_alerts(views, t)
    windows = delivery_windows(delivery)
    viewer = viewer_alerts(views, windows, t)
    flagged = {a.viewer_id for a in viewer}
    return delivery + viewer + content_alerts(views, flagged, windows, t)


def _to_facts(member: Member, dimensions: tuple[str, ...]) -> tuple[str, Member]:
    """(viewer, Member of ViewFacts, or None for a withdrawn view)."""
    value = member.value
    if isinstance(value, Withdrawn):
        return value.viewer_id, Member(member.member_key, member.rank, member.end_ms, None)
    return value.viewer_id, Member(member.member_key, member.rank, member.end_ms,
                                   view_facts(value, dimensions))


class _ToShards(beam.PTransform):
    """(None, message) -> (shard, message) for every shard: a broadcast as elements."""

    def __init__(self, shards: int) -> None:
        super().__init__()
        self._shards = shards

    def expand(self, messages: beam.PCollection) -> beam.PCollection:
        return messages | "Copy" >> beam.FlatMap(lambda kv: to_shards(None, self._shards, kv[1]))


class DetectStallClusters(beam.PTransform):
    """Attribute stalls to delivery, viewer or content problems, as views arrive.

    Input:  PCollection[Member] whose values are Views (or ``Withdrawn``):
            one per version of a view (``SessionizedViews.progress``;
            snapshots of views still playing included), any windowing.
    Output: PCollection[Alert], all causes. The first emission of an
            ``alert_id`` has version 1; later ones (refined, closed,
            retracted) replace it. In batch (``every_s`` 0) each stage
            evaluates once, when its input is complete.

    Stages, each keyed (docs/detection.md has the picture and the bounds):
    per viewer (``ViewerViews``) the views become per-detector changes;
    delivery counts per (dimension, value) and the delivery test per
    dimension; viewer stats and tests per viewer shard, the population sum;
    content counts and tests per video shard, the all-titles rate. The few
    global quantities go to every shard as elements (transforms/broadcast.py).

    Args:
      thresholds: see Thresholds.
      every_s: counts are evaluated on arrival at most this often (event
        time; 0: only when the input settles, as in batch); the viewer and
        content tests on every arrival, the delivery test at most every
        max(1 s, every_s / 10).
      close_after_s: an alert with no new affected stall for this long is closed.
      retention_s: evidence older than this leaves detection (0: none, as in batch).
      view_life_s: how long after its newest version a view can still change
        (the sessionizer's inactivity): the per-viewer state lasts that long,
        plus ``late_s``.
      late_s: how late (behind the watermark) a view's version may arrive: a
        runner that holds no watermark for timers (the DirectRunner) lets it
        be one watermark step late (pipeline.config.QoeConfig.watermark_step_ms).
      shards: keys of each sharded stage (more: smaller keys, more copies of
        each broadcast).
      hold_s: the causal hold of new content and viewer alerts (None: two
        evaluation periods; see alerting.Lifecycle).
      stateful: see ``rolling.use_state``.
    """

    def __init__(self, thresholds: Thresholds | None = None, every_s: int = 0,
                 close_after_s: int = 600, retention_s: int = 0, view_life_s: int = 3660,
                 shards: int = DEFAULT_SHARDS, hold_s: Optional[int] = None,
                 stateful: Optional[bool] = None, late_s: int = 600) -> None:
        super().__init__()
        if min(every_s, retention_s) < 0 or close_after_s <= 0 or view_life_s <= 0 or shards < 1:
            raise ValueError("every_s, retention_s must be >= 0; close_after_s, view_life_s, "
                             "shards > 0")
        self._t = t = thresholds or Thresholds()
        self._every_ms = every_s * 1000 if every_s > 0 else None
        self._retention_ms = retention_s * 1000
        self._view_life_ms = (view_life_s + late_s + 60) * 1000
        self._shards = shards
        self._stateful = stateful
        hold_ms = (2 * every_s if hold_s is None else hold_s) * 1000 if every_s > 0 else 0
        self._slice_ms = max(60_000, self._retention_ms // 6) if retention_s else 3_600_000
        self._lifecycle = Lifecycle(t.bucket_ms, close_after_s * 1000, self._retention_ms, hold_ms)
        self._gc_ms = max(self._retention_ms, _DAY_MS) + close_after_s * 1000

    def _stage(self, evaluator, every: Optional[str], tags: tuple[str, ...] = (),
               settle_ms: int = 0, gc_ms: Optional[int] = None) -> RollingEvaluate:
        early = self._every_ms is not None
        every_ms = {"arrival": 0, "counts": self._every_ms,
                    "test": max(1_000, (self._every_ms or 0) // 10)}[every] if early else None
        return RollingEvaluate(evaluator, settle_ms=settle_ms, gc_ms=gc_ms or self._gc_ms,
                               every_ms=every_ms, stateful=self._stateful, tags=tags,
                               urgent_ms=URGENT_MS)

    def expand(self, members: beam.PCollection) -> beam.PCollection:
        t, shards, retention = self._t, self._shards, self._retention_ms
        per_viewer = (
            members
            | "ToFacts" >> beam.Map(_to_facts, t.delivery_dimensions)
            | "PerViewer" >> self._stage(ViewerViews(t, shards, shards, self._slice_ms,
                                                     keep_ms=retention + self._view_life_ms
                                                     if retention else 0), "arrival",
                                         (CONTENT, DELIVERY, VIEWER),
                                         gc_ms=self._view_life_ms))
        delivery = (
            per_viewer[DELIVERY]
            | "DeliveryCells" >> self._stage(DeliveryCells(t, retention), "counts")
            | "DeliveryTest" >> self._stage(DeliveryTest(t, self._lifecycle, retention), "test",
                                            (WINDOWS,), settle_ms=SETTLE_MS))
        windows = delivery[WINDOWS]
        stats = ((per_viewer[VIEWER], windows | "WindowsToViewerStats" >> _ToShards(shards))
                 | "ViewerStats" >> self._stage(ViewerStats(t, self._slice_ms, retention), "counts",
                                                (CANDIDATES, PARTIAL)))
        population = stats[PARTIAL] | "ViewerPopulation" >> self._stage(SumShards(shards), "counts")
        viewers = ((stats[CANDIDATES], population,
                    windows | "WindowsToViewerTests" >> _ToShards(shards))
                   | "ViewerTest" >> self._stage(ViewerTest(t, self._lifecycle), "arrival",
                                                 (FLAGS,)))
        flags = viewers[FLAGS]
        profiles = ((per_viewer[CONTENT],
                     windows | "WindowsToProfiles" >> _ToShards(shards),
                     flags | "FlagsToProfiles" >> _ToShards(shards))
                    | "ContentProfiles" >> self._stage(
                        ContentProfiles(t, self._slice_ms, retention), "counts", (SUMMARIES, PRIOR)))
        prior = profiles[PRIOR] | "ContentPrior" >> self._stage(SumShards(shards), "counts")
        content = ((profiles[SUMMARIES], prior,
                    windows | "WindowsToContentTests" >> _ToShards(shards),
                    flags | "FlagsToContentTests" >> _ToShards(shards))
                   | "ContentTest" >> self._stage(ContentTest(t, self._lifecycle), "arrival"))
        return ((delivery.main, viewers.main, content)
                | "AllAlerts" >> beam.Flatten().with_output_types(Alert))
