"""simulate -> train -> evaluate -> score through the command line, on a tiny farm."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from wtbi_monitor.cli import main
from wtbi_monitor.config import Settings
from wtbi_monitor.data.wtbi import TurbineFrame, read_farm, runs
from wtbi_monitor.domain import Label

TINY = """
[model]
preset = "small"
[training]
epochs = 2
pretrain_epochs = 1
warmup_epochs = 1
batch_size = 64
learning_rate = 1e-3
max_train_windows = 600
max_validation_windows = 600
[evaluation]
max_test_windows = 3000
timeline_turbines = 1
[logging]
level = "warning"
"""


@pytest.fixture(scope="module")
def farm(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("farm")
    # seed 16, 4 days from 10 December: icing on both turbines in the training half AND in
    # the time-ordered test tail (days 2.6-4)
    code = main(
        [
            "simulate",
            "--out",
            str(out),
            "--turbines",
            "2",
            "--days",
            "4",
            "--start",
            "2015-12-10T00:00:00",
            "--icing-frequency",
            "2",
            "--seed",
            "16",
        ]
    )
    assert code == 0
    return out


def icing_runs_after(frames: list[TurbineFrame], start_ms: int) -> list[tuple[str, int, int]]:
    """(turbine, first, last reading time) of each run of icing rows from `start_ms` on."""
    out = []
    for f in frames:
        t = f.times_ms[f.times_ms >= start_ms]
        icing = f.labels[f.times_ms >= start_ms] == Label.ICING
        out += [(f.turbine_id, int(t[a]), int(t[b])) for a, b in runs(icing)]
    return sorted(out)


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY)
    return path


def test_train_evaluate_score(farm, config, tmp_path, capsys):
    bundle = tmp_path / "models" / "iae"
    args = ["--config", str(config)]
    assert (
        main(
            [
                *args,
                "train",
                "--data",
                str(farm),
                "--member",
                "iae_lstm_kl:soft",
                "--out",
                str(bundle),
                "--tune",
                "2",
            ]
        )
        == 0
    )
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["member"] == "iae_lstm_kl:soft"
    # the search's chosen values are the ones the bundle was trained with
    chosen = manifest["tuning"]["best"]
    assert len(manifest["tuning"]["trials"]) == 2
    assert manifest["hyperparameters"]["nu"] == chosen["model.nu"]
    assert manifest["hyperparameters"]["lambda_kl"] == chosen["model.lambda_kl"]
    assert manifest["training"]["settings"]["learning_rate"] == chosen["training.learning_rate"]
    assert manifest["preprocessing"]["window_length"] == 26
    # 26 channels plus the derived power residual and pitch asymmetry
    assert manifest["preprocessing"]["derived"]["names"] == ["power_residual", "pitch_asymmetry"]
    assert len(manifest["scaler"]["minimum"]) == 28
    coverage = manifest["training"]["coverage"]
    assert coverage["turbines"] == ["01", "02"]
    assert coverage["temperature_c"]["min"] < coverage["temperature_c"]["max"]
    assert "trained on 2 turbines" in capsys.readouterr().out

    report_dir = tmp_path / "report"
    assert (
        main(
            [
                *args,
                "evaluate",
                "--data",
                str(farm),
                "--members",
                "cae",
                "--bundle",
                str(bundle),
                "--out",
                str(report_dir),
            ]
        )
        == 0
    )
    results = json.loads((report_dir / "results.json").read_text())
    assert set(results["protocols"]) == {"time_ordered", "paper"}
    ordered = results["protocols"]["time_ordered"]
    described = ordered["description"]
    timed = ordered["members"]
    assert [m["member"] for m in timed] == ["cae", "iae_lstm_kl:soft"]
    for m in timed:  # the same evaluable test windows for every member, both classes
        w = m["window"]
        assert w["windows"] == described["test_windows_evaluable"]
        assert w["icing_windows"] == described["test_icing_windows"]
        assert 0 < w["icing_windows"] < w["windows"]
        assert w["auroc"] > 0.5  # better than chance
        assert w["auprc"] > w["icing_windows"] / w["windows"]  # above the icing share
    paper = results["protocols"]["paper"]
    assert paper["description"]["test_windows"] == 3000  # max_test_windows
    for m in paper["members"]:
        assert m["window"]["windows"] == 3000
        assert m["window"]["auroc"] > 0.5
    # Event metrics: the episodes are the test period's runs of icing rows in the input
    # files (both turbines ice in it), and the counts are those of the listed alarms.
    frames = read_farm(farm, Settings().preprocessing.channels)
    episodes = icing_runs_after(frames, described["split_ms"]["test_start"])
    assert {turbine for turbine, _, _ in episodes} == {"01", "02"}
    for m in timed:
        e, alarms = m["events"], m["alarms"]
        assert sorted((d["turbine_id"], d["start_ms"], d["end_ms"]) for d in m["episodes"]) == (
            episodes
        )
        assert e["episodes"] == len(episodes)
        assert e["episodes_detected"] == sum(d["detected"] for d in m["episodes"])
        assert e["alarms"] == len(alarms)
        assert e["false_alarms"] == sum(a["verdict"] == "false" for a in alarms)
        assert e["false_alarms_per_turbine_day"] == pytest.approx(
            e["false_alarms"] / e["normal_turbine_days"], rel=1e-3
        )
        by_id = {a["alarm_id"]: a for a in alarms}
        for d in m["episodes"]:  # detected by alarms of its turbine that overlap it
            assert d["detected"] == bool(d.get("alarm_ids"))
            for alarm_id in d.get("alarm_ids", []):
                a = by_id[alarm_id]
                assert a["turbine_id"] == d["turbine_id"]
                assert a["start_ms"] <= d["end_ms"]
                assert a["end_ms"] >= d["start_ms"]
                assert a["verdict"] == "true"
        fraction = e["alarm_time_icing_fraction"]  # alarm time during icing: true alarms
        assert (fraction is not None and fraction > 0) == any(
            a["verdict"] == "true" for a in alarms
        )
    assert len({m["events"]["normal_turbine_days"] for m in timed}) == 1
    single = ordered["single_channel"]
    assert set(single) == set(Settings().evaluation.single_channels)
    assert single["power"]["direction"] == "low"  # ice costs power
    assert single["power_residual"]["direction"] == "low"
    report = (report_dir / "report.md").read_text()
    assert "Time-ordered protocol" in report
    assert "LEAKY" in report
    assert (report_dir / "roc_time_ordered.png").stat().st_size > 1000
    assert (report_dir / "timeline_cae.png").exists()
    assert "report:" in capsys.readouterr().out

    scores = tmp_path / "scores.csv"
    assert (
        main([*args, "score", "--bundle", str(bundle), "--data", str(farm), "--out", str(scores)])
        == 0
    )
    table = pd.read_csv(scores)
    table["turbine_id"] = table["turbine_id"].astype(str).str.zfill(2)
    printed = re.search(
        r"scored ([\d,]+) windows with (\S+); ([\d,]+) above the threshold",
        capsys.readouterr().out,
    )
    assert printed is not None
    assert int(printed[1].replace(",", "")) == len(table)
    assert int(printed[3].replace(",", "")) == int(table["above_threshold"].sum())
    # the bundle's version, the same one the evaluation reported for it
    version = f"{manifest['name']}@{manifest['weights_sha256'][:12]}"
    assert printed[2] == version == timed[1]["bundle_version"]
    # one row per window, at the time of a reading of its turbine, in time order
    assert set(table["turbine_id"]) == {frame.turbine_id for frame in frames}
    for frame in frames:
        times = table.loc[table["turbine_id"] == frame.turbine_id, "time_ms"].to_numpy()
        assert times.size > 0
        assert np.all(np.diff(times) > 0)
        assert np.isin(times, frame.times_ms).all()
    # each turbine's own threshold (per-turbine calibration), one per turbine
    per_turbine = table.groupby("turbine_id")["threshold"]
    assert (per_turbine.min() == per_turbine.max()).all()
    assert np.isfinite(table["threshold"]).all()
    assert (table["above_threshold"] == (table["score"] > table["threshold"])).all()
    assert table["tail_probability"].between(0, 1).all()
    assert {"top_channel_1", "top_channel_2", "top_channel_3"} <= set(table.columns)


def test_bad_input_exits_2_with_one_clear_line(tmp_path, capsys):
    (tmp_path / "01").mkdir()
    (tmp_path / "01" / "01_data.csv").write_text("time,power\n2015-11-01 00:00:00,1\n")
    assert main(["train", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "missing column(s)" in err
    assert "Traceback" not in err


def test_module_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "wtbi_monitor", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("wtbi-monitor ")
