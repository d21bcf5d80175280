"""Detection thresholds: one frozen, validated value shared by the detectors."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Settings of DetectStallClusters (units in the names).

    Attributes:
      min_viewers: distinct affected viewers a content or delivery alert needs.
      bucket_ms: position bucket (playhead, or program time for a live
        view); content windows are two buckets wide and slide by one, so a
        fault on a bucket edge is still seen whole.
      content_alpha: family-wise false-alarm rate per video (Bonferroni over
        its windows) for the one-sided binomial test.
      min_rate_ratio: observed/baseline stall rate an alert needs as well,
        so a huge audience cannot make a tiny excess "significant".
      prior_viewer_windows: weight (in viewer-windows) of the global stall
        rate in each video's baseline, so rarely played titles get a sane one.
      delivery_bucket_ms: wall-clock bucket of the delivery detector.
      delivery_alpha: family-wise false-alarm rate per dimension.
      delivery_dimensions: view dimensions checked for delivery problems.
      viewer_alpha: family-wise false-alarm rate over all viewers.
      viewer_min_stalls: stalls a viewer alert needs.
      viewer_min_positions: distinct (video, 30 s) positions those stalls span.
    """

    min_viewers: int = 5
    bucket_ms: int = 5_000
    content_alpha: float = 1e-3
    min_rate_ratio: float = 3.0
    prior_viewer_windows: float = 500.0
    delivery_bucket_ms: int = 60_000
    delivery_alpha: float = 1e-3
    delivery_dimensions: tuple[str, ...] = ("cdn", "asn", "country")
    viewer_alpha: float = 1e-2
    viewer_min_stalls: int = 4
    viewer_min_positions: int = 3

    def __post_init__(self) -> None:
        for name in ("min_viewers", "bucket_ms", "delivery_bucket_ms",
                     "viewer_min_stalls", "viewer_min_positions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("content_alpha", "delivery_alpha", "viewer_alpha"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {getattr(self, name)}")
        if self.min_rate_ratio < 1.0:
            raise ValueError(f"min_rate_ratio must be >= 1, got {self.min_rate_ratio}")
        if self.prior_viewer_windows < 0:
            raise ValueError("prior_viewer_windows must be >= 0")
        if not self.delivery_dimensions:
            raise ValueError("delivery_dimensions must name at least one dimension")
