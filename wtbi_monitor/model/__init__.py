"""Models: networks, losses, the detector contract, the trainer, bundles.

Pure torch computation; the only files touched are bundle files.
"""

from wtbi_monitor.model.bundle import Bundle, ScoredWindows, load_bundle, save_bundle
from wtbi_monitor.model.detector import Detector, ScoreOutput
from wtbi_monitor.model.registry import (
    FAMILIES,
    MemberName,
    build_detector,
    parse_member,
    resolve_device,
)
from wtbi_monitor.model.trainer import EpochRecord, FitConfig

__all__ = [
    "FAMILIES",
    "Bundle",
    "Detector",
    "EpochRecord",
    "FitConfig",
    "MemberName",
    "ScoreOutput",
    "ScoredWindows",
    "build_detector",
    "load_bundle",
    "parse_member",
    "resolve_device",
    "save_bundle",
]
