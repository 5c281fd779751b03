"""The two evaluation protocols of docs/domain.md, run on the same code as production.

* Paper protocol (for comparability, LEAKY): stride-1 windows, a random 70/30 split of
  the normal windows, test = the 30 % plus every icing window, AUROC. Overlapping windows
  (25 of 26 rows shared with a neighbour) land on both sides of a random split, so test
  windows are near-copies of training windows. We reproduce that leak on purpose and
  nothing else: the scaler is fitted on the training part, windows never cross gaps, and
  early stopping and the threshold use a random validation part, not the test set.
* Time-ordered protocol (honest): farm-wide cut times; train on the earlier normal
  windows, validate on the next part, test on the latest part with its icing episodes;
  window AUROC/AUPRC and event metrics through the production alarm state machine.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from wtbi_monitor.alarms import lowest_clear_level
from wtbi_monitor.config import AlarmSettings, Settings
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.domain import Label
from wtbi_monitor.evaluation.metrics import (
    AlarmInterval,
    event_metrics,
    roc_points,
    run_alarms,
    window_metrics,
)
from wtbi_monitor.logs import get_logger
from wtbi_monitor.model import Bundle
from wtbi_monitor.model.bundle import ScoredWindows, score_chunked
from wtbi_monitor.model.trainer import ProgressCallback
from wtbi_monitor.preprocessing import DerivedChannels
from wtbi_monitor.training.dataset import LabelledWindows, build_windows, fit_derived, subsample
from wtbi_monitor.training.splits import TimeSplit, cut, time_split
from wtbi_monitor.training.train import (
    TrainingData,
    fit_member,
    prepare_training_data,
    split_history,
)

log = get_logger(__name__)
SCORE_CHUNK = 16_384

#: Builds a progress callback for one member (the CLI passes a tqdm bar factory).
ProgressFactory = Callable[[str], ProgressCallback | None]


@dataclass
class MemberResult:
    """What one protocol measured for one family member."""

    member: str
    protocol: str
    window: dict[str, Any]
    roc: dict[str, list[float]]
    threshold: float
    fit_seconds: float
    scoring_windows_per_s: float
    train_windows: int
    events: dict[str, Any] | None = None
    #: events with `alarm.policy = "model"` (the member's own score), when the configured
    #: policy also lets the IEA Task 19 rule raise: what the member adds to the rule.
    model_events: dict[str, Any] | None = None
    alarms: list[AlarmInterval] = field(default_factory=list)
    episode_detail: list[dict[str, Any]] = field(default_factory=list)
    bundle_version: str = ""
    #: test window times and scores per turbine, for timeline plots (time-ordered only).
    timeline: dict[str, tuple[NDArray[np.int64], NDArray[np.float32]]] = field(default_factory=dict)
    #: the fitted bundle and every test window's score (time-ordered; not serialised).
    bundle: Bundle | None = None
    scores: NDArray[np.float64] | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays)."""
        return {
            "member": self.member,
            "protocol": self.protocol,
            "bundle_version": self.bundle_version,
            "window": self.window,
            "events": self.events,
            "model_events": self.model_events,
            "threshold": self.threshold,
            "fit_seconds": round(self.fit_seconds, 2),
            "scoring_windows_per_s": round(self.scoring_windows_per_s, 1),
            "train_windows": self.train_windows,
            "roc": self.roc,
            "alarms": [
                {
                    "turbine_id": a.turbine_id,
                    "alarm_id": a.alarm_id,
                    "start_ms": a.start_ms,
                    "raised_ms": a.raised_ms,
                    "end_ms": a.end_ms,
                    "peak_score": a.peak_score,
                    "verdict": a.verdict,
                    "top_channels": [list(t) for t in a.top_channels],
                }
                for a in self.alarms
            ],
            "episodes": self.episode_detail,
        }


@dataclass
class ProtocolResult:
    """All members on one protocol."""

    name: str
    description: dict[str, Any]
    members: list[MemberResult]
    single_channel: dict[str, dict[str, Any]] = field(default_factory=dict)


def score_all(
    bundle: Bundle,
    windows: LabelledWindows,
    *,
    with_channels: bool = False,
    alarm: AlarmSettings | None = None,
) -> tuple[ScoredWindows, float]:
    """Every window scored (chunked), with the throughput in windows/s.

    With `with_channels`, per-channel errors of the windows at or above the lowest clear
    level (the ones that can matter to an alarm) are computed in the same pass.
    """
    t0 = time.perf_counter()
    channels_at = -math.inf
    if with_channels:
        channels_at = lowest_clear_level(bundle.alarm_context(alarm or AlarmSettings()))
    out = score_chunked(
        bundle,
        windows.series.windows,
        len(windows),
        chunk=SCORE_CHUNK,
        with_channels=with_channels,
        channels_at=channels_at,
    )
    elapsed = time.perf_counter() - t0
    return out, (len(windows) / elapsed if elapsed > 0 else float("nan"))


