"""The family benchmark and the hyperparameter search, on a tiny farm with cheap members."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_SETTINGS
from wtbi_monitor.cli import main
from wtbi_monitor.config import Settings
from wtbi_monitor.data.synthetic import read_episodes
from wtbi_monitor.data.wtbi import TurbineFrame, read_farm, runs
from wtbi_monitor.domain import Label
from wtbi_monitor.evaluation.benchmark import (
    BenchmarkRun,
    Cache,
    contaminated_data,
    plan,
    run_benchmark,
)
from wtbi_monitor.evaluation.protocols import time_ordered_case
from wtbi_monitor.evaluation.results_doc import NOT_RUN, render
from wtbi_monitor.model.faults import synthetic_faults
from wtbi_monitor.training.splits import time_split
from wtbi_monitor.training.train import fit_member
from wtbi_monitor.training.tuning import tune_member

BENCH = {
    **TINY_SETTINGS,
    "evaluation": {"max_test_windows": 2000},
    "benchmark": {
        "seeds": [0, 1],
        "members": ["pca", "power_curve_rule", "iforest"],
        "ablations": [],
        "ablation_seeds": [0],
        "contamination_levels": [0.0, 0.2],
        "contamination_members": ["pca"],
        "contamination_seeds": [0],
        "tune_members": [],
        "test_stride": 4,
        "timeline_members": ["pca"],
    },
}


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("farm")
    assert (
        main(
            [
                *("simulate", "--out", str(out), "--turbines", "2", "--days", "4"),
                *("--start", "2015-12-10T00:00:00", "--icing-frequency", "2", "--seed", "16"),
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def frames(farm: Path) -> list[TurbineFrame]:
    return read_farm(farm, Settings().preprocessing.channels)


def test_benchmark_fills_every_row_and_resumes_from_its_cache(farm, frames, tmp_path):
    settings = Settings(**BENCH)  # type: ignore[arg-type]
    cache = Cache(tmp_path / "cells.jsonl")
    run = BenchmarkRun(frames, read_episodes(farm / "episodes.json"), settings, cache, tmp_path)
    cells = plan(settings)
    # 3 members x 2 seeds time-ordered + 3 members x 1 paper seed + 2 contamination levels
    assert len(cells) == 11
    assert sum(c.protocol == "paper" for c in cells) == 3
    records = list(run_benchmark(run, cells))
    assert len(records) == len(cells)
    assert {r["key"] for r in records} == {c.key for c in cells}
    by_key = {r["key"]: r for r in records}
    # every test set holds both classes: every cell has its window metrics; event metrics
    # for every cell but the paper protocol's (no time order there)
    for r in records:
        assert r["auroc"] > 0.5, r["key"]
        assert r["auprc"] is not None, r["key"]
        assert (r["events"] is None) == (r["protocol"] == "paper"), r["key"]
    # one test period for every time-ordered and contamination cell: its runs of icing
    # rows in the input are every cell's episodes
    ev = settings.evaluation
    split = time_split(
        frames,
        ev.train_fraction,
        ev.validation_fraction,
        validation_start=ev.validation_start,
        test_start=ev.test_start,
    )
    episodes = 0
    for f in frames:
        episodes += len(runs(f.labels[f.times_ms >= split.test_start_ms] == Label.ICING))
    assert episodes >= 2
    assert {r["events"]["episodes"] for r in records if r["events"]} == {episodes}
    # contamination 0 is the plain time-ordered run of the same member and seed
    clean = by_key["contamination|pca|0|0.00"]
    assert clean["auroc"] == by_key["time_ordered|pca|0|0.00"]["auroc"]
    assert clean["contamination_actual"] == 0.0
    assert by_key["contamination|pca|0|0.20"]["contamination_actual"] == pytest.approx(
        0.2, abs=0.01
    )
    # attribution for the first seed's time-ordered cell of a member that decodes channels
    # (PCA) only: none for a member that does not, none for another seed
    pca0 = cache.records["time_ordered|pca|0|0.00"]
    attribution = pca0["attribution"]
    assert attribution["windows"] > 0
    assert 0.0 < attribution["chance"] < 1.0
    assert attribution["top1_hit_rate"] <= attribution["top3_hit_rate"]
    assert attribution["top3_hit_rate"] > attribution["chance"]
    assert by_key["time_ordered|iforest|0|0.00"]["attribution"] is None
    assert "attribution" not in by_key["time_ordered|pca|1|0.00"]
    # resuming runs nothing
    again = Cache(tmp_path / "cells.jsonl")
    assert len(again.records) == len(cells)
    run2 = BenchmarkRun(frames, [], settings, again, tmp_path)
    assert list(run_benchmark(run2, cells)) == []

    out = render(again, settings, tmp_path / "results.md", "test")
    text = out.read_text()
    assert NOT_RUN not in text
    assert "Paper protocol (LEAKY" in text
    assert "| pca |" in text
    assert (tmp_path / "results" / "contamination.png").is_file()
    assert (tmp_path / "results" / "roc_time_ordered.png").is_file()


def test_seed_members_run_every_seed_and_the_others_the_first_only():
    bench = {**BENCH["benchmark"], "seed_members": ["pca"], "seeds": [0, 1, 2]}
    settings = Settings(**{**BENCH, "benchmark": bench})  # type: ignore[arg-type]
    timed = [c for c in plan(settings) if c.protocol == "time_ordered"]
    assert sorted(c.seed for c in timed if c.member == "pca") == [0, 1, 2]
    assert [c.seed for c in timed if c.member == "iforest"] == [0]


def test_a_partial_cache_is_marked_not_run(tmp_path):
    settings = Settings(**BENCH)  # type: ignore[arg-type]
    text = render(Cache(tmp_path / "none.jsonl"), settings, tmp_path / "r.md", "test").read_text()
    assert NOT_RUN in text


def test_contaminated_training_has_the_requested_icing_share(frames):
    settings = Settings(**BENCH)  # type: ignore[arg-type]
    case = time_ordered_case(frames, settings, stride=4)
    data = contaminated_data(case, settings, 0.2, seed=0)
    share = float(np.mean(data.train.label == Label.ICING))
    assert share == pytest.approx(0.2, abs=0.01)
    assert np.all(data.validation.label == Label.NORMAL)
    clean = contaminated_data(case, settings, 0.0, seed=0)
    assert np.all(clean.train.label == Label.NORMAL)


def test_synthetic_faults_change_three_channels_and_stay_in_range():
    x = np.random.default_rng(0).random((50, 26, 26)).astype(np.float32)
    y = synthetic_faults(x, seed=1)
    changed = np.abs(y - x).max(axis=1) > 0
    assert np.all(changed.sum(axis=1) <= 3)
    assert changed.sum(axis=1).mean() > 2
    assert y.min() >= 0.0
    assert y.max() <= 1.0


def _relabel_test_period(frames: list[TurbineFrame], start_ms: int) -> list[TurbineFrame]:
    """Every test-period row labelled ICING (what a leak would react to)."""
    out = []
    for f in frames:
        labels = f.labels.copy()
        labels[f.times_ms >= start_ms] = Label.ICING
        out.append(replace(f, labels=labels))
    return out


def test_hyperparameter_search_never_reads_test_labels(frames):
    settings = Settings(**BENCH)  # type: ignore[arg-type]
    case = time_ordered_case(frames, settings)
    first = tune_member("iae_lstm_kl:soft", case.training_data(settings), settings, budget=2)
    flipped = _relabel_test_period(frames, case.split.test_start_ms)
    case2 = time_ordered_case(flipped, settings)
    assert np.all(case2.test.label[case2.test.evaluable] == Label.ICING)
    second = tune_member("iae_lstm_kl:soft", case2.training_data(settings), settings, budget=2)
    assert [t["criterion"] for t in first.trials] == [t["criterion"] for t in second.trials]
    assert first.best == second.best
    # the default configuration is always one of the trials; the best is the top criterion
    assert first.trials[0]["model.lambda_kl"] == settings.model.lambda_kl
    assert max(t["criterion"] for t in first.trials) == next(
        t["criterion"] for t in first.trials if all(t[k] == v for k, v in first.best.items())
    )
    # the chosen values travel into the bundle manifest
    bundle = fit_member(
        "iae_lstm_kl:soft", case.training_data(settings), settings, tuning=first.to_json()
    )
    assert bundle.manifest.tuning is not None
    assert bundle.manifest.tuning.best == first.best
