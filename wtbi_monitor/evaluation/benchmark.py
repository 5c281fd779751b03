"""The family benchmark behind docs/results.md: every member, several seeds, both protocols.

One run is a list of CELLS (protocol, member, seed, contamination share, tuned or not).
Each finished cell is appended as one JSON line to a cache file, so an interrupted run
resumes where it stopped and `--render-only` rebuilds the document from the cache. The
evaluation code is the production one (protocols.py); this module only loops over it,
adds the contamination study, the tuned variants and the attribution hit rate, and saves
the plots of seed 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from wtbi_monitor.alarms import top_channels
from wtbi_monitor.config import Settings
from wtbi_monitor.data.synthetic import Episode
from wtbi_monitor.data.wtbi import TurbineFrame
from wtbi_monitor.domain import Label
from wtbi_monitor.evaluation.protocols import (
    MemberResult,
    ProtocolResult,
    TimeOrderedCase,
    evaluate_paper,
    evaluate_time_ordered,
    time_ordered_case,
)
from wtbi_monitor.evaluation.report import plot_roc, plot_timeline
from wtbi_monitor.families import PAPER_VARIANT
from wtbi_monitor.logs import get_logger
from wtbi_monitor.model import Bundle
from wtbi_monitor.preprocessing.derived import SOURCES as DERIVED_SOURCES
from wtbi_monitor.training.dataset import LabelledWindows, build_windows, fit_derived, subsample
from wtbi_monitor.training.train import TrainingData
from wtbi_monitor.training.tuning import apply_values, tune_member

log = get_logger(__name__)
Record = dict[str, Any]


@dataclass(frozen=True)
class Cell:
    """One unit of work."""

    protocol: str  # "paper", "time_ordered" or "contamination"
    member: str
    seed: int
    contamination: float = 0.0
    tuned: bool = False

    @property
    def key(self) -> str:
        """Cache key."""
        tuned = "+tuned" if self.tuned else ""
        return f"{self.protocol}|{self.member}{tuned}|{self.seed}|{self.contamination:.2f}"

    @property
    def label(self) -> str:
        """Display name."""
        return self.member + (" (tuned)" if self.tuned else "")


#: What the paper's variant of a member (`PAPER_VARIANT`, "iae_lstm_kl:soft@paper") changes:
#: its score, model selection and input clipping as the paper has them (configs/paper.toml),
#: on the same inputs.
PAPER_SETTINGS: dict[str, dict[str, Any]] = {
    "model": {"score": "paper", "physics_weight": 0.0},
    "training": {"early_stopping": "loss", "scale_margin": 0.0},
}


def split_variant(member: str) -> tuple[str, bool]:
    """(family member, is the paper variant)."""
    if member.endswith(PAPER_VARIANT):
        return member.removesuffix(PAPER_VARIANT), True
    return member, False


def plan(settings: Settings) -> list[Cell]:
    """Every cell of a full benchmark, the honest time-ordered tables first.

    Then the paper protocol, the tuned members and the contamination study.
    """
    b = settings.benchmark
    cells: list[Cell] = []
    first = min(b.seeds, default=0)
    for seed in sorted(set(b.seeds) | set(b.ablation_seeds)):
        members = [
            m
            for m in (b.members if seed in b.seeds else ())
            if seed == first or not b.seed_members or m in b.seed_members
        ]
        members += [m for m in b.ablations if seed in b.ablation_seeds and m not in members]
        cells += [Cell("time_ordered", member, seed) for member in members]
    for seed in b.paper_seeds:
        cells += [Cell("paper", member, seed) for member in b.paper_members or b.members]
    for seed in sorted(set(b.seeds) | set(b.paper_seeds)):
        for member in b.tune_members:
            if seed in b.seeds:
                cells.append(Cell("time_ordered", member, seed, tuned=True))
            if seed in b.paper_seeds:
                cells.append(Cell("paper", member, seed, tuned=True))
    cells += [
        Cell("contamination", member, seed, share)
        for seed in b.contamination_seeds
        for share in b.contamination_levels
        for member in b.contamination_members
    ]
    return cells


class Cache:
    """Finished cells, one JSON object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, Record] = {}
        if path.is_file():
            for line in path.read_bytes().splitlines():
                if line.strip():
                    record = orjson.loads(line)
                    self.records[record["key"]] = record

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def add(self, record: Record) -> None:
        """Store and append one record."""
        self.records[record["key"]] = record
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as f:
            f.write(orjson.dumps(record, option=orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def contaminated_data(
    case: TimeOrderedCase, settings: Settings, share: float, seed: int
) -> TrainingData:
    """Training windows of which `share` are icing windows of the training period.

    The normal part is a random subsample, so that the training set has exactly
    `training.max_train_windows` windows whatever the share; validation stays clean.
    """
    clean = case.training_data(settings)
    if share <= 0:
        return clean
    rng = np.random.default_rng(seed)
    everything = build_windows(case.train_frames, settings.preprocessing, derived=case.derived)
    icing = np.flatnonzero(everything.evaluable & (everything.label == Label.ICING))
    n_total = min(settings.training.max_train_windows, len(clean.train))
    n_ice = min(round(share * n_total), icing.size)
    normal_idx = np.flatnonzero(everything.all_normal)
    normal_pick = normal_idx[subsample(normal_idx.size, n_total - n_ice, rng)]
    ice_pick = icing[subsample(icing.size, n_ice, rng)]
    train = everything.select(np.sort(np.concatenate([normal_pick, ice_pick])))
    description = {**clean.description, "contamination": n_ice / max(n_total, 1)}
    return TrainingData(train, clean.validation, description, clean.derived)


def _cell_settings(
    settings: Settings, member: str, seed: int, tuned: dict[str, float] | None
) -> Settings:
    """The settings of one cell: its seed, its member's budget, its variant, tuned values."""
    base, paper = split_variant(member)
    budget = {
        **settings.benchmark.budgets.get(base, {}),
        **settings.benchmark.budgets.get(member, {}),
        "seed": seed,
    }
    update: dict[str, Any] = {"training": settings.training.model_copy(update=budget)}
    if paper:
        update["model"] = settings.model.model_copy(update=PAPER_SETTINGS["model"])
        update["training"] = update["training"].model_copy(update=PAPER_SETTINGS["training"])
    out = settings.model_copy(update=update)
    return apply_values(out, tuned) if tuned else out


def _record(cell: Cell, result: MemberResult, extra: Record | None = None) -> Record:
    return {
        "key": cell.key,
        "protocol": cell.protocol,
        "member": cell.label,
        "seed": cell.seed,
        "contamination": cell.contamination,
        "tuned": cell.tuned,
        "auroc": result.window.get("auroc"),
        "auprc": result.window.get("auprc"),
        "auroc_below_2c": result.window.get("auroc_below_2c"),
        "auprc_below_2c": result.window.get("auprc_below_2c"),
        "events": result.events,
        "model_events": result.model_events,
        "fit_seconds": round(result.fit_seconds, 2),
        "scoring_windows_per_s": round(result.scoring_windows_per_s, 1),
        "train_windows": result.train_windows,
        "roc": result.roc if cell.seed == 0 else None,
        **(extra or {}),
    }


def attribution_hit_rate(
    bundle: Bundle,
    test: LabelledWindows,
    scores: NDArray[np.float64],
    episodes: list[Episode],
    *,
    limit: int,
    seed: int,
) -> Record | None:
    """Share of high-scoring icing windows whose top channels include one the episode affects.

    High-scoring = ICING label and score above the 99th percentile of the validation
    normal scores (a tail probability of 1 %; the alarm threshold sits at 0.1 % and leaves
    too few windows for a rate). Each window is matched to the generator's episode covering
    its newest row; `chance` is the same share for three channels drawn at random.
    """
    if not bundle.detector.attributes_channels or not episodes:
        return None
    level = float(np.quantile(bundle.detector.calibration_scores_, 0.99))
    flagged = np.flatnonzero((test.label == Label.ICING) & (scores > level))
    if flagged.size == 0:
        return {"windows": 0, "top3_hit_rate": None, "top1_hit_rate": None, "chance": None}
    flagged = flagged[subsample(flagged.size, limit, np.random.default_rng(seed))]
    out = bundle.score_windows(test.series.windows(flagged), with_channels=True)
    if out.channel_error is None:
        return None
    channels = bundle.channels
    times = test.time_ms[flagged]
    turbines = test.turbine[flagged]
    # The product's one channel ranking: excess over the normal median (alarms.py).
    top, _ = top_channels(out.channel_error, bundle.detector.channel_reference_)
    hits1, hits3, chance = [], [], []
    n = len(channels)
    for i in range(flagged.size):
        match = [
            e
            for e in episodes
            if e.turbine_id == turbines[i] and e.start_ms <= times[i] <= e.end_ms
        ]
        if not match:
            continue
        affected = set().union(*(e.affected_channels for e in match))
        affected |= {d for d, sources in DERIVED_SOURCES.items() if affected & set(sources)}
        names = [channels[j] for j in top[i] if j >= 0]
        hits1.append(names[0] in affected)
        hits3.append(any(c in affected for c in names))
        a = sum(c in affected for c in channels)
        # P(at least one of 3 random channels is affected) = 1 - C(n-a,3)/C(n,3)
        miss = ((n - a) * (n - a - 1) * (n - a - 2)) / (n * (n - 1) * (n - 2))
        chance.append(1.0 - miss)
    if not hits3:
        return {"windows": 0, "top3_hit_rate": None, "top1_hit_rate": None, "chance": None}
    return {
        "windows": len(hits3),
        "top1_hit_rate": float(np.mean(hits1)),
        "top3_hit_rate": float(np.mean(hits3)),
        "chance": float(np.mean(chance)),
    }


@dataclass
class BenchmarkRun:
    """Inputs shared by every cell."""

    frames: list[TurbineFrame]
    episodes: list[Episode]
    settings: Settings
    cache: Cache
    plots: Path
    case: TimeOrderedCase | None = None
    windows: LabelledWindows | None = None

    def time_case(self) -> TimeOrderedCase:
        """The time-ordered split, windowed once."""
        if self.case is None:
            self.case = time_ordered_case(
                self.frames, self.settings, stride=self.settings.benchmark.test_stride
            )
        return self.case

    def paper_windows(self) -> LabelledWindows:
        """Every stride-1 window of the farm, windowed once."""
        if self.windows is None:
            pre = self.settings.preprocessing
            derived = fit_derived(self.frames, pre)  # every normal reading: leaky, like it
            self.windows = build_windows(self.frames, pre, derived=derived)
        return self.windows


def _tuned_values(run: BenchmarkRun, member: str) -> dict[str, float]:
    """Search once per member (seed 0 of the time-ordered split), cached."""
    key = f"tuning|{member}"
    if key not in run.cache:
        case = run.time_case()
        settings = _cell_settings(run.settings, member, 0, None)
        t0 = time.perf_counter()
        result = tune_member(
            member,
            case.training_data(settings),
            settings,
            budget=run.settings.benchmark.tune_budget,
        )
        run.cache.add(
            {
                "key": key,
                "protocol": "tuning",
                "member": member,
                **result.to_json(),
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    best: dict[str, float] = run.cache.records[key]["best"]
    return best


def run_cell(run: BenchmarkRun, cell: Cell) -> Record:
    """Evaluate one cell (no caching here)."""
    tuned = _tuned_values(run, cell.member) if cell.tuned else None
    settings = _cell_settings(run.settings, cell.member, cell.seed, tuned)
    member, _ = split_variant(cell.member)
    if cell.protocol == "paper":
        protocol = evaluate_paper(run.frames, [member], settings, windows=run.paper_windows())
        return _record(cell, protocol.members[0], {"tuning": tuned})
    case = run.time_case()
    if cell.protocol == "contamination":
        data = contaminated_data(case, settings, cell.contamination, cell.seed)
        shared = TimeOrderedCase(**{**case.__dict__, "data": data})
        protocol = evaluate_time_ordered(
            run.frames, [member], settings, case=shared, timeline_turbines=0
        )
        actual = data.description.get("contamination", 0.0)
        return _record(cell, protocol.members[0], {"contamination_actual": actual})
    plot = cell.seed == 0 and cell.member in run.settings.benchmark.timeline_members
    protocol = evaluate_time_ordered(
        run.frames,
        [member],
        settings,
        case=case,
        timeline_turbines=None if plot else 0,
    )
    result = protocol.members[0]
    extra: Record = {"tuning": tuned}
    if plot and not cell.tuned:
        slug = cell.member.replace(":", "-").replace("+", "-").replace("@", "-")
        plot_timeline(
            result,
            {f.turbine_id: f for f in case.test_frames},
            run.plots / f"timeline_{slug}.png",
        )
    if cell.seed == 0:
        extra["attribution"] = _hit_rate(run, cell, result)
        extra["single_channel"] = protocol.single_channel
    return _record(cell, result, extra)


def _hit_rate(run: BenchmarkRun, cell: Cell, result: MemberResult) -> Record | None:
    if result.bundle is None or result.scores is None:
        return None
    return attribution_hit_rate(
        result.bundle,
        run.time_case().test,
        result.scores,
        run.episodes,
        limit=run.settings.benchmark.attribution_windows,
        seed=cell.seed,
    )


def run_benchmark(
    run: BenchmarkRun,
    cells: list[Cell],
    *,
    on_cell: Callable[[Cell, Record, float], None] | None = None,
) -> Iterator[Record]:
    """Run every cell not yet in the cache; yield each new record."""
    for cell in cells:
        if cell.key in run.cache:
            continue
        t0 = time.perf_counter()
        record = run_cell(run, cell)
        record["seconds"] = round(time.perf_counter() - t0, 1)
        run.cache.add(record)
        if on_cell is not None:
            on_cell(cell, record, time.perf_counter() - t0)
        yield record


def plot_seed0_roc(cache: Cache, path: Path, members: list[str]) -> None:
    """ROC curves of seed 0, time-ordered protocol, for `members`."""
    results = [
        MemberResult(
            member=r["member"],
            protocol="time_ordered",
            window={"auroc": r["auroc"]},
            roc=r["roc"],
            threshold=0.0,
            fit_seconds=0.0,
            scoring_windows_per_s=0.0,
            train_windows=0,
        )
        for r in cache.records.values()
        if r["protocol"] == "time_ordered"
        and r["seed"] == 0
        and r["member"] in members
        and r["roc"]
    ]
    if results:
        plot_roc(ProtocolResult("time_ordered", {}, results), path)