def window_channel_means(windows: LabelledWindows) -> NDArray[np.float64]:
    """Unscaled mean of each channel over each window, via cumulative sums (no gathering)."""
    s = windows.series
    csum = np.concatenate([np.zeros((1, s.n_channels)), np.cumsum(s.smoothed, axis=0)])
    means: NDArray[np.float64] = (
        csum[s.starts + s.window_length] - csum[s.starts]
    ) / s.window_length
    return means


#: Window metrics are also reported on windows colder than this (window mean, C): the
#: windows where icing is possible, and where ambient temperature alone is weak.
COLD_BELOW_C = 2.0


def cold_mask(
    windows: LabelledWindows, channels: tuple[str, ...], temperature: str = "environment_tmp"
) -> NDArray[np.bool_] | None:
    """Windows whose mean ambient temperature is below COLD_BELOW_C (None: no channel)."""
    if temperature not in channels:
        return None
    means = window_channel_means(windows)
    out: NDArray[np.bool_] = means[:, channels.index(temperature)] < COLD_BELOW_C
    return out


def single_channel_aurocs(
    windows: LabelledWindows, channels: tuple[str, ...], names: tuple[str, ...]
) -> dict[str, dict[str, Any]]:
    """ORACLE single-channel detectors, on all windows and on windows below +2 C.

    Each is the window mean of one channel, in whichever direction separates better ON THE
    TEST LABELS: an upper bound on any one-channel threshold rule. If a multichannel model
    does not beat them, the data is too easy.
    """
    ev = windows.select(windows.evaluable)
    means = window_channel_means(ev)
    cold = cold_mask(ev, channels)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name not in channels:
            continue
        values = means[:, channels.index(name)]
        auroc = window_metrics(ev.label, values)["auroc"]
        if auroc is None:
            continue
        oriented = values if auroc >= 0.5 else -values
        entry: dict[str, Any] = {
            "auroc_oracle": max(auroc, 1 - auroc),
            "direction": "high" if auroc >= 0.5 else "low",
            "auprc_oracle": window_metrics(ev.label, oriented)["auprc"],
        }
        if cold is not None:
            on_cold = window_metrics(ev.label[cold], oriented[cold])
            entry["auroc_oracle_below_2c"] = on_cold["auroc"]
            entry["auprc_oracle_below_2c"] = on_cold["auprc"]
        out[name] = entry
    return out


def _alarms_for(
    bundle: Bundle,
    test: LabelledWindows,
    scored: ScoredWindows,
    settings: Settings,
    stride: int,
) -> list[AlarmInterval]:
    """Run the alarm machine per turbine over its test windows in time order."""
    context = bundle.alarm_context(settings.alarm, stride=stride)
    alarms: list[AlarmInterval] = []
    turbine = test.series.window_turbine
    for k, tid in enumerate(test.turbine_ids):
        idx = np.flatnonzero(turbine == k)
        if idx.size == 0:
            continue
        alarms += run_alarms(
            tid,
            time_ms=test.time_ms[idx],
            scores=scored.score[idx],
            channel_errors=None if scored.channel_error is None else scored.channel_error[idx],
            channel_means=scored.channel_means[idx],
            rule=None if scored.rule is None else scored.rule[idx],
            settings=settings.alarm,
            context=context,
        )
    return alarms


@dataclass
class TimeOrderedCase:
    """The data of the time-ordered protocol, built once and shared by every member.

    `stride` > 1 scores every stride-th test window only (the benchmark's shortcut); the
    alarm machine's window counts are divided by it so its delays stay the same in time.
    """

    split: TimeSplit
    train_frames: list[TurbineFrame]
    validation_frames: list[TurbineFrame]
    test_frames: list[TurbineFrame]
    test: LabelledWindows
    means: NDArray[np.float64]
    derived: DerivedChannels
    stride: int = 1
    data: TrainingData | None = None

    @property
    def channels(self) -> tuple[str, ...]:
        """Channels of the test windows (source channels, then derived ones)."""
        return self.derived.channels

    def training_data(self, settings: Settings) -> TrainingData:
        """All-normal windows of the training and validation periods (built on first use)."""
        if self.data is None:
            self.data = prepare_training_data(
                self.train_frames, self.validation_frames, settings, derived=self.derived
            )
        return self.data

    def test_for(self, bundle: Bundle, settings: Settings) -> LabelledWindows:
        """The test windows with a given bundle's derived channels (its own fitted curves)."""
        if bundle.derived.to_json() == self.derived.to_json():
            return self.test
        return build_windows(
            self.test_frames, settings.preprocessing, stride=self.stride, derived=bundle.derived
        )


