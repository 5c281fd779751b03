"""Hyperparameter search on VALIDATION NORMAL data only.

Nothing here can see an icing label: the search receives `TrainingData` (all-normal
training and validation windows) and nothing else. Without labels, a configuration is
judged by how well it separates held-out normal validation windows from copies of the
same windows with generic synthetic faults (a channel offset, frozen, noisy or halved on
three random channels). The faults are deliberately NOT icing-shaped: the search must not
smuggle knowledge of the test anomaly in through the back door.

The validation windows are split in two: the first half drives early stopping and the
threshold as usual, the second half (and its corrupted copy) only scores trials.

Search space (SVDD family): lambda_rec, lambda_kl, nu and the learning rate on a small
grid; `budget` distinct grid points are tried in a seeded random order (random search on a
grid), the default configuration always among them.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import roc_auc_score

from wtbi_monitor.config import Settings
from wtbi_monitor.families import FAMILIES
from wtbi_monitor.logs import get_logger
from wtbi_monitor.model import Bundle, parse_member
from wtbi_monitor.model.faults import synthetic_faults
from wtbi_monitor.training.train import TrainingData, fit_member

log = get_logger(__name__)

#: The grid searched for SVDD-family members (model.* and training.* fields).
SVDD_GRID: dict[str, tuple[float, ...]] = {
    "model.lambda_rec": (0.1, 1.0),
    "model.lambda_kl": (0.01, 0.1, 1.0),
    "model.nu": (0.05, 0.1, 0.2),
    "training.learning_rate": (1e-4, 1e-3),
}
#: The grid for other neural members: the learning rate only.
DEFAULT_GRID: dict[str, tuple[float, ...]] = {"training.learning_rate": (1e-4, 3e-4, 1e-3)}


@dataclass
class TuneResult:
    """The chosen values and every trial."""

    member: str
    best: dict[str, float]
    trials: list[dict[str, Any]] = field(default_factory=list)
    space: dict[str, tuple[float, ...]] = field(default_factory=dict)
    criterion: str = "AUROC(validation normal vs synthetic faults)"

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (written into the bundle manifest)."""
        return {
            "member": self.member,
            "best": self.best,
            "criterion": self.criterion,
            "space": {k: list(v) for k, v in self.space.items()},
            "trials": self.trials,
        }


def grid_for(member: str) -> dict[str, tuple[float, ...]]:
    """The search space of a member."""
    info = FAMILIES[parse_member(member).family]
    return SVDD_GRID if info.kind == "svdd" else DEFAULT_GRID


def apply_values(settings: Settings, values: dict[str, float]) -> Settings:
    """Settings with 'section.field' values replaced."""
    sections: dict[str, dict[str, float]] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        sections.setdefault(section, {})[name] = value
    update = {
        section: getattr(settings, section).model_copy(update=fields)
        for section, fields in sections.items()
    }
    return settings.model_copy(update=update)


def _default_point(grid: dict[str, tuple[float, ...]], settings: Settings) -> dict[str, float]:
    point = {}
    for key in grid:
        section, name = key.split(".", 1)
        point[key] = float(getattr(getattr(settings, section), name))
    return point


def tune_member(
    member: str, data: TrainingData, settings: Settings, *, budget: int = 8
) -> TuneResult:
    """Random search on the member's grid, scored on held-out validation normal windows."""
    grid = grid_for(member)
    seed = settings.training.seed
    points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    order = np.random.default_rng(seed).permutation(len(points))
    default = _default_point(grid, settings)
    chosen = [default] + [points[k] for k in order if points[k] != default]
    chosen = chosen[: max(1, budget)]

    half = len(data.validation) // 2
    early = TrainingData(
        data.train, data.validation.select(np.arange(half)), data.description, data.derived
    )
    held = data.validation.select(np.arange(half, len(data.validation)))
    rng = np.random.default_rng(seed + 1)
    pick = np.sort(rng.choice(len(held), size=min(len(held), 2000), replace=False))
    held_raw = held.series.windows(pick)

    trials: list[dict[str, Any]] = []
    for values in chosen:
        t0 = time.perf_counter()
        bundle = fit_member(member, early, apply_values(settings, values))
        auroc = _fault_auroc(bundle, held_raw, seed)
        trials.append({**values, "criterion": auroc, "seconds": round(time.perf_counter() - t0, 1)})
        log.info("tuning_trial", member=member, criterion=round(auroc, 4), **values)
    best = max(trials, key=lambda t: t["criterion"])
    return TuneResult(
        member=member,
        best={k: best[k] for k in grid},
        trials=trials,
        space=grid,
    )


def _fault_auroc(bundle: Bundle, held_raw: NDArray[np.float64], seed: int) -> float:
    scaled, _ = bundle.scaler.transform(held_raw)
    faulty = synthetic_faults(scaled, seed)
    clean_scores = bundle.detector.score(scaled)
    fault_scores = bundle.detector.score(faulty)
    y = np.r_[np.zeros(clean_scores.size), np.ones(fault_scores.size)]
    return float(roc_auc_score(y, np.r_[clean_scores, fault_scores]))
