"""stallwatch transforms: parse, sessionize, aggregate and detect."""

from transforms import coders as _coders  # noqa: F401  (registers BeaconCoder)
from transforms.metrics import AggregateMetrics
from transforms.parse import ParseBeacons, ParsedBeacons
from transforms.responses import AggregateResponses
from transforms.sessionize import SessionizeViews
from transforms.stalls import DetectStallClusters
from transforms.thresholds import Thresholds

__all__ = ["AggregateMetrics", "AggregateResponses", "DetectStallClusters", "ParseBeacons",
           "ParsedBeacons", "SessionizeViews", "Thresholds"]