def time_ordered_case(
    frames: list[TurbineFrame], settings: Settings, *, stride: int = 1
) -> TimeOrderedCase:
    """Cut the farm into training, validation and test periods and window the test part."""
    ev, tr = settings.evaluation, settings.training
    split = time_split(
        frames,
        ev.train_fraction,
        ev.validation_fraction,
        validation_start=ev.validation_start,
        test_start=ev.test_start,
    )
    test_frames = cut(frames, split.test_start_ms, None)
    if tr.validation_split == "blocks":
        # Validation blocks spread over the whole development period (every season of it),
        # with the validation share of the fractions.
        share = ev.validation_fraction / (ev.train_fraction + ev.validation_fraction)
        development = cut(frames, None, split.test_start_ms)
        train_frames, validation_frames = split_history(
            development, tr.model_copy(update={"validation_fraction": share})
        )
    else:
        train_frames = cut(frames, None, split.validation_start_ms)
        validation_frames = cut(frames, split.validation_start_ms, split.test_start_ms)
    derived = fit_derived(train_frames, settings.preprocessing)
    test = build_windows(test_frames, settings.preprocessing, stride=stride, derived=derived)
    return TimeOrderedCase(
        split=split,
        train_frames=train_frames,
        validation_frames=validation_frames,
        test_frames=test_frames,
        test=test,
        means=window_channel_means(test),
        derived=derived,
        stride=stride,
    )


def evaluate_time_ordered(
    frames: list[TurbineFrame],
    members: list[str],
    settings: Settings,
    *,
    bundles: list[Bundle] | None = None,
    progress: ProgressFactory | None = None,
    timeline_turbines: int | None = None,
    case: TimeOrderedCase | None = None,
) -> ProtocolResult:
    """Train on the early part, validate on the next, test on the latest; window + event metrics."""
    ev = settings.evaluation
    case = case or time_ordered_case(frames, settings)
    split, test_frames = case.split, case.test_frames
    evaluable = case.test.evaluable
    data: TrainingData | None = case.data
    results: list[MemberResult] = []
    candidates: list[tuple[str, Bundle | None]] = [(m, None) for m in members]
    candidates += [(b.manifest.member, b) for b in bundles or []]
    n_timeline = ev.timeline_turbines if timeline_turbines is None else timeline_turbines
    for member, given in candidates:
        if given is None:
            data = case.training_data(settings)
            t0 = time.perf_counter()
            bundle = fit_member(
                member, data, settings, progress=progress(member) if progress else None
            )
            fit_s = time.perf_counter() - t0
            train_n = bundle.manifest.training.train_windows or 0
        else:
            bundle, fit_s, train_n = given, 0.0, 0
            _warn_if_leaky(bundle, split)
        test = case.test_for(bundle, settings)
        scored, rate = score_all(bundle, test, with_channels=True, alarm=settings.alarm)
        scores = scored.score
        metrics = window_metrics(test.label[evaluable], scores[evaluable], bundle.threshold)
        cold = cold_mask(test, bundle.channels, settings.alarm.temperature_channel)
        if cold is not None:
            on_cold = window_metrics(test.label[evaluable & cold], scores[evaluable & cold])
            metrics["auroc_below_2c"] = on_cold["auroc"]
            metrics["auprc_below_2c"] = on_cold["auprc"]
        alarms = _alarms_for(bundle, test, scored, settings, case.stride)
        events = event_metrics(test_frames, alarms)
        model_events = None
        if settings.alarm.policy != "model":
            alone = settings.model_copy(
                update={"alarm": settings.alarm.model_copy(update={"policy": "model"})}
            )
            model_events = event_metrics(
                test_frames, _alarms_for(bundle, test, scored, alone, case.stride)
            ).summary()
        timeline = {}
        for k, tid in enumerate(test.turbine_ids[:n_timeline]):
            idx = np.flatnonzero(test.series.window_turbine == k)
            timeline[tid] = (test.time_ms[idx], scores[idx].astype(np.float32))
        result = MemberResult(
            member=member,
            protocol="time_ordered",
            window=metrics,
            roc=roc_points(test.label[evaluable], scores[evaluable]),
            threshold=bundle.threshold,
            fit_seconds=fit_s,
            scoring_windows_per_s=rate,
            train_windows=train_n,
            events=events.summary(),
            model_events=model_events,
            alarms=events.alarms,
            episode_detail=events.episode_detail,
            bundle_version=bundle.version,
            timeline=timeline,
            bundle=bundle,
            scores=scores,
        )
        log.info(
            "evaluated",
            protocol="time_ordered",
            member=member,
            auroc=metrics["auroc"],
            auprc=metrics["auprc"],
            **(result.events or {}),
        )
        results.append(result)
    description = {
        "split_ms": {
            "start": split.start_ms,
            "validation_start": split.validation_start_ms,
            "test_start": split.test_start_ms,
            "end": split.end_ms,
        },
        "test_windows": len(case.test),
        "test_windows_evaluable": int(evaluable.sum()),
        "test_icing_windows": int((case.test.label[evaluable] == Label.ICING).sum()),
        "train_windows_available": data.description["train_windows_available"] if data else None,
    }
    return ProtocolResult(
        name="time_ordered",
        description=description,
        members=results,
        single_channel=single_channel_aurocs(case.test, case.channels, ev.single_channels),
    )


