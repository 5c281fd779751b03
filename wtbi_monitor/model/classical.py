"""Classical detectors: PCA reconstruction, Isolation Forest, and the IEA Task 19 rule.

All three work on the same scaled windows (N, L, C) as the networks and save their fitted
state as plain tensors (no pickles), so a bundle of any of them loads and runs in the daemon:

* `pca`: scikit-learn PCA on flattened windows, keeping the components that explain
  `variance` of the training variance; score = mean squared reconstruction error, with
  per-channel errors for attribution.
* `iforest`: scikit-learn IsolationForest on flattened windows. The fitted trees are saved
  as arrays (split feature, threshold, children, leaf sizes) and scored here by a
  vectorised traversal that reproduces `IsolationForest.score_samples` (tested).
* `power_curve_rule`: the IEA Wind Task 19 ice-detection rule (docs/models/
  power_curve_rule.md). The reference curve (P10 and P90 of power per 0.5 m/s wind bin) is
  learnt from training rows above +3 C; a row is "iced" when ambient temperature is below
  0 C and power is below P10 (blade icing, also stops); above P90 (iced anemometer) counts
  too with `overproduction=True`, off by default because cold dense air lifts ice-free
  power above the warm curve. Score = share of a window's rows that are iced. The rule's
  30-minute persistence is left to the alarm state machine's on-delay, as for every other
  member.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Self

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest

from wtbi_monitor.errors import ConfigurationError, TrainingError
from wtbi_monitor.model.detector import F32, F64, Detector, ScoreOutput
from wtbi_monitor.model.trainer import FitConfig, ProgressCallback

I64 = NDArray[np.int64]
EULER_GAMMA = 0.5772156649015329


def _flat(windows: F32) -> F32:
    return windows.reshape(windows.shape[0], -1)


class _ClassicalDetector(Detector):
    """Common bits: no torch module, hyperparameters carry the window shape."""

    kind: ClassVar[str] = ""

    def __init__(self, window_length: int, n_channels: int, family: str) -> None:
        super().__init__()
        self.window_length = window_length
        self.n_channels = n_channels
        self.family = family

    def _base_hyper(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "window_length": self.window_length,
            "n_channels": self.n_channels,
        }

    @classmethod
    def from_hyperparameters(cls, hyper: dict[str, Any]) -> Self:
        """Rebuild an unfitted detector (the keys are the constructor's arguments)."""
        return cls(**hyper)


# ---------------------------------------------------------------------------------- PCA


class PCADetector(_ClassicalDetector):
    """Reconstruction error of a linear subspace fitted to flattened normal windows."""

    kind = "pca"

    def __init__(
        self, window_length: int, n_channels: int, *, family: str = "pca", variance: float = 0.95
    ) -> None:
        super().__init__(window_length, n_channels, family)
        if not 0 < variance <= 1:
            msg = f"pca variance must be in (0, 1], got {variance}"
            raise ConfigurationError(msg)
        self.variance = variance
        self.mean_: F64 = np.empty(0)
        self.components_: F64 = np.empty((0, 0))

    @property
    def has_decoder(self) -> bool:
        """The projection back to window space gives per-channel errors."""
        return True

    def hyperparameters(self) -> dict[str, Any]:
        """Window shape and explained-variance target."""
        return {**self._base_hyper(), "variance": self.variance}

    def _fit(
        self,
        train: F32,
        validation: F32 | None,
        config: FitConfig,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        del validation, progress
        pca = PCA(n_components=self.variance, svd_solver="full", random_state=config.seed)
        pca.fit(_flat(train).astype(np.float64))
        self.mean_ = pca.mean_
        self.components_ = pca.components_
        return {
            "train_windows": int(train.shape[0]),
            "components": int(pca.n_components_),
            "explained_variance": float(pca.explained_variance_ratio_.sum()),
        }

    def _score(
        self, windows: F32, *, with_channels: bool, channels_at: float = -math.inf
    ) -> ScoreOutput:
        del channels_at
        x = _flat(windows).astype(np.float64) - self.mean_
        residual = x - (x @ self.components_.T) @ self.components_
        sq = residual.reshape(windows.shape) ** 2
        score: F64 = sq.mean(axis=(1, 2))
        return ScoreOutput(score, sq.mean(axis=1) if with_channels else None)

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "mean": torch.from_numpy(np.ascontiguousarray(self.mean_)),
            "components": torch.from_numpy(np.ascontiguousarray(self.components_)),
        }

    def _load_model_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.mean_ = tensors["mean"].numpy().astype(np.float64)
        self.components_ = tensors["components"].numpy().astype(np.float64)


# ------------------------------------------------------------------------ Isolation Forest


def average_path_length(n: NDArray[np.float64]) -> NDArray[np.float64]:
    """c(n): the mean path length of an unsuccessful BST search (Liu et al. 2008)."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + EULER_GAMMA) - 2.0 * (n[big] - 1.0) / n[big]
    return out


class IsolationForestDetector(_ClassicalDetector):
    """Isolation Forest on flattened windows; score = 2^(-E[h(x)] / c(max_samples)).

    Args:
        trees: number of isolation trees.
        max_samples: sub-sample size per tree (Liu et al.: 256).
    """

    kind = "iforest"

    def __init__(
        self,
        window_length: int,
        n_channels: int,
        *,
        family: str = "iforest",
        trees: int = 100,
        max_samples: int = 256,
    ) -> None:
        super().__init__(window_length, n_channels, family)
        self.trees = trees
        self.max_samples = max_samples
        # Forest as padded arrays (trees, nodes): split feature (-1 = leaf), threshold,
        # children, and each node's depth + c(leaf size) (used at leaves only).
        self.feature_: I64 = np.empty((0, 0), dtype=np.int64)
        self.threshold_split_: F64 = np.empty((0, 0))
        self.left_: I64 = np.empty((0, 0), dtype=np.int64)
        self.right_: I64 = np.empty((0, 0), dtype=np.int64)
        self.leaf_value_: F64 = np.empty((0, 0))
        self.samples_per_tree_: int = 0

    def hyperparameters(self) -> dict[str, Any]:
        """Window shape and forest size."""
        return {**self._base_hyper(), "trees": self.trees, "max_samples": self.max_samples}

    def _fit(
        self,
        train: F32,
        validation: F32 | None,
        config: FitConfig,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        del validation, progress
        forest = IsolationForest(
            n_estimators=self.trees,
            max_samples=min(self.max_samples, train.shape[0]),
            random_state=config.seed,
        ).fit(_flat(train))
        self.import_forest(forest)
        return {"train_windows": int(train.shape[0]), "trees": self.trees}

    def import_forest(self, forest: IsolationForest) -> None:
        """Copy a fitted scikit-learn forest into plain arrays."""
        nodes = max(e.tree_.node_count for e in forest.estimators_)
        shape = (len(forest.estimators_), nodes)
        self.feature_ = np.full(shape, -1, dtype=np.int64)
        self.threshold_split_ = np.zeros(shape)
        self.left_ = np.zeros(shape, dtype=np.int64)
        self.right_ = np.zeros(shape, dtype=np.int64)
        self.leaf_value_ = np.zeros(shape)
        for k, (est, feats) in enumerate(
            zip(forest.estimators_, forest.estimators_features_, strict=True)
        ):
            t = est.tree_
            n = t.node_count
            leaf = t.children_left[:n] == -1
            feature = np.where(leaf, -1, np.asarray(feats)[np.maximum(t.feature[:n], 0)])
            self.feature_[k, :n] = feature
            self.threshold_split_[k, :n] = t.threshold[:n]
            self.left_[k, :n] = np.where(leaf, 0, t.children_left[:n])
            self.right_[k, :n] = np.where(leaf, 0, t.children_right[:n])
            depth = np.zeros(n)
            for node in range(n):  # children always come after their parent
                if not leaf[node]:
                    depth[t.children_left[node]] = depth[node] + 1
                    depth[t.children_right[node]] = depth[node] + 1
            sizes = t.n_node_samples[:n].astype(np.float64)
            self.leaf_value_[k, :n] = depth + average_path_length(sizes)
        self.samples_per_tree_ = int(forest.max_samples_)

    def _score(
        self, windows: F32, *, with_channels: bool, channels_at: float = -math.inf
    ) -> ScoreOutput:
        del with_channels, channels_at
        x = _flat(windows)
        rows = np.arange(x.shape[0])
        total = np.zeros(x.shape[0])
        for k in range(self.feature_.shape[0]):
            node = np.zeros(x.shape[0], dtype=np.int64)
            while True:
                feature = self.feature_[k, node]
                inner = feature >= 0
                if not inner.any():
                    break
                value = x[rows, np.maximum(feature, 0)]
                go_left = value <= self.threshold_split_[k, node]
                nxt = np.where(go_left, self.left_[k, node], self.right_[k, node])
                node = np.where(inner, nxt, node)
            total += self.leaf_value_[k, node]
        mean_depth = total / self.feature_.shape[0]
        c = float(average_path_length(np.array([self.samples_per_tree_], dtype=np.float64))[0])
        score: F64 = np.power(2.0, -mean_depth / c)
        return ScoreOutput(score, None)

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "feature": torch.from_numpy(self.feature_),
            "threshold": torch.from_numpy(self.threshold_split_),
            "left": torch.from_numpy(self.left_),
            "right": torch.from_numpy(self.right_),
            "leaf_value": torch.from_numpy(self.leaf_value_),
            "samples_per_tree": torch.tensor(self.samples_per_tree_, dtype=torch.int64),
        }

    def _load_model_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.feature_ = tensors["feature"].numpy().astype(np.int64)
        self.threshold_split_ = tensors["threshold"].numpy().astype(np.float64)
        self.left_ = tensors["left"].numpy().astype(np.int64)
        self.right_ = tensors["right"].numpy().astype(np.int64)
        self.leaf_value_ = tensors["leaf_value"].numpy().astype(np.float64)
        self.samples_per_tree_ = int(tensors["samples_per_tree"])


# ------------------------------------------------------------------- IEA Task 19 rule

RULE_CHANNELS = ("wind_speed", "power", "environment_tmp")


class PowerCurveRuleDetector(_ClassicalDetector):
    """IEA Wind Task 19 power-curve rule on physical-unit channels.

    Args:
        bin_width: wind-speed bin of the reference curve (m/s).
        reference_above_c: reference rows need ambient temperature above this (C).
        freezing_c: rows count as possibly iced below this temperature (C).
        min_bin_rows: bins with fewer reference rows are not judged.
        production_share: reference rows need power above this share of rated power
            (rated = the 99.9th percentile of training power); the same share defines a stop.
        overproduction: also flag power above P90 (IEA Task 19's iced-anemometer case). Off
            by default: cold air is denser, so ice-free cold operation sits above the warm
            curve far more often (11 % of cold rows on real 10-minute SCADA) than iced rows
            do (3 %); counting it made the rule raise in every cold spell (docs/deviations.md).
    """

    kind = "power_curve_rule"

    def __init__(
        self,
        window_length: int,
        n_channels: int,
        *,
        family: str = "power_curve_rule",
        bin_width: float = 0.5,
        reference_above_c: float = 3.0,
        freezing_c: float = 0.0,
        min_bin_rows: int = 20,
        production_share: float = 0.005,
        overproduction: bool = False,
        channel_index: dict[str, int] | None = None,
        minimum: list[float] | None = None,
        maximum: list[float] | None = None,
    ) -> None:
        super().__init__(window_length, n_channels, family)
        self.bin_width = bin_width
        self.reference_above_c = reference_above_c
        self.freezing_c = freezing_c
        self.min_bin_rows = min_bin_rows
        self.production_share = production_share
        self.overproduction = overproduction
        self.channel_index = dict(channel_index or {})
        self.minimum = list(minimum or [])
        self.maximum = list(maximum or [])
        self.p10_: F64 = np.empty(0)
        self.p90_: F64 = np.empty(0)
        self.rated_kw_: float = math.nan

    def bind_scaler(self, minimum: F64, maximum: F64, channels: tuple[str, ...]) -> None:
        """Remember where the rule's channels are and how to undo their scaling."""
        missing = [c for c in RULE_CHANNELS if c not in channels]
        if missing:
            msg = (
                f"power_curve_rule needs the channels {list(RULE_CHANNELS)} in physical units; "
                f"missing: {missing}"
            )
            raise ConfigurationError(msg)
        self.channel_index = {c: channels.index(c) for c in RULE_CHANNELS}
        self.minimum = [float(minimum[self.channel_index[c]]) for c in RULE_CHANNELS]
        self.maximum = [float(maximum[self.channel_index[c]]) for c in RULE_CHANNELS]

    def hyperparameters(self) -> dict[str, Any]:
        """Rule settings plus the channel positions and their unscaling."""
        return {
            **self._base_hyper(),
            "bin_width": self.bin_width,
            "reference_above_c": self.reference_above_c,
            "freezing_c": self.freezing_c,
            "min_bin_rows": self.min_bin_rows,
            "production_share": self.production_share,
            "overproduction": self.overproduction,
            "channel_index": self.channel_index,
            "minimum": self.minimum,
            "maximum": self.maximum,
        }

    def physical(self, windows: F32) -> tuple[F64, F64, F64]:
        """Wind speed (m/s), power (kW) and temperature (C) of every row, undoing the scaler."""
        if not self.channel_index:
            msg = "power_curve_rule has no channel mapping: fit it through the trainer"
            raise ConfigurationError(msg)
        out = []
        for k, name in enumerate(RULE_CHANNELS):
            lo, hi = self.minimum[k], self.maximum[k]
            span = hi - lo if hi > lo else 1.0
            out.append(windows[..., self.channel_index[name]].astype(np.float64) * span + lo)
        return out[0], out[1], out[2]

    def _bins(self, wind: F64) -> I64:
        idx: I64 = np.floor(np.maximum(wind, 0.0) / self.bin_width).astype(np.int64)
        return np.minimum(idx, self.p10_.size - 1)

    def _fit(
        self,
        train: F32,
        validation: F32 | None,
        config: FitConfig,
        progress: ProgressCallback | None,
    ) -> dict[str, Any]:
        del validation, config, progress
        # Every row of every window: overlapping windows repeat rows, which weights them
        # about equally and keeps the most data when the trainer has subsampled windows.
        wind, power, temp = (a.ravel() for a in self.physical(train))
        self.rated_kw_ = float(np.quantile(power, 0.999))
        producing = power > self.production_share * self.rated_kw_
        warm = (temp > self.reference_above_c) & producing
        if producing.sum() < self.min_bin_rows:
            msg = (
                f"power_curve_rule: only {int(producing.sum())} training rows in production; "
                "the reference curve needs more data"
            )
            raise TrainingError(msg)
        n_bins = int(np.ceil(max(float(wind.max()), self.bin_width) / self.bin_width)) + 1
        self.p10_ = np.full(n_bins, np.nan)
        self.p90_ = np.full(n_bins, np.nan)
        bins = np.minimum(np.floor(np.maximum(wind, 0) / self.bin_width).astype(int), n_bins - 1)
        fallback = 0
        for b in range(n_bins):
            in_bin = bins == b
            rows = power[warm & in_bin]
            if rows.size < self.min_bin_rows:
                # Too little warm data in this bin (a winter-only history): IEA Task 19's
                # warm reference cannot be built, so the bin comes from all (ice-free)
                # training production. Cold air yields more power, so it sits a little
                # high (conservative for a deficit rule).
                rows = power[producing & in_bin]
                fallback += int(rows.size >= self.min_bin_rows)
            if rows.size >= self.min_bin_rows:
                self.p10_[b], self.p90_[b] = np.quantile(rows, [0.1, 0.9])
        basis = f"production above {self.reference_above_c:g} C"
        if fallback:
            basis += f"; all production in {fallback} bins with too little warm data"
        reference = warm
        return {
            "train_windows": int(train.shape[0]),
            "reference_rows": int(reference.sum()),
            "reference_basis": basis,
            "judged_bins": int(np.isfinite(self.p10_).sum()),
            "rated_kw": self.rated_kw_,
        }

    def iced_rows(self, windows: F32) -> NDArray[np.bool_]:
        """(N, L) True where the rule's icing condition holds."""
        wind, power, temp = self.physical(windows)
        b = self._bins(wind)
        p10, p90 = self.p10_[b], self.p90_[b]
        judged = np.isfinite(p10)
        cold = temp < self.freezing_c
        below = power < np.where(judged, p10, -np.inf)
        flagged = below
        if self.overproduction:
            flagged = below | (power > np.where(judged, p90, np.inf))
        iced: NDArray[np.bool_] = cold & judged & flagged
        return iced

    def _score(
        self, windows: F32, *, with_channels: bool, channels_at: float = -math.inf
    ) -> ScoreOutput:
        del with_channels, channels_at
        score: F64 = self.iced_rows(windows).mean(axis=1, dtype=np.float64)
        return ScoreOutput(score, None)

    def cap_threshold(self, threshold: float) -> float:
        """The usual quantile threshold, capped so that a fully iced window still alarms.

        The score is a share of rows (at most 1). When more than `target_fpr` of validation
        normal windows are fully iced, the quantile is 1 and `score > threshold` could never
        hold; the threshold then becomes 1 - 0.5 / L (every row of the window iced), and the
        validation false-positive rate is above the target (the manifest reports it).
        """
        return min(threshold, 1.0 - 0.5 / self.window_length)

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        return {
            "p10": torch.from_numpy(np.ascontiguousarray(self.p10_)),
            "p90": torch.from_numpy(np.ascontiguousarray(self.p90_)),
            "rated_kw": torch.tensor(self.rated_kw_, dtype=torch.float64),
        }

    def _load_model_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.p10_ = tensors["p10"].numpy().astype(np.float64)
        self.p90_ = tensors["p90"].numpy().astype(np.float64)
        self.rated_kw_ = float(tensors["rated_kw"])


def rule_to_json(rule: PowerCurveRuleDetector) -> dict[str, Any]:
    """A fitted rule as JSON (the bundle manifest's "rule": alarm evidence beside a model)."""
    return {
        "hyperparameters": rule.hyperparameters(),
        "p10": [None if not np.isfinite(v) else float(v) for v in rule.p10_],
        "p90": [None if not np.isfinite(v) else float(v) for v in rule.p90_],
        "rated_kw": rule.rated_kw_,
    }


def rule_from_json(doc: dict[str, Any]) -> PowerCurveRuleDetector:
    """Inverse of `rule_to_json`: a fitted rule."""
    rule = PowerCurveRuleDetector.from_hyperparameters(doc["hyperparameters"])
    rule.p10_ = np.array([np.nan if v is None else v for v in doc["p10"]], dtype=np.float64)
    rule.p90_ = np.array([np.nan if v is None else v for v in doc["p90"]], dtype=np.float64)
    rule.rated_kw_ = float(doc["rated_kw"])
    rule.fitted_ = True
    return rule