def _warn_if_leaky(bundle: Bundle, split: TimeSplit) -> None:
    period = bundle.manifest.training.validation_period
    if period and int(period[1]) >= split.test_start_ms:
        log.warning(
            "bundle_overlaps_test_period",
            bundle=bundle.name,
            detail="the bundle saw data from the test period: its time-ordered numbers are leaky",
        )


def evaluate_paper(
    frames: list[TurbineFrame],
    members: list[str],
    settings: Settings,
    *,
    progress: ProgressFactory | None = None,
    windows: LabelledWindows | None = None,
) -> ProtocolResult:
    """The authors' random-split protocol (LEAKY by construction: see the module docstring).

    The split is drawn from `training.seed`; `windows` (the farm's stride-1 windows) may be
    passed in to avoid windowing the farm again for every seed.
    """
    ev, tr = settings.evaluation, settings.training
    rng = np.random.default_rng(tr.seed)
    if windows is None:
        # Derived channels fitted on every normal reading: leaky, like the protocol itself.
        derived = fit_derived(frames, settings.preprocessing)
        windows = build_windows(frames, settings.preprocessing, derived=derived)
    normal = np.flatnonzero(windows.all_normal & (windows.label == Label.NORMAL))
    icing = np.flatnonzero(windows.evaluable & (windows.label == Label.ICING))
    shuffled = rng.permutation(normal)
    n_test = round(ev.paper_test_fraction * normal.size)
    test_normal, train_pool = shuffled[:n_test], shuffled[n_test:]
    n_val = max(2, round(settings.training.validation_fraction * train_pool.size))
    val_idx, train_idx = np.sort(train_pool[:n_val]), np.sort(train_pool[n_val:])
    test_idx = np.concatenate([test_normal, icing])
    test_idx = np.sort(test_idx[subsample(test_idx.size, ev.max_test_windows, rng)])
    data = TrainingData(
        train=windows.select(train_idx),
        validation=windows.select(val_idx),
        description={
            "protocol": "paper (random split, leaky)",
            "turbines": list(windows.turbine_ids),
        },
        derived=windows.derived,
    )
    test = windows.select(test_idx)
    results = []
    for member in members:
        t0 = time.perf_counter()
        bundle = fit_member(member, data, settings, progress=progress(member) if progress else None)
        fit_s = time.perf_counter() - t0
        scored, rate = score_all(bundle, test)
        scores = scored.score
        metrics = window_metrics(test.label, scores, bundle.threshold)
        log.info("evaluated", protocol="paper", member=member, auroc=metrics["auroc"])
        results.append(
            MemberResult(
                member=member,
                protocol="paper",
                window=metrics,
                roc=roc_points(test.label, scores),
                threshold=bundle.threshold,
                fit_seconds=fit_s,
                scoring_windows_per_s=rate,
                train_windows=bundle.manifest.training.train_windows or 0,
                bundle_version=bundle.version,
            )
        )
    description = {
        "normal_windows": int(normal.size),
        "icing_windows": int(icing.size),
        "train_windows_available": int(train_idx.size),
        "validation_windows": int(val_idx.size),
        "test_windows": int(test_idx.size),
        "leaky": True,
    }
    return ProtocolResult("paper", description, results)
